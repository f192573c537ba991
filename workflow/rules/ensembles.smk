# Stage 3b: combinations of contrasts, fitted per sex on validation (or reused in apply mode).


localrules:
    combine_contrasts,


rule combine_contrasts:
    input:
        unpack(
            lambda wildcards: {
                "predictions": all_predictions(),
                **(
                    {"weights": paths.ensemble_weights(APPLY["results"])}
                    if APPLY
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
    script:
        "../scripts/combine_contrasts.py"
