"""Training fidelity on the demo: what each difference from the original does, over seeds.

Trains the replicate networks of some demo contrasts (config/config.yaml's model and training,
on the synthetic cohort a ``snakemake -c2 results/synthetic/truth/cohort.json`` run generated)
under a reference (the demo's training settings with restarts off) and variants that each
change one option, for several seeds, and prints per variant, over every (seed, contrast):

- single-replicate test MAE, replicate-ensemble (mean) test MAE and the ensemble's gain, and the
  mean correlation of the replicates' test errors (how independent they are);
- replicates stuck: kept network flagged by the stuck check, and test MAE not below
  0.8 x the mean-age baseline (the issue's criterion).

Then, for the reference's networks: the test predictions from float32 caches against float16
caches (the same networks, only the cache's rounding differs), and with bf16 autocast against
fp32 (CPU autocast: numerics only; bf16 on CUDA needs a GPU).

    python benchmarks/training_fidelity.py --seeds 0 1 2
    python benchmarks/training_fidelity.py --small      # smoke run on its own tiny cohort
"""

from __future__ import annotations

import argparse
import copy
import itertools
import platform
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agemapper.images.contrasts import read_contrasts  # noqa: E402
from agemapper.images.preprocess import preprocess_split  # noqa: E402
from agemapper.networks.batches import BatchSource  # noqa: E402
from agemapper.networks.predict import predict_cache  # noqa: E402
from agemapper.networks.settings import resolve  # noqa: E402
from agemapper.networks.training import Trainer  # noqa: E402

# one option changed from the reference (the demo's settings, restarts off); "flip" takes the
# other value of a two-valued option
VARIANTS = {
    "reference": {},
    "shared batch order": {"batch_order": "shared"},
    "threshold_mode": {"scheduler": {"threshold_mode": "flip"}},
    "output_bias": {"output_bias": "flip"},
    "float32 cache": {},  # the reference's settings on float32 caches
    "restarts on (the demo)": {"restart_stuck": {"max_restarts": 2}},
}
FLIPS = {"abs": "rel", "rel": "abs", "default": "mean_age", "mean_age": "default"}


def merged(base: dict, change: dict) -> dict:
    """``base`` with ``change`` (dicts merged one level down; "flip": the other value)."""
    out = copy.deepcopy(base)
    for k, v in change.items():
        if isinstance(v, dict):
            old = out.get(k, {})
            out[k] = {**old, **{s: FLIPS[old.get(s)] if x == "flip" else x for s, x in v.items()}}
        else:
            out[k] = FLIPS[out.get(k)] if v == "flip" else v
    return out


def tiny_cohort(root: Path, cfg: dict, contrasts: list) -> None:
    """A synthetic cohort of 16 training, 8 validation and 8 test subjects per sex."""
    from agemapper.images.contrasts import select
    from agemapper.images.subjects import read_subjects
    from agemapper.synth.cohort import generate

    table = read_contrasts(REPO / cfg["contrasts_table"])
    names = ["subjects", "nidps", "confounds", "latent_deltas", "planted", "latent_variables"]
    outputs = {n: root / f"synthetic/{n}.tsv" for n in names}
    generate(
        read_subjects(REPO / cfg["synthetic"]["splits"]), select(table, contrasts),
        root / "synthetic/subjectsAll", {**outputs, "summary": root / "synthetic/summary.json"},
        counts={"train": 16, "validation": 8, "testA": 4, "testB": 4}, seed=1,
    )  # fmt: skip


def caches_for(subjects, table, name, sex, grid, data, tmp: Path, dtype: str) -> dict:
    out = {}
    for split in ("train", "validation", "test"):
        cache = tmp / dtype / name / f"{sex}_{split}.cache"
        part = subjects[(subjects.sex == sex) & (subjects.split == split)]
        preprocess_split(
            part, table[name], data, grid, cache, cache.with_suffix(".tsv"),
            cache.with_suffix(".json"), threads=torch.get_num_threads(), dtype=dtype,
        )  # fmt: skip
        out[split] = cache
    return out


def kept_models(trainer: Trainer) -> list:
    models = []
    for rep in trainer.reps:
        if rep.best_state:
            rep.model.load_state_dict(rep.best_state)
        models.append(rep.model.eval())
    return models


