# Synthetic cohort only: how well the run recovered the ground truth.
if SYNTHETIC:

    localrules:
        evaluate_synthetic,

    rule evaluate_synthetic:
        input:
            deltas=paths.DELTAS,
            metrics=paths.DELTA_METRICS,
            significant=paths.SIGNIFICANT,
            latent_deltas=truth_file("latent_deltas.tsv"),
            planted=truth_file("planted.tsv"),
        output:
            report=paths.EVALUATION,
            table=paths.EVALUATION_TABLE,
            page=report(
                paths.EVALUATION_PAGE,
                caption="../report/evaluation.rst",
                category="5. Synthetic cohort (demo)",
                labels={"result": "the results against the ground truth"},
            ),
        log:
            paths.log("evaluate_synthetic"),
        conda:
            "../envs/agemapper.yaml"
        script:
            "../scripts/evaluate_synthetic.py"
