"""Figures people look at: predicted vs chronological age, deltas before/after correction."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from agemapper.io import atomic_path  # noqa: E402
from agemapper.report import tables  # noqa: E402
from agemapper.stats.correlation import pearson  # noqa: E402

SEX_COLOURS = {"female": "#c0392b", "male": "#2166ac", "pooled": "#555555"}


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
        for sex in ("female", "male"):
            colour = SEX_COLOURS[sex]
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
    if fig.get_layout_engine() is None:
        fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png", bbox_inches="tight")
    plt.close(fig)


def _grid(n: int, ncol: int = 4, size=(3.6, 3.2), **kwargs):
    ncol = min(ncol, max(1, n))
    nrow = max(1, math.ceil(n / ncol))
    fig, axes = plt.subplots(
        nrow, ncol, figsize=(size[0] * ncol, size[1] * nrow), squeeze=False, **kwargs
    )
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    return fig, list(axes.flat)


def _sex_colour(sex: str) -> str:
    return SEX_COLOURS.get(sex, "#7f7f7f")


def _grid_columns(n: int) -> int:
    return 4 if n <= 16 else 6


def delta_vs_age(deltas: pd.DataFrame, path, split: str = "test", contrasts=None) -> pd.DataFrame:
    """Per contrast: delta against age per sex, before (faint) and after (solid) correction.

    Each sex has its own colour, its own least-squares line and its own r: pooling the sexes
    can hide an age trend left in one of them. Returns the r shown (contrast, sex, r_raw,
    r_corrected).
    """
    data = deltas[deltas.split == split]
    contrasts = tables.contrast_order(data, contrasts)
    fig, axes = _grid(
        len(contrasts), ncol=_grid_columns(len(contrasts)), size=(3.6, 3.3), layout="constrained"
    )
    shown = []
    sexes = [s for s in SEX_COLOURS if s in set(data.sex)] + sorted(
        set(data.sex) - set(SEX_COLOURS)
    )
    for ax, contrast in zip(axes, contrasts, strict=False):
        part = data[data.contrast == contrast]
        notes = []
        for sex in sexes:
            s = part[part.sex == sex]
            if s.empty:
                continue
            colour = _sex_colour(sex)
            ax.scatter(
                s.age, s.delta, s=9, facecolors="none", edgecolors=colour, alpha=0.35, lw=0.6
            )
            ax.scatter(s.age, s.delta_corrected, s=9, color=colour, alpha=0.75, lw=0)
            rs = []
            for column, style in (("delta", "--"), ("delta_corrected", "-")):
                r = pearson(s.age, s[column])
                rs.append(r)
                if len(s) > 2 and np.ptp(s.age) > 0:
                    slope, icept = np.polyfit(s.age, s[column], 1)
                    xs = np.array([s.age.min(), s.age.max()])
                    ax.plot(xs, icept + slope * xs, color=colour, ls=style, lw=1.3)
            notes.append((sex, colour, rs))
            shown.append({"contrast": contrast, "sex": sex, "r_raw": rs[0], "r_corrected": rs[1]})
        ax.axhline(0, color="0.2", lw=0.6)
        ax.set(title=contrast, xlabel="age (years)", ylabel="delta (years)")
        for k, (sex, colour, (raw, cor)) in enumerate(reversed(notes)):
            ax.text(
                0.03,
                0.03 + 0.085 * k,
                f"{sex}: r {raw:+.2f} \u2192 {cor:+.2f}",
                transform=ax.transAxes,
                fontsize=7.5,
                color=colour,
                va="bottom",
                ha="left",
                bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none", "pad": 1},
            )
    handles = []
    for sex in sexes:
        colour = _sex_colour(sex)
        handles.append(
            plt.Line2D(
                [],
                [],
                marker="o",
                ls="--",
                color=colour,
                mfc="none",
                alpha=0.6,
                label=f"{sex}, before correction",
            )
        )
        handles.append(
            plt.Line2D([], [], marker="o", ls="-", color=colour, label=f"{sex}, after correction")
        )
    fig.legend(
        handles=handles, loc="outside lower center", ncol=len(handles), fontsize=8, frameon=False
    )
    fig.suptitle(
        f"Brain-age delta vs age on the {split} split, per sex, before and after bias correction "
        "(r: correlation with age, before \u2192 after)"
    )
    _save(fig, path)
    return pd.DataFrame(shown)


def mae_bars(metrics: pd.DataFrame, path, split: str = "test") -> list[str]:
    """Test MAE per contrast and ensemble and sex, best first; whiskers span the replicates.
    Returns the contrasts from top to bottom."""
    data = metrics[metrics.split == split].copy()
    order = data.groupby("contrast", sort=False).mae.mean().sort_values()
    contrasts = list(order.index)
    sexes = [s for s in SEX_COLOURS if s in set(data.sex)] + sorted(
        set(data.sex) - set(SEX_COLOURS)
    )
    height = 0.8 / max(1, len(sexes))
    fig, ax = plt.subplots(
        figsize=(8.5, 2.2 + 0.21 * len(contrasts) * max(2, len(sexes))), layout="constrained"
    )
    y = np.arange(len(contrasts))
    top = 0.0
    for k, sex in enumerate(sexes):
        part = data[data.sex == sex].set_index("contrast").reindex(contrasts)
        if part.mae.isna().all():
            continue
        pos = y + (k - (len(sexes) - 1) / 2) * height
        lo = (part.mae - part.mae_replicate_min).clip(lower=0).fillna(0)
        hi = (part.mae_replicate_max - part.mae).clip(lower=0).fillna(0)
        ax.barh(
            pos,
            part.mae,
            height=height * 0.92,
            color=_sex_colour(sex),
            alpha=0.85,
            xerr=np.vstack([lo, hi]),
            capsize=2,
            error_kw={"lw": 0.8},
            label=f"{sex}: MAE of the replicates' mean prediction "
            "(whiskers: range of single replicates)",
        )
        ax.scatter(
            part.mae_mean_age_baseline,
            pos,
            marker="|",
            s=90,
            color="k",
            zorder=3,
            label="predicting the mean age (baseline)" if k == 0 else None,
        )
        for p, m, r, h in zip(pos, part.mae, part.r_predicted_age, hi, strict=True):
            if np.isfinite(m):
                ax.text(m + h + 0.05, p, f"{m:.2f} y, r {r:.2f}", va="center", fontsize=7.5)
        top = max(top, float(np.nanmax(part[["mae", "mae_mean_age_baseline"]].to_numpy())))
        top = max(top, float(np.nanmax((part.mae + hi).to_numpy())))
    ax.set_yticks(y, contrasts, fontsize=9)
    for label in ax.get_yticklabels():
        if label.get_text().startswith("ensemble_"):
            label.set_fontweight("bold")
    ax.invert_yaxis()  # the most accurate at the top
    ax.set_xlim(0, top * 1.3 + 0.5)
    ax.set(
        xlabel=f"{split} MAE (years)",
        title="Brain-age accuracy per contrast and ensemble, most accurate first",
    )
    ax.grid(axis="x", color="0.9")
    ax.set_axisbelow(True)
    fig.legend(fontsize=8, loc="outside lower center", ncol=1, frameon=False)
    _save(fig, path)
    return contrasts


MAX_BACKGROUND_POINTS = 60_000  # non-significant tests drawn per panel; the rest are sampled out


def _threshold_lines(ax, table: pd.DataFrame, alpha: float, significance: str) -> None:
    """-log10 p thresholds of Bonferroni and FDR over all tests (the one used drawn solid)."""
    for line in tables.thresholds(table, alpha, significance):
        ax.axhline(
            line["y"],
            color="k" if line["used"] else "0.45",
            ls="-" if line["used"] else ":",
            lw=1,
            label=f"{line['label']}{' (used)' if line['used'] else ''}",
        )


def _label_top_hits(ax, hits: pd.DataFrame, xlim: tuple[float, float], ymax: float) -> None:
    """Labels of the strongest associations in a row above the points, in the points' x order
    and evenly spaced (so that they never overlap), each with a leader line to its point."""
    if hits.empty:
        return
    hits = hits.sort_values("x")
    width = (xlim[1] - xlim[0]) / len(hits)
    for k, row in enumerate(hits.itertuples()):
        title = str(getattr(row, "title", "") or "") or str(row.nidp)
        title = title if len(title) <= 30 else title[:28] + "..."
        ax.annotate(
            f"{title}\n{row.contrast}, {row.sex}",
            (row.x, row.neglog10_p),
            xytext=(xlim[0] + width * (k + 0.5), ymax * (1.12 + 0.1 * (k % 2))),
            fontsize=6.5,
            ha="center",
            va="bottom",
            arrowprops={"arrowstyle": "-", "color": "0.45", "lw": 0.6, "shrinkB": 3},
            bbox={"facecolor": "white", "alpha": 0.9, "edgecolor": "0.8", "pad": 1.5},
        )


def _category_labels(ax, spans: pd.DataFrame, xlim: tuple[float, float]) -> None:
    """Category names under the x axis, evenly spaced in the categories' order (so that narrow
    neighbours never overlap), each joined by a thin line to the middle of its category."""
    n = len(spans)
    ax.set_xticks([])
    for k, row in enumerate(spans.itertuples()):
        ax.annotate(
            row.category,
            xy=(row.centre, 0),
            xycoords=("data", "axes fraction"),
            xytext=((k + 0.5) / n, -0.07),
            textcoords="axes fraction",
            rotation=40,
            ha="right",
            va="top",
            fontsize=7.5,
            rotation_mode="anchor",
            arrowprops={"arrowstyle": "-", "color": "0.6", "lw": 0.5, "shrinkA": 0, "shrinkB": 0},
        )


def manhattan(
    table: pd.DataFrame,
    path,
    alpha: float = 0.05,
    significance: str = "fdr",
    top_hits: int = 8,
    seed: int = 0,
    contrasts=None,
) -> dict:
    """-log10 p of every test: by nIDP (grouped by FMRIB category) and by contrast.

    Non-significant tests are grey (alternating shades per category; at study scale a random
    sample of at most ``MAX_BACKGROUND_POINTS``, said in the title); significant ones are coloured
    by category, replicated ones ringed in black; the strongest ``top_hits`` nIDPs are labelled.
    """
    data = table.copy()
    for column in ("contrast", "sex", "nidp"):
        data[column] = data[column].astype(str)
    data["category"] = tables.categories(data)
    x, spans = tables.layout(data)
    data["x"] = data.nidp.astype(str).map(x)
    data["_cat"] = data.category.map({c: i for i, c in enumerate(spans.category)})
    spans = spans.rename(columns={"start": "min", "end": "max"})
    significant = tables.significant(data, significance)
    replicated = (
        tables.is_true(data.replicated)
        if "replicated" in data.columns
        else pd.Series(False, index=data.index)
    )
    background = data[~significant]
    shown = len(background)
    if shown > MAX_BACKGROUND_POINTS:
        background = background.sample(MAX_BACKGROUND_POINTS, random_state=seed)
    sig = data[significant].copy()
    sig["replicated"] = replicated[significant]
    sig_cats = tables.category_order(sig.category)
    colour_of = tables.category_colours(data.category)
    contrasts = tables.contrast_order(table, contrasts)
    cx = {c: i for i, c in enumerate(contrasts)}
    rng = np.random.default_rng(seed)
    ymax = max(float(data.neglog10_p.max()) if len(data) else 1.0, 1.0)

    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(13, 10), height_ratios=(1.25, 1), layout="constrained"
    )
    # top: nIDPs along x, grouped by category
    shade = background._cat % 2
    top.scatter(
        background.x,
        background.neglog10_p,
        s=4,
        lw=0,
        rasterized=True,
        color=np.where(shade == 0, "#9a9a9a", "#cdcdcd"),
    )
    for i, row in enumerate(spans.itertuples()):
        if i % 2:
            top.axvspan(row.min - 0.5, row.max + 0.5, color="0.96", zorder=0)
    for c in sig_cats:
        part = sig[sig.category == c]
        top.scatter(part.x, part.neglog10_p, s=16, color=colour_of[c], lw=0, zorder=3)
    rep = sig[sig.replicated]
    top.scatter(
        rep.x,
        rep.neglog10_p,
        s=34,
        facecolors="none",
        edgecolors="k",
        lw=0.8,
        zorder=4,
        label="replicated in half B",
    )
    _threshold_lines(top, data, alpha, significance)
    hits = sig.sort_values("neglog10_p", ascending=False).drop_duplicates("nidp").head(top_hits)
    xlim = (-0.5, max(data.x.max() if len(data) else 0, 0) + 0.5)
    _label_top_hits(top, hits, xlim, ymax)
    top.set_xlim(*xlim)
    _category_labels(top, spans, xlim)
    top.set_ylim(0, ymax * 1.38)
    top.set_ylabel("-log10 p (discovery)")
    sampled = (
        f"; {len(background):,} of {shown:,} non-significant tests drawn"
        if (len(background) < shown)
        else ""
    )
    top.set_title(
        f"Associations of corrected brain-age deltas with nIDPs: {len(data):,} tests, "
        f"{len(sig):,} significant ({tables.METHOD_NAMES.get(significance, significance)} "
        f"< {alpha}), {int(sig.replicated.sum()):,} "
        f"replicated{sampled}",
        fontsize=10,
    )
    top.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)

    # bottom: contrasts along x, tests jittered within each
    jitter = lambda n: rng.uniform(-0.38, 0.38, n)  # noqa: E731
    bottom.scatter(
        background.contrast.map(cx) + jitter(len(background)),
        background.neglog10_p,
        s=4,
        lw=0,
        color="#bdbdbd",
        rasterized=True,
    )
    for c in sig_cats:
        part = sig[sig.category == c]
        bottom.scatter(
            part.contrast.map(cx) + jitter(len(part)),
            part.neglog10_p,
            s=16,
            color=colour_of[c],
            lw=0,
            zorder=3,
            label=c,
        )
    for i in range(1, len(contrasts), 2):
        bottom.axvspan(i - 0.5, i + 0.5, color="0.96", zorder=0)
    _threshold_lines(bottom, data, alpha, significance)
    bottom.set_xticks(
        range(len(contrasts)),
        contrasts,
        rotation=60,
        ha="right",
        fontsize=8 if len(contrasts) <= 30 else 6.5,
    )
    bottom.set_xlim(-0.6, len(contrasts) - 0.4)
    bottom.set_ylim(0, ymax * 1.1)
    bottom.set_ylabel("-log10 p (discovery)")
    bottom.set_title(
        "The same tests per contrast; colour: FMRIB category of significant tests", fontsize=10
    )
    if sig_cats:
        bottom.legend(
            fontsize=7,
            loc="upper left",
            bbox_to_anchor=(1.0, 1.0),
            frameon=False,
            title="category",
            title_fontsize=8,
        )
    _save(fig, path)
    return {
        "tests": len(data),
        "significant": len(sig),
        "replicated": int(sig.replicated.sum()),
        "background_drawn": len(background),
        "labelled": hits.nidp.tolist(),
        "categories": spans.category.tolist(),
        "contrasts": contrasts,
    }


def significance_heatmap(
    table: pd.DataFrame, path, significance: str = "fdr", alpha: float | None = None, contrasts=None
) -> pd.DataFrame:
    """Distinct nIDP fields with a significant association per contrast and FMRIB category.

    ``significance`` picks the column ``significant_<significance>`` (the config's
    ``associations.significance``). A field counts once per contrast however many of its
    instances, array entries, categorical levels and groups (sexes) are significant. Returns
    the counts (contrasts x categories).
    """
    data = table[tables.significant(table, significance)].copy()
    data["contrast"] = data.contrast.astype(str)
    data["category"] = tables.categories(data)
    data["_field"] = tables.field_key(data)
    contrasts = tables.contrast_order(table, contrasts)
    counts = (
        data.drop_duplicates(["contrast", "category", "_field"])
        .pipe(lambda d: pd.crosstab(d.contrast, d.category))
        .reindex(index=contrasts, fill_value=0)
    )
    if counts.shape[1] == 0:
        counts = pd.DataFrame({"(none significant)": 0}, index=contrasts)
    counts = counts[counts.sum().sort_values(ascending=False).index]
    values = counts.to_numpy()
    vmax = max(int(values.max()), 1)
    fig, ax = plt.subplots(
        figsize=(max(6, 0.55 * counts.shape[1] + 3.5), 0.34 * len(contrasts) + 2.4),
        layout="constrained",
    )
    cmap = plt.get_cmap("Blues")
    shown = np.where(values > 0, 0.25 + 0.6 * values / vmax, 0.0)  # zero stays white
    ax.imshow(shown, cmap=cmap, vmin=0, vmax=1, aspect="auto")
    for (i, j), v in np.ndenumerate(values):
        if v:
            dark = shown[i, j] > 0.6
            ax.text(
                j,
                i,
                str(v),
                ha="center",
                va="center",
                fontsize=7.5,
                color="white" if dark else "black",
            )
    ax.set_xticks(range(counts.shape[1]), counts.columns, rotation=40, ha="right", fontsize=8)
    ax.set_yticks(
        range(len(contrasts)),
        [f"{c} ({t})" for c, t in zip(contrasts, counts.sum(axis=1), strict=True)],
        fontsize=7.5,
    )
    ax.set_xticks(np.arange(-0.5, counts.shape[1]), minor=True)
    ax.set_yticks(np.arange(-0.5, len(contrasts)), minor=True)
    ax.grid(which="minor", color="0.85", lw=0.5)
    ax.tick_params(which="minor", length=0)
    what = significance.upper() if significance == "fdr" else significance.capitalize()
    ax.set_title(
        f"nIDP fields significantly associated ({what}"
        f"{f' < {alpha}' if alpha is not None else ''}) per contrast and FMRIB category\n"
        "a field counts once across instances, levels and sexes; row label: the contrast's total",
        fontsize=9,
    )
    _save(fig, path)
    return counts


def _truthy(values: pd.Series) -> np.ndarray:
    """True for True/1/yes/a non-empty reason; False for False/0/no/empty/missing."""
    text = values.fillna("").astype(str).str.strip().str.lower()
    return (~text.isin(["", "false", "0", "0.0", "no", "nan", "none"])).to_numpy()


MARKED_COLUMNS = ("restarted", "stuck")  # per-epoch columns of metrics.tsv that the plot marks


def training_curves(histories: dict, path, title: str) -> dict:
    """Train and validation MAE per epoch for each replicate network.

    Epochs are integers on the axis. The y range is set by the bulk of the values (a spike in
    one epoch does not squash the others); values above it are drawn at the top edge with
    their value. Where a history has a ``restarted`` or ``stuck`` column (truthy from that
    epoch), the epoch is marked and the replicate named so in the legend. A replicate restarted
    because it was stuck (metrics.tsv columns ``attempt``, ``restarted``) shows its abandoned
    attempts as dotted validation curves ending in an x (their epochs count from 1 again); the
    solid and dashed curves are the attempt it kept.
    """
    fig, ax = plt.subplots(figsize=(7.6, 4.2), layout="constrained")
    colours = plt.get_cmap("tab10")
    values = np.concatenate(
        [np.r_[h.train_mae.to_numpy(float), h.val_mae.to_numpy(float)] for h in histories.values()]
        or [np.zeros(0)]
    )
    values = values[np.isfinite(values)]
    if len(values):
        bulk = np.percentile(values, 90)
        upper = max(bulk * 1.35, np.percentile(values, 50) * 2)
        upper = min(upper, values.max() * 1.05)
    else:
        upper = 1.0
    handles, marks, restarts = [], {}, {}
    for i, (name, h) in enumerate(histories.items()):
        colour = colours(i % 10)
        label = name
        attempts = h["attempt"] if "attempt" in h.columns else pd.Series(1, index=h.index)
        for column in MARKED_COLUMNS:
            if column in h.columns and _truthy(h[column]).any():
                marked = h.epoch.to_numpy()[_truthy(h[column])]
                marks.setdefault(name, {})[column] = [int(e) for e in marked]
                first = int(marked[0])
                label = f"{name} ({column} at epoch {', '.join(str(int(e)) for e in marked)})"
                if attempts.nunique() > 1:  # the abandoned attempts are drawn instead
                    continue
                for epoch in marked:
                    ax.axvline(epoch, color=colour, ls=":", lw=1.2)
                ax.text(
                    first,
                    upper * 0.98,
                    f" {column}",
                    color=colour,
                    fontsize=7,
                    va="top",
                    rotation=90,
                )
        abandoned = sorted(set(attempts))[:-1]
        if abandoned:
            label = f"{name} (stuck: restarted {len(abandoned)}x)"
            restarts[name] = len(abandoned)
        for attempt in abandoned:
            old = h[attempts == attempt]
            ax.plot(old.epoch, old.val_mae.clip(upper=upper), color=colour, ls=":", lw=1)
            ax.scatter(
                old.epoch.iloc[-1], min(old.val_mae.iloc[-1], upper), color=colour, marker="x"
            )
        h = h[attempts == attempts.max()]
        ax.plot(
            h.epoch,
            h.train_mae.clip(upper=upper),
            color=colour,
            ls="--",
            lw=1,
            label="_nolegend_",
        )
        ax.plot(
            h.epoch, h.val_mae.clip(upper=upper), color=colour, lw=1.6, label=f"{label} validation"
        )
        for column in ("train_mae", "val_mae"):
            off = h[h[column] > upper]
            ax.scatter(
                off.epoch,
                np.full(len(off), upper),
                marker="^",
                color=colour,
                s=22,
                zorder=4,
                clip_on=False,
            )
            for e, v in zip(off.epoch, off[column], strict=True):
                ax.annotate(
                    f"{v:.0f}",
                    (e, upper),
                    xytext=(3, -9),
                    textcoords="offset points",
                    fontsize=6.5,
                    color=colour,
                )
        handles.append(plt.Line2D([], [], color=colour, lw=2.5, label=label))
        best = h[h.best.astype(str) == "True"]
        if len(best):
            ax.scatter(
                best.epoch.iloc[-1],
                best.val_mae.iloc[-1],
                color=colour,
                zorder=5,
                edgecolors="k",
                s=30,
            )
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_ylim(0, upper)
    ax.set(
        xlabel="epoch",
        ylabel="MAE (years)",
        title=f"{title} (dot: the kept epoch; \u25b2: off the scale)",
    )
    ax.grid(color="0.92")
    handles += [
        plt.Line2D([], [], color="0.3", ls="-", lw=1.6, label="validation"),
        plt.Line2D([], [], color="0.3", ls="--", lw=1, label="training"),
    ]
    if any("attempt" in h.columns and h.attempt.nunique() > 1 for h in histories.values()):
        handles.append(
            plt.Line2D(
                [], [], color="0.3", ls=":", lw=1, marker="x", label="abandoned (stuck) attempt"
            )
        )
    fig.legend(handles=handles, fontsize=7.5, loc="outside right upper", frameon=False)
    _save(fig, path)
    return {
        "ylim": float(upper),
        "xticks": ax.get_xticks().tolist(),
        "marked": marks,
        "restarts": restarts,
    }


def uncertainty_calibration(table: pd.DataFrame, bins: pd.DataFrame, path) -> None:
    """Left: mean |corrected delta| per fifth of the replicate spread (fifths within each
    contrast and sex, then averaged over contrasts), per sex. Right: Spearman's rho of spread
    and |corrected delta| per contrast and sex, with 95% intervals."""
    order = table.groupby("contrast", sort=False).spearman_rho.mean().sort_values().index.tolist()
    fig, (left, right) = plt.subplots(
        1,
        2,
        figsize=(12, max(4.2, 1.5 + 0.3 * len(order))),
        width_ratios=(1, 1.25),
        layout="constrained",
    )
    if table.empty:
        for ax in (left, right):
            ax.text(0.5, 0.5, "no replicate spread (fewer than 2 replicates)", ha="center")
            ax.axis("off")
        _save(fig, path)
        return
    sexes = [s for s in SEX_COLOURS if s in set(table.sex)]
    for sex in sexes:
        part = bins[bins.sex == sex].groupby("fifth")
        mean, sem = part.mae.mean(), part.mae.sem().fillna(0)
        left.errorbar(
            mean.index,
            mean,
            yerr=1.96 * sem,
            marker="o",
            capsize=3,
            color=_sex_colour(sex),
            label=sex,
        )
    left.set_xticks(range(1, 6), ["1\nsmallest", "2", "3", "4", "5\nlargest"])
    left.set(
        xlabel="fifth of the replicate spread (within each contrast and sex)",
        ylabel="mean |corrected delta| (years)",
        title="Error per fifth of the spread, mean over contrasts (bars: 95% CI)",
    )
    left.set_ylim(bottom=0)
    left.grid(color="0.92")
    left.legend(fontsize=8)
    y = {c: i for i, c in enumerate(order)}
    offsets = {s: (k - (len(sexes) - 1) / 2) * 0.25 for k, s in enumerate(sexes)}
    for sex in sexes:
        part = table[table.sex == sex]
        pos = part.contrast.map(y) + offsets[sex]
        right.errorbar(
            part.spearman_rho,
            pos,
            xerr=[part.spearman_rho - part.rho_low, part.rho_high - part.spearman_rho],
            fmt="o",
            ms=4,
            capsize=2,
            lw=0.8,
            color=_sex_colour(sex),
            label=sex,
        )
    right.axvline(0, color="0.3", lw=0.8)
    right.set_yticks(range(len(order)), order, fontsize=8)
    right.set(
        xlabel="Spearman rho: replicate spread vs |corrected delta|",
        title="Per contrast and sex, test split (95% intervals)",
    )
    right.grid(axis="x", color="0.92")
    right.legend(fontsize=8, loc="lower right")
    fig.suptitle(
        "Per-subject uncertainty: does a larger spread of the replicate networks' "
        "predictions mean a larger error?"
    )
    _save(fig, path)