def scores(preds: np.ndarray, ages: np.ndarray, train_mean: float) -> dict:
    errors = preds - ages[:, None]
    single = np.abs(errors).mean(axis=0)
    ensemble = float(np.abs(preds.mean(axis=1) - ages).mean())
    pairs = list(itertools.combinations(range(preds.shape[1]), 2))
    corr = [np.corrcoef(errors[:, i], errors[:, j])[0, 1] for i, j in pairs]
    baseline = float(np.abs(ages - train_mean).mean())
    return {
        "single": float(single.mean()),
        "ensemble": ensemble,
        "gain": float(single.mean()) - ensemble,
        "error_corr": float(np.nanmean(corr)) if corr else np.nan,
        "above_0.8_baseline": int((single >= 0.8 * baseline).sum()),
        "baseline": baseline,
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--contrasts", nargs="+", default=["T1_nonlinear", "swi"])
    ap.add_argument("--sex", default="female")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--results", type=Path, default=REPO / "results")
    ap.add_argument("--config", type=Path, default=REPO / "config/config.yaml")
    ap.add_argument(
        "--small", action="store_true", help="smoke run: a tiny cohort of its own, 2 epochs"
    )
    args = ap.parse_args(argv)
    cfg = yaml.safe_load(args.config.read_text())
    training = resolve(merged(cfg["training"], {"restart_stuck": {"max_restarts": 0}}))
    if args.small:
        args.contrasts, args.seeds = args.contrasts[:1], args.seeds[:1]
        args.variants = ["reference", "shared batch order", "float32 cache"]
        training["epochs"] = 2
    table = read_contrasts(REPO / cfg["contrasts_table"])
    grid = cfg["preprocess"]["grid"]
    rows, numerics = [], []
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.small:
            args.results = tmp / "results"
            tiny_cohort(args.results, cfg, args.contrasts)
        subjects = pd.read_csv(
            args.results / "synthetic/subjects.tsv", sep="\t", dtype={"subject": str, "half": str}
        ).fillna({"half": ""})
        data = args.results / "synthetic/subjectsAll"
        for name in args.contrasts:
            caches = {
                d: caches_for(subjects, table, name, args.sex, grid, data, tmp, d)
                for d in ("float16", "float32")
            }
            for seed, variant in itertools.product(args.seeds, args.variants):
                dtype = "float32" if variant == "float32 cache" else "float16"
                settings = merged(training, {**VARIANTS[variant], "seed": seed})
                c = caches[dtype]
                t0 = time.monotonic()
                trainer = Trainer(
                    c["train"], c["validation"], cfg["model"], settings,
                    list(range(1, settings["replicates"] + 1)), (name, args.sex),
                    tmp / f"{name}-{variant}-{seed}.ckpt", device="cpu",
                )  # fmt: skip
                trainer.run()
                seconds = time.monotonic() - t0
                models = kept_models(trainer)
                test = BatchSource(c["test"], torch.device("cpu"), preload_bytes=0)
                ages = test.ages.double().numpy()
                preds = predict_cache(models, test)
                s = scores(preds, ages, float(trainer.train.ages.double().mean()))
                if variant in ("threshold_mode", "output_bias"):
                    value = settings["scheduler" if variant == "threshold_mode" else variant]
                    label = f"{variant}: {value[variant] if isinstance(value, dict) else value}"
                else:
                    label = variant
                row = {
                    "variant": label,
                    "contrast": name,
                    "seed": seed,
                    **s,
                    "stuck": sum(r.stuck is not None for r in trainer.reps),
                    "restarts": sum(len(r.restarts) for r in trainer.reps),
                    "replicates": len(trainer.reps),
                    "seconds": seconds,
                }
                rows.append(row)
                print(
                    f"{name} seed {seed} {label:24s} single {s['single']:.2f} ensemble "
                    f"{s['ensemble']:.2f} (baseline {s['baseline']:.2f}) stuck {row['stuck']} "
                    f"restarts {row['restarts']} {seconds:.0f} s",
                    flush=True,
                )
                if variant == "reference":
                    other = BatchSource(caches["float32"]["test"], torch.device("cpu"), 0)
                    fp32_cache = predict_cache(models, other)
                    with torch.autocast("cpu", torch.bfloat16):
                        bf16 = predict_cache(models, test)
                    numerics.append(
                        {
                            "contrast": name,
                            "seed": seed,
                            "cache_mean": float(np.abs(fp32_cache - preds).mean()),
                            "cache_max": float(np.abs(fp32_cache - preds).max()),
                            "bf16_mean": float(np.abs(bf16 - preds).mean()),
                            "bf16_max": float(np.abs(bf16 - preds).max()),
                        }
                    )
    df = pd.DataFrame(rows)
    summary = df.groupby("variant", sort=False).agg(
        runs=("seed", "size"),
        single_mae=("single", "mean"),
        single_sd=("single", "std"),
        ensemble_mae=("ensemble", "mean"),
        ensemble_sd=("ensemble", "std"),
        gain=("gain", "mean"),
        error_corr=("error_corr", "mean"),
        stuck=("stuck", "sum"),
        above_08_baseline=("above_0.8_baseline", "sum"),
        replicates=("replicates", "sum"),
        restarts=("restarts", "sum"),
        minutes=("seconds", lambda s: s.sum() / 60),
    )
    print(
        f"\n{date.today()}, {platform.node()} ({platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} torch threads), {args.sex}, contrasts {args.contrasts}, "
        f"seeds {args.seeds}, {time.monotonic() - started:.0f} s; reference: "
        f"{yaml.safe_dump(training, default_flow_style=True, width=10**6).strip()}\n"
    )
    print(summary.round(3).to_markdown())
    per_contrast = df.pivot_table(
        index="variant", columns="contrast", values="ensemble", aggfunc="mean", sort=False
    )
    print("\nensemble test MAE per contrast (mean over seeds):\n")
    print(per_contrast.round(2).to_markdown())
    if numerics:
        num = pd.DataFrame(numerics)
        print(
            "\nsame networks, test predictions (years): float32 cache vs float16 cache "
            f"mean |diff| {num.cache_mean.mean():.2e}, max {num.cache_max.max():.2e}; "
            f"bf16 autocast (CPU) vs fp32 mean |diff| {num.bf16_mean.mean():.2e}, "
            f"max {num.bf16_max.max():.2e}"
        )
    return df


if __name__ == "__main__":
    main()
