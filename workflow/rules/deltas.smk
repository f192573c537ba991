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
        # apply mode fits on the cohort's calibration subjects: warn when they are few
        warn_under=planning.MIN_CALIBRATION if APPLY else None,
    script:
        "../scripts/correct_deltas.py"
