# Stage 4: brain-age deltas, bias-corrected with a fit on validation applied to test.


localrules:
    correct_deltas,


rule correct_deltas:
    input:
        predictions=all_predictions(),
    output:
        deltas=paths.DELTAS,
        metrics=paths.DELTA_METRICS,
        plot=paths.DELTA_PLOT,
    log:
        paths.log("correct_deltas"),
    conda:
        "../envs/agemapper.yaml"
    params:
        deltas=config["deltas"],
    script:
        "../scripts/correct_deltas.py"
