# Stage 2: the replicate networks of each contrast and sex, trained in one job (data read once).
# At the time limit SLURM sends SIGTERM: the trainer checkpoints and the job fails; the retry
# (more runtime) resumes from the checkpoint, which is no output and so survives the failure.


rule train_networks:
    input:
        train=paths.cache(split="train"),
        validation=paths.cache(split="validation"),
        train_manifest=paths.manifest(split="train"),
        validation_manifest=paths.manifest(split="validation"),
        info=paths.cache_info(split="train"),
        initial=initial_networks(),
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
        gpu=1,
        mem_mb=per_attempt(16000),
        runtime=per_attempt(24 * 60, most=48 * 60),  # minutes; many GPU partitions end at 48 h
    params:
        model=config["model"],
        training=config["training"],
        checkpoint=paths.checkpoint(),
    script:
        "../scripts/train.py"
