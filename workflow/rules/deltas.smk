# Stage 4: brain-age deltas, bias-corrected with a fit on validation applied to test.


localrules:
    correct_deltas,


rule correct_deltas:
    input:
        unpack(lambda wildcards: delta_inputs()),
    output:
        deltas=paths.DELTAS,
        metrics=paths.DELTA_METRICS,
        corrections=paths.corrections(),
    log:
        paths.log("correct_deltas"),
    conda:
        "../envs/agemapper.yaml"
    params:
        deltas=config["deltas"],
    script:
        "../scripts/correct_deltas.py"
