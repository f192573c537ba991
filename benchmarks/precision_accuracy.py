"""Does the fast path train the same networks? Validation MAE, fp32 against bf16 autocast.

Trains the demo's replicate networks (config/config.yaml) of some contrasts for one sex with
(1) fp32, (2) bf16 autocast, (3) bf16 autocast + the shifted first convolution, for several
seeds, on the demo cohort a `snakemake -c2 all` run generated (results/synthetic/), and prints
each network's best validation MAE and their mean and spread per path. On a CPU this checks the
numerics of bf16 training (CPU autocast); on a GPU (``--device cuda``) the fast path itself.

    python benchmarks/precision_accuracy.py T1_nonlinear tbss_FA_s --seeds 0 1
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agemapper.images.contrasts import read_contrasts  # noqa: E402
from agemapper.images.preprocess import preprocess_split  # noqa: E402
from agemapper.networks.training import Trainer, resolve_device  # noqa: E402

PATHS = {"fp32": ("fp32", "cudnn"), "bf16": ("bf16", "cudnn"), "bf16+shifted": ("bf16", "shifted")}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("contrasts", nargs="+")
    ap.add_argument("--sex", default="female")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--results", type=Path, default=REPO / "results")
    ap.add_argument("--small", action="store_true", help="smoke run: 1 epoch, 1 replicate")
    args = ap.parse_args(argv)
    cfg = yaml.safe_load((REPO / "config/config.yaml").read_text())
    if args.small:
        cfg["training"].update(epochs=1, replicates=1)
    subjects = pd.read_csv(
        args.results / "synthetic/subjects.tsv", sep="\t", dtype={"subject": str, "half": str}
    ).fillna({"half": ""})
    table = read_contrasts(REPO / "config/contrasts.tsv")
    device = resolve_device(args.device)
    threads = torch.get_num_threads()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.contrasts:
            caches = {}
            for split in ("train", "validation"):
                cache = Path(tmp) / name / f"{args.sex}_{split}.cache"
                part = subjects[(subjects.sex == args.sex) & (subjects.split == split)]
                preprocess_split(
                    part, table[name], args.results / "synthetic/subjectsAll",
                    cfg["preprocess"]["grid"], cache, cache.with_suffix(".tsv"),
                    cache.with_suffix(".json"), threads=threads,
                )  # fmt: skip
                caches[split] = cache
            for seed in args.seeds:
                for label, (precision, first_conv) in PATHS.items():
                    start = time.monotonic()
                    training = {**cfg["training"], "precision": precision, "seed": seed}
                    trainer = Trainer(
                        caches["train"], caches["validation"], cfg["model"], training,
                        list(range(1, cfg["training"]["replicates"] + 1)), (name, args.sex),
                        Path(tmp) / f"{name}-{label}-{seed}.ckpt", device=device,
                        speed={"first_conv": first_conv},
                    )  # fmt: skip
                    trainer.run()
                    maes = [
                        min(r.history, key=lambda h: h["val_loss"])["val_mae"] for r in trainer.reps
                    ]
                    rows += [
                        {"contrast": name, "path": label, "seed": seed, "mae": m} for m in maes
                    ]
                    print(
                        f"{name} {label:13s} seed {seed}: best validation MAE "
                        f"{', '.join(f'{m:.3f}' for m in maes)} ({time.monotonic() - start:.0f} s)",
                        flush=True,
                    )
    df = pd.DataFrame(rows)
    summary = df.groupby(["contrast", "path"]).mae.agg(["count", "mean", "std", "min", "max"])
    print(f"\n{device}, {args.sex}, seeds {args.seeds}:\n{summary.round(3).to_string()}")
    return df


if __name__ == "__main__":
    main()
