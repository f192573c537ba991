# Stage 2: the replicate networks of each contrast and sex, trained on one data stream.


rule train_networks:
    input:
        train=paths.cache(split="train"),
        validation=paths.cache(split="validation"),
        train_manifest=paths.manifest(split="train"),
        validation_manifest=paths.manifest(split="validation"),
        info=paths.cache_info(split="train"),
    output:
        weights=replicate_files("weights"),
        metadata=replicate_files("metadata"),
        metrics=replicate_files("metrics"),
    log:
        paths.log("train_networks", "{contrast}", "{sex}"),
    benchmark:
        paths.benchmark("train_networks", "{contrast}", "{sex}")
    conda:
        "../envs/agemapper.yaml"
    threads: 1
    resources:
        mem_mb=4000,
    params:
        model=config["model"],
        training=config["training"],
        checkpoint=paths.checkpoint(),
    script:
        "../scripts/train.py"
