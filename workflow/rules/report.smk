# Figures and pages people look at; `snakemake --report report.html` gathers them with their
# captions. Tables are also written as HTML pages, since the report only offers TSVs for download.


localrules:
    plot_brain_age,
    plot_uncertainty,
    plot_training_curves,
    render_brain_age_tables,
    render_ensemble_weights,
    render_qc_table,


rule plot_brain_age:
    input:
        deltas=paths.DELTAS,
        metrics=paths.DELTA_METRICS,
    output:
        predicted=report(
            paths.DELTA_PLOT,
            caption="../report/predicted_vs_age.rst",
            category="1. Brain age",
            labels={"result": "predicted vs chronological age"},
        ),
        deltas=report(
            paths.PLOT_DELTA_VS_AGE,
            caption="../report/delta_vs_age.rst",
            category="1. Brain age",
            labels={"result": "delta vs age per sex, before and after correction"},
        ),
        mae=report(
            paths.PLOT_MAE,
            caption="../report/mae.rst",
            category="1. Brain age",
            labels={"result": "test MAE per contrast and ensemble"},
        ),
    log:
        paths.log("plot_brain_age"),
    conda:
        "../envs/agemapper.yaml"
    params:
        contrasts=CONTRAST_ORDER,
    script:
        "../scripts/plot_brain_age.py"


rule plot_uncertainty:
    input:
        deltas=paths.DELTAS,
    output:
        plot=report(
            paths.PLOT_UNCERTAINTY,
            caption="../report/uncertainty.rst",
            category="1. Brain age",
            labels={"result": "replicate spread vs error (per-subject uncertainty)"},
        ),
        table=paths.UNCERTAINTY,
    log:
        paths.log("plot_uncertainty"),
    conda:
        "../envs/agemapper.yaml"
    script:
        "../scripts/plot_uncertainty.py"


rule render_brain_age_tables:
    input:
        metrics=paths.DELTA_METRICS,
        uncertainty=paths.UNCERTAINTY,
    output:
        metrics=report(
            paths.report_page("metrics"),
            caption="../report/table.rst",
            category="1. Brain age",
            labels={"result": "metrics per contrast, sex and split"},
        ),
        uncertainty=report(
            paths.report_page("uncertainty"),
            caption="../report/table.rst",
            category="1. Brain age",
            labels={"result": "replicate spread vs error per contrast and sex"},
        ),
    log:
        paths.log("render_brain_age_tables"),
    conda:
        "../envs/agemapper.yaml"
    params:
        synthetic=SYNTHETIC_DATA,
    script:
        "../scripts/render_tables.py"


rule render_ensemble_weights:
    input:
        weights=paths.ensemble_weights(),
    output:
        weights=report(
            paths.report_page("weights"),
            caption="../report/table.rst",
            category="1. Brain age",
            labels={"result": "ensemble weights"},
        ),
    log:
        paths.log("render_ensemble_weights"),
    conda:
        "../envs/agemapper.yaml"
    params:
        synthetic=SYNTHETIC_DATA,
    script:
        "../scripts/render_tables.py"


rule render_qc_table:
    input:
        qc=paths.QC_SUMMARY,
    output:
        qc=report(
            paths.report_page("qc"),
            caption="../report/table.rst",
            category="4. Quality control",
            labels={"result": "subjects left out"},
        ),
    log:
        paths.log("render_qc_table"),
    conda:
        "../envs/agemapper.yaml"
    params:
        synthetic=SYNTHETIC_DATA,
    script:
        "../scripts/render_tables.py"


rule plot_training_curves:
    input:
        metrics=replicate_files("metrics"),
    output:
        plot=report(
            paths.training_plot(),
            caption="../report/training.rst",
            category="3. Training",
            subcategory="{contrast}",
            labels={"contrast": "{contrast}", "sex": "{sex}"},
        ),
    log:
        paths.log("plot_training_curves", "{contrast}", "{sex}"),
    conda:
        "../envs/agemapper.yaml"
    script:
        "../scripts/plot_training_curves.py"


# Associations and training-split checks exist only when this run trained (not in apply mode).
if not APPLY:

    localrules:
        plot_associations,
        build_association_browser,
        render_association_tables,
        render_scale_factors,

    rule plot_associations:
        input:
            table=paths.ASSOCIATIONS,
        output:
            manhattan=report(
                paths.PLOT_MANHATTAN,
                caption="../report/manhattan.rst",
                category="2. Associations",
                labels={"result": "Manhattan plot"},
            ),
            heatmap=report(
                paths.PLOT_HEATMAP,
                caption="../report/heatmap.rst",
                category="2. Associations",
                labels={"result": "significant fields per contrast and category"},
            ),
        log:
            paths.log("plot_associations"),
        conda:
            "../envs/agemapper.yaml"
        params:
            alpha=config["associations"].get("alpha", 0.05),
            significance=config["associations"].get("significance", "fdr"),
            contrasts=CONTRAST_ORDER,
        script:
            "../scripts/plot_associations.py"

    rule build_association_browser:
        input:
            table=paths.ASSOCIATIONS,
        output:
            browser=report(
                paths.BROWSER,
                caption="../report/browser.rst",
                category="2. Associations",
                labels={"result": "association browser (interactive)"},
            ),
        log:
            paths.log("build_association_browser"),
        conda:
            "../envs/agemapper.yaml"
        params:
            alpha=config["associations"].get("alpha", 0.05),
            significance=config["associations"].get("significance", "fdr"),
            contrasts=CONTRAST_ORDER,
            synthetic=SYNTHETIC_DATA,
        script:
            "../scripts/build_association_browser.py"

    rule render_association_tables:
        input:
            significant=paths.SIGNIFICANT,
            associations=paths.ASSOCIATIONS,
            dropped=paths.DROPPED_NIDPS,
        output:
            significant=report(
                paths.report_page("significant"),
                caption="../report/table.rst",
                category="2. Associations",
                labels={"result": "significant associations"},
            ),
            associations=report(
                paths.report_page("associations"),
                caption="../report/table.rst",
                category="2. Associations",
                labels={"result": "all association tests"},
            ),
            dropped=report(
                paths.report_page("dropped"),
                caption="../report/table.rst",
                category="4. Quality control",
                labels={"result": "nIDP columns and rows left out"},
            ),
        log:
            paths.log("render_association_tables"),
        conda:
            "../envs/agemapper.yaml"
        params:
            synthetic=SYNTHETIC_DATA,
        script:
            "../scripts/render_tables.py"

    rule render_scale_factors:
        input:
            scale_factors=paths.scale_factors(),
        output:
            scale_factors=report(
                paths.report_page("scale_factors"),
                caption="../report/table.rst",
                category="4. Quality control",
                labels={"result": "scale factors"},
            ),
        log:
            paths.log("render_scale_factors"),
        conda:
            "../envs/agemapper.yaml"
        params:
            synthetic=SYNTHETIC_DATA,
        script:
            "../scripts/render_tables.py"
