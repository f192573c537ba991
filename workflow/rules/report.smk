# Figures people look at; `snakemake --report report.html` gathers them with their captions.


localrules:
    plot_brain_age,
    plot_associations,
    plot_training_curves,


rule plot_brain_age:
    input:
        deltas=paths.DELTAS,
        metrics=paths.DELTA_METRICS,
    output:
        predicted=report(
            paths.DELTA_PLOT,
            caption="../report/predicted_vs_age.rst",
            category="1. Brain age",
            labels={"figure": "predicted vs chronological age"},
        ),
        deltas=report(
            paths.PLOT_DELTA_VS_AGE,
            caption="../report/delta_vs_age.rst",
            category="1. Brain age",
            labels={"figure": "delta vs age, before and after correction"},
        ),
        mae=report(
            paths.PLOT_MAE,
            caption="../report/mae.rst",
            category="1. Brain age",
            labels={"figure": "test MAE per contrast and ensemble"},
        ),
    log:
        paths.log("plot_brain_age"),
    conda:
        "../envs/agemapper.yaml"
    script:
        "../scripts/plot_brain_age.py"


rule plot_associations:
    input:
        table=paths.ASSOCIATIONS,
    output:
        manhattan=report(
            paths.PLOT_MANHATTAN,
            caption="../report/manhattan.rst",
            category="2. Associations",
            labels={"figure": "Manhattan plot"},
        ),
        heatmap=report(
            paths.PLOT_HEATMAP,
            caption="../report/heatmap.rst",
            category="2. Associations",
            labels={"figure": "significant associations per contrast and category"},
        ),
    log:
        paths.log("plot_associations"),
    conda:
        "../envs/agemapper.yaml"
    params:
        alpha=config["associations"].get("alpha", 0.05),
    script:
        "../scripts/plot_associations.py"


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
