# Stage 1: NIfTI -> per contrast/sex/split cache (float16 .npy + manifest) for fast training.


localrules:
    check_scale_factors,


rule preprocess_contrast:
    input:
        unpack(lambda wildcards: cohort_tables()),
        contrasts=config["contrasts_table"],
    output:
        cache=temp(paths.cache()),
        manifest=paths.manifest(),
        info=paths.cache_info(),
    log:
        paths.log("preprocess_contrast", "{contrast}", "{sex}", "{split}"),
    benchmark:
        paths.benchmark("preprocess_contrast", "{contrast}", "{sex}", "{split}")
    group:
        "preprocess"
    conda:
        "../envs/agemapper.yaml"
    threads: 1
    resources:
        mem_mb=per_attempt(8000),
        runtime=per_attempt(180),
    params:
        contrast=lambda wildcards: CONTRAST_TABLE[wildcards.contrast].as_dict(),
        grid=config["preprocess"]["grid"],
        data_directory=COHORT["data_directory"],
    script:
        "../scripts/preprocess.py"


rule check_scale_factors:
    input:
        manifests=expand(paths.manifest(split="train"), contrast=CONTRASTS, sex=SEXES),
        contrasts=config["contrasts_table"],
    output:
        table=paths.scale_factors(),
    log:
        paths.log("check_scale_factors"),
    conda:
        "../envs/agemapper.yaml"
    script:
        "../scripts/check_scale_factors.py"
