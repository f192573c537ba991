# Stage 5: deconfounded correlations of corrected deltas with nIDPs, FDR and Bonferroni.


localrules:
    associate_nidps,


rule associate_nidps:
    input:
        unpack(lambda wildcards: nidp_inputs()),
        deltas=paths.DELTAS,
        confounds=COHORT["confounds"],
    output:
        all=paths.ASSOCIATIONS,
        significant=paths.SIGNIFICANT,
        dropped=paths.DROPPED_NIDPS,
        qc=paths.ASSOCIATION_QC,
    log:
        paths.log("associate_nidps"),
    benchmark:
        paths.benchmark("associate_nidps")
    conda:
        "../envs/agemapper.yaml"
    params:
        associations=config["associations"],
        qc=config["qc"],
    script:
        "../scripts/associate_nidps.py"
