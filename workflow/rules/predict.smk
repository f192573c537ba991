# Stage 3: every replicate on validation and test, and the per-subject replicate mean.
# On a GPU: 3 networks over thousands of full-resolution volumes take hours on CPUs, minutes on
# a GPU. Predictions are grouped (group-components in the profile) into few SLURM jobs.


rule predict_brain_age:
    input:
        weights=network_weights(),
        caches=[paths.cache(split="predict")],
        infos=[paths.cache_info(split="predict")],
    output:
        predictions=paths.predictions(),
    log:
        paths.log("predict_brain_age", "{contrast}", "{sex}"),
    benchmark:
        paths.benchmark("predict_brain_age", "{contrast}", "{sex}")
    group:
        "predict"
    conda:
        "../envs/agemapper.yaml"
    threads: 1
    resources:
        gpu=1,
        mem_mb=per_attempt(8000),
        runtime=per_attempt(60),
    script:
        "../scripts/predict.py"
