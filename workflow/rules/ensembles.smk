# Stage 3b: combinations of contrasts, fitted per sex on validation (apply mode: on the
# cohort's calibration subjects, or reused from another run).


localrules:
    combine_contrasts,


rule combine_contrasts:
    input:
        unpack(
            lambda wildcards: {
                "predictions": all_predictions(),
                **(
                    {"weights": reused("ensemble_weights")}
                    if reused("ensemble_weights")
                    else {}
                ),
            }
        ),
    output:
        predictions=paths.ENSEMBLE_PREDICTIONS,
        weights=paths.ensemble_weights(),
    log:
        paths.log("combine_contrasts"),
    conda:
        "../envs/agemapper.yaml"
    params:
        ensembles=config.get("ensembles", {}),
        # the run's base seed: the elastic net's cross-validation folds derive from it
        seed=config["training"]["seed"],
        # apply mode fits on the cohort's calibration subjects: warn when they are few
        warn_under=planning.MIN_CALIBRATION if APPLY else None,
    script:
        "../scripts/combine_contrasts.py"
