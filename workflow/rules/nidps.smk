# Stage 5a: the nIDP table from the UK Biobank main dataset, by FUNPACK with FMRIB's
# configuration (when cohort.nidps_format is ukb_main; a ready-made FUNPACK table is read as is).
if NIDPS_FROM_MAIN:

    rule extract_nidps:
        input:
            unpack(lambda wildcards: extract_inputs()),
        output:
            nidps=paths.NIDPS,
            descriptions=paths.NIDP_DESCRIPTIONS,
        log:
            paths.log("extract_nidps"),
        benchmark:
            paths.benchmark("extract_nidps")
        conda:
            "../envs/agemapper.yaml"
        resources:
            mem_mb=per_attempt(16000),
            runtime=per_attempt(240),
        params:
            instances=config["associations"]["instances"],
        script:
            "../scripts/extract_nidps.py"
