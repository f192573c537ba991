"""Figures people look at: predicted vs chronological age, deltas before/after correction."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from agemapper.io import atomic_path  # noqa: E402


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


def _save(fig, path) -> None:
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png", bbox_inches="tight")
    plt.close(fig)


def _grid(n: int, ncol: int = 4, size=(3.6, 3.2)):
    ncol = min(ncol, max(1, n))
    nrow = max(1, math.ceil(n / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(size[0] * ncol, size[1] * nrow), squeeze=False)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    return fig, list(axes.flat)


def delta_vs_age(deltas: pd.DataFrame, path, split: str = "test") -> None:
    """Per contrast: delta against age before (grey) and after (colour) bias correction."""
    data = deltas[deltas.split == split]
    contrasts = list(dict.fromkeys(data.contrast))
    fig, axes = _grid(len(contrasts))
    for ax, contrast in zip(axes, contrasts, strict=False):
        part = data[data.contrast == contrast]
        r_raw = np.corrcoef(part.delta, part.age)[0, 1] if len(part) > 2 else np.nan
        r_cor = np.corrcoef(part.delta_corrected, part.age)[0, 1] if len(part) > 2 else np.nan
        ax.scatter(
            part.age, part.delta, s=7, color="0.6", alpha=0.6, label=f"raw (r = {r_raw:.2f})"
        )
        ax.scatter(
            part.age,
            part.delta_corrected,
            s=7,
            color="tab:purple",
            alpha=0.6,
            label=f"corrected (r = {r_cor:.2f})",
        )
        ax.axhline(0, color="0.2", lw=0.8)
        ax.set(title=contrast, xlabel="chronological age (years)", ylabel="brain-age delta (years)")
        ax.legend(fontsize=7, loc="upper right")
    fig.suptitle(f"Brain-age delta vs age on the {split} split, before and after bias correction")
    _save(fig, path)


def mae_bars(metrics: pd.DataFrame, path, split: str = "test") -> None:
    """Test MAE per contrast and ensemble and sex; whiskers span the replicates' MAEs."""
    data = metrics[metrics.split == split].copy()
    contrasts = list(dict.fromkeys(data.contrast))
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(contrasts) + 2), 4.2))
    x = np.arange(len(contrasts))
    for k, (sex, colour) in enumerate((("female", "tab:red"), ("male", "tab:blue"))):
        part = data[data.sex == sex].set_index("contrast").reindex(contrasts)
        if part.mae.isna().all():
            continue
        lo = (part.mae - part.mae_replicate_min).clip(lower=0)
        hi = (part.mae_replicate_max - part.mae).clip(lower=0)
        err = np.vstack([lo.fillna(0), hi.fillna(0)])
        ax.bar(
            x + (k - 0.5) * 0.38,
            part.mae,
            width=0.38,
            color=colour,
            alpha=0.8,
            yerr=err,
            capsize=2,
            label=f"{sex} (ensemble of replicates)",
        )
        ax.scatter(
            x + (k - 0.5) * 0.38,
            part.mae_mean_age_baseline,
            marker="_",
            s=120,
            color="k",
            zorder=3,
            label="mean-age baseline" if k == 0 else None,
        )
        for xi, (m, r) in enumerate(zip(part.mae, part.r_predicted_age, strict=True)):
            if np.isfinite(m):
                ax.text(
                    xi + (k - 0.5) * 0.38,
                    m + 0.1,
                    f"r={r:.2f}",
                    ha="center",
                    fontsize=6,
                    rotation=90,
                    va="bottom",
                )
    ax.set_xticks(x, contrasts, rotation=45, ha="right")
    ax.set(
        ylabel=f"{split} MAE (years)",
        title="Brain-age accuracy per contrast and ensemble "
        "(whiskers: range over the replicate networks)",
    )
    ax.legend(fontsize=8)
    _save(fig, path)


