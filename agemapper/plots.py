"""Figures people look at: predicted vs chronological age, deltas before/after correction."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from .io import atomic_path  # noqa: E402


def predicted_vs_age(deltas: pd.DataFrame, path, split: str = "test") -> None:
    """One panel per contrast: predicted (replicate mean) vs chronological age, by sex."""
    data = deltas[deltas.split == split]
    contrasts = list(dict.fromkeys(data.contrast))
    ncol = min(4, max(1, len(contrasts)))
    nrow = max(1, math.ceil(len(contrasts) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.6 * ncol, 3.4 * nrow), squeeze=False)
    lo, hi = (data.age.min() - 3, data.age.max() + 3) if len(data) else (40, 90)
    for ax, contrast in zip(axes.flat, contrasts, strict=False):
        part = data[data.contrast == contrast]
        for sex, colour in (("female", "tab:red"), ("male", "tab:blue")):
            s = part[part.sex == sex]
            if len(s):
                mae = np.abs(s.predicted - s.age).mean()
                ax.scatter(
                    s.age,
                    s.predicted,
                    s=8,
                    alpha=0.6,
                    color=colour,
                    label=f"{sex} (MAE {mae:.1f} y)",
                )
        ax.plot([lo, hi], [lo, hi], color="0.3", lw=1, ls="--", label="identity")
        ax.set(
            xlim=(lo, hi),
            ylim=(lo, hi),
            title=contrast,
            xlabel="chronological age (years)",
            ylabel="predicted age (years)",
        )
        ax.legend(fontsize=7, loc="upper left")
    for ax in list(axes.flat)[len(contrasts) :]:
        ax.axis("off")
    fig.suptitle(f"Brain age on the {split} split (mean of replicates)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
