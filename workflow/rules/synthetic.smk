# The embedded synthetic cohort: UK Biobank layout, known ground truth.
if SYNTHETIC:

    rule generate_cohort:
        input:
            splits=SYNTHETIC["splits"],
            contrasts=config["contrasts_table"],
        output:
            subjects=COHORT["subjects"],
            nidps=COHORT["nidps"],
            confounds=COHORT["confounds"],
            latent_deltas=truth_file("latent_deltas.tsv"),
            planted=truth_file("planted.tsv"),
            latent_variables=truth_file("latent_variables.tsv"),
            summary=truth_file("cohort.json"),
        log:
            paths.log("generate_cohort"),
        benchmark:
            paths.benchmark("generate_cohort")
        conda:
            "../envs/agemapper.yaml"
        threads: 4
        resources:
            mem_mb=per_attempt(8000),
            runtime=per_attempt(60),
        params:
            synthetic=SYNTHETIC,
            contrasts=CONTRASTS,
            data_directory=COHORT["data_directory"],
        script:
            "../scripts/generate_cohort.py"