def manhattan(table: pd.DataFrame, path, alpha: float = 0.05) -> None:
    """-log10 p of every test, nIDPs grouped by FMRIB category, with both thresholds."""
    data = table.copy()
    data["category"] = data["category"].fillna("").replace("", "uncategorised")
    cats = sorted(data.category.unique())
    order = {c: i for i, c in enumerate(cats)}
    data["_cat"] = data.category.map(order)
    data = data.sort_values(["_cat", "nidp"])
    positions = {n: i for i, n in enumerate(dict.fromkeys(data.nidp))}
    data["x"] = data.nidp.map(positions)
    fig, ax = plt.subplots(figsize=(12, 5))
    colours = plt.get_cmap("tab20")
    for c in cats:
        part = data[data.category == c]
        ax.scatter(part.x, part.neglog10_p, s=9, color=colours(order[c] % 20), label=c)
    m = len(data)
    if m:
        ax.axhline(
            -np.log10(alpha / m), color="k", ls="--", lw=1, label=f"Bonferroni (p < {alpha}/{m})"
        )
        sig = data[data.p_fdr < alpha]
        if len(sig):
            ax.axhline(sig.neglog10_p.min(), color="tab:red", ls=":", lw=1, label=f"FDR {alpha}")
    ax.set(
        xlabel="nIDP (grouped by FMRIB category)",
        ylabel="-log10 p",
        title="Associations of corrected brain-age deltas with nIDPs (all contrasts)",
    )
    ax.set_xticks([])
    ax.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.08))
    _save(fig, path)


def significance_heatmap(table: pd.DataFrame, path, flag: str = "significant_fdr") -> None:
    """Number of significant associations per contrast (rows) and FMRIB category (columns)."""
    data = table[table[flag].astype(bool)].copy()
    data["category"] = data["category"].fillna("").replace("", "uncategorised")
    contrasts = list(dict.fromkeys(table.contrast))
    counts = pd.crosstab(data.contrast, data.category).reindex(index=contrasts, fill_value=0)
    if counts.shape[1] == 0:
        counts = pd.DataFrame({"(none significant)": 0}, index=contrasts)
    fig, ax = plt.subplots(figsize=(max(5, 0.6 * counts.shape[1] + 3), 0.4 * len(contrasts) + 2))
    im = ax.imshow(counts.to_numpy(), cmap="viridis", aspect="auto")
    ax.set_xticks(range(counts.shape[1]), counts.columns, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(contrasts)), contrasts, fontsize=7)
    for (i, j), v in np.ndenumerate(counts.to_numpy()):
        if v:
            ax.text(j, i, str(v), ha="center", va="center", color="w", fontsize=7)
    fig.colorbar(im, ax=ax, label="significant associations")
    ax.set_title(
        f"Significant associations ({flag.removeprefix('significant_')}) per contrast "
        "and FMRIB category"
    )
    _save(fig, path)


def training_curves(histories: dict, path, title: str) -> None:
    """Train and validation MAE per epoch for each replicate network.

    A replicate restarted because it was stuck (metrics.tsv columns ``attempt``, ``restarted``)
    shows its abandoned attempts as dotted validation curves ending in an x; the solid curves
    are the attempt it kept.
    """
    fig, ax = plt.subplots(figsize=(6, 4))
    colours = plt.get_cmap("tab10")
    for i, (name, h) in enumerate(histories.items()):
        attempts = h["attempt"] if "attempt" in h else pd.Series(1, index=h.index)
        for k, attempt in enumerate(sorted(set(attempts))[:-1]):
            old = h[attempts == attempt]
            label = f"{name} stuck: restarted" if k == 0 else None
            ax.plot(old.epoch, old.val_mae, color=colours(i), ls=":", lw=1, label=label)
            ax.scatter(old.epoch.iloc[-1], old.val_mae.iloc[-1], color=colours(i), marker="x")
        h = h[attempts == attempts.max()]
        ax.plot(h.epoch, h.train_mae, color=colours(i), ls="--", lw=1, label=f"{name} train")
        ax.plot(h.epoch, h.val_mae, color=colours(i), lw=1.5, label=f"{name} validation")
        best = h[h.best.astype(str) == "True"]
        if len(best):
            ax.scatter(best.epoch.iloc[-1], best.val_mae.iloc[-1], color=colours(i), zorder=3)
    ax.set(xlabel="epoch", ylabel="MAE (years)", title=title)
    ax.legend(fontsize=7)
    _save(fig, path)
