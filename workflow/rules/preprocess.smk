# Stage 1: NIfTI -> per contrast/sex cache (packed float16 or float32 + manifest): "train" and
# "validation" for training, "predict" (validation and test subjects) for prediction.


localrules:
    check_subjects,
    summarise_qc,
    check_scale_factors,


rule check_subjects:
    input:
        unpack(lambda wildcards: cohort_tables()),
    output:
        subjects=paths.CHECKED_SUBJECTS,
        problems=paths.SUBJECT_PROBLEMS,
    log:
        paths.log("check_subjects"),
    conda:
        "../envs/agemapper.yaml"
    params:
        qc=config["qc"],
    script:
        "../scripts/check_subjects.py"


rule preprocess_contrast:
    input:
        subjects=paths.CHECKED_SUBJECTS,
        contrasts=config["contrasts_table"],
        # validation and test intensities are checked against the training split's
        reference=intensity_reference,
        # apply mode: against the statistics of the networks' training inputs, if they carry any
        networks=reference_networks,
    output:
        cache=temp(paths.cache()),
        manifest=paths.manifest(),
        info=paths.cache_info(),
        qc=paths.preprocess_qc(),
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
        splits=lambda wildcards: CACHES[wildcards.split],
        grid=config["preprocess"]["grid"],
        dtype=config["preprocess"].get("cache_dtype", "float16"),
        data_directory=COHORT["data_directory"],
        qc=config["qc"],
        checkpoint=paths.preprocess_checkpoint(),
    script:
        "../scripts/preprocess.py"


rule check_scale_factors:
    input:
        # estimated from the training split (apply mode: from the new cohort)
        manifests=expand(
            paths.manifest(split="predict" if APPLY else "train"),
            contrast=CONTRASTS,
            sex=SEXES,
        ),
        contrasts=config["contrasts_table"],
    output:
        table=paths.scale_factors(),
    log:
        paths.log("check_scale_factors"),
    conda:
        "../envs/agemapper.yaml"
    script:
        "../scripts/check_scale_factors.py"


rule summarise_qc:
    input:
        subjects=paths.SUBJECT_PROBLEMS,
        preprocess=expand(
            paths.preprocess_qc(), contrast=CONTRASTS, sex=SEXES, split=SPLITS
        ),
        associations=[] if APPLY else [paths.ASSOCIATION_QC],
    output:
        summary=paths.QC_SUMMARY,
    log:
        paths.log("summarise_qc"),
    conda:
        "../envs/agemapper.yaml"
    script:
        "../scripts/summarise_qc.py"
