# Stage 3: every replicate on validation and test, and the per-subject replicate mean.


rule predict_brain_age:
    input:
        weights=network_weights(),
        caches=[paths.cache(split=s) for s in PREDICT_SPLITS],
        infos=[paths.cache_info(split=s) for s in PREDICT_SPLITS],
    output:
        predictions=paths.predictions(),
    log:
        paths.log("predict_brain_age", "{contrast}", "{sex}"),
    benchmark:
        paths.benchmark("predict_brain_age", "{contrast}", "{sex}")
    conda:
        "../envs/agemapper.yaml"
    threads: 1
    resources:
        mem_mb=4000,
    script:
        "../scripts/predict.py"
