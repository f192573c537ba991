"""How well the workflow recovers the synthetic cohort's ground truth.

- brain age: test MAE of the replicate ensemble per contrast and sex beside the mean-age
  baseline; correlation of corrected deltas with age (should be ~0) and with the true latent
  deltas (should be clearly positive);
- associations: a (nIDP field, contrast) pair is *planted* when the field's driver is part of
  that contrast's latent delta (the shared part drives every contrast, a family part the
  contrasts of that family). Sensitivity = planted pairs found significant / planted pairs;
  false discovery proportion = significant rows that are not planted / significant rows.
  Both are given for the discoveries (test half A, after correction) and, where the table has
  a ``replicated`` column, for the discoveries that replicated in half B.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from agemapper.stats.correlation import pearson
from agemapper.stats.nidps import parse_column
from agemapper.synth.cohort import family_of


def brain_age(deltas: pd.DataFrame, metrics: pd.DataFrame, truth: pd.DataFrame) -> pd.DataFrame:
    test = deltas[deltas.split == "test"].merge(
        truth[["subject", "contrast", "true_delta"]], on=["subject", "contrast"], how="left"
    )
    rows = []
    for (contrast, sex), g in test.groupby(["contrast", "sex"], sort=False):
        m = metrics[
            (metrics.contrast == contrast) & (metrics.sex == sex) & (metrics.split == "test")
        ]
        has_truth = g.true_delta.notna().all()
        rows.append(
            {
                "contrast": contrast,
                "sex": sex,
                "n": len(g),
                "mae": float(g.delta.abs().mean()),
                "mae_mean_age_baseline": float(m.mae_mean_age_baseline.iloc[0])
                if len(m)
                else np.nan,
                "r_delta_corrected_age": pearson(g.delta_corrected, g.age),
                "r_delta_corrected_true": pearson(g.delta_corrected, g.true_delta)
                if has_truth
                else np.nan,
                # the estimation error (corrected - true delta) is what the correction
                # de-biases; unlike the delta itself it does not inherit the sample's chance
                # correlation between true deltas and age
                "r_error_age": pearson(g.delta_corrected - g.true_delta, g.age)
                if has_truth
                else np.nan,
            }
        )
    return pd.DataFrame(rows)


def pooled_age_correlation(deltas: pd.DataFrame) -> pd.Series:
    """r(corrected delta, age) per contrast on the test split, both sexes together."""
    test = deltas[deltas.split == "test"]
    return pd.Series(
        {c: pearson(g.delta_corrected, g.age) for c, g in test.groupby("contrast", sort=False)}
    )


def planted_pairs(planted: pd.DataFrame, contrasts) -> pd.DataFrame:
    """(field, contrast) pairs whose nIDP is driven by part of that contrast's latent delta."""
    rows = []
    for _, rec in planted.iterrows():
        driver = str(rec["driver"]) if pd.notna(rec["driver"]) else ""
        for c in contrasts:
            try:
                fam = family_of(c)
            except ValueError:  # ensembles and other derived rows: driven by the shared part only
                fam = None
            hit = driver == "shared" or (fam is not None and driver == f"family:{fam}")
            if hit:
                rows.append({"field": int(rec["field"]), "contrast": c, "driver": driver})
    return pd.DataFrame(rows, columns=["field", "contrast", "driver"]).drop_duplicates()


def associations(
    significant: pd.DataFrame, planted: pd.DataFrame, contrasts
) -> tuple[dict, pd.DataFrame]:
    pairs = planted_pairs(planted, contrasts)
    sig = significant.copy()
    sig["field"] = [parse_column(c)["field"] for c in sig.nidp]
    key = set(zip(pairs.field, pairs.contrast, strict=True))
    sig["planted"] = [(f, c) in key for f, c in zip(sig.field, sig.contrast, strict=True)]
    found = set(zip(sig.field[sig.planted], sig.contrast[sig.planted], strict=True))
    pairs["found"] = [(f, c) in found for f, c in zip(pairs.field, pairs.contrast, strict=True)]
    n_sig = len(sig)
    summary = {
        "planted_pairs": len(pairs),
        "planted_found": int(pairs.found.sum()),
        "sensitivity": float(pairs.found.mean()) if len(pairs) else float("nan"),
        "significant_rows": n_sig,
        "false_rows": int((~sig.planted).sum()),
        "false_discovery_proportion": float((~sig.planted).mean()) if n_sig else 0.0,
    }
    return summary, pairs


def best_single_and_ensemble(brain: pd.DataFrame) -> tuple[tuple, tuple]:
    """(name, MAE) of the best single contrast and of the best ensemble (mean over sexes)."""
    mae = brain.groupby("contrast", sort=False).mae.mean()
    is_ens = mae.index.str.startswith("ensemble_")
    single = (mae[~is_ens].idxmin(), float(mae[~is_ens].min())) if (~is_ens).any() else None
    ens = (mae[is_ens].idxmin(), float(mae[is_ens].min())) if is_ens.any() else None
    return single, ens


def association_summaries(significant: pd.DataFrame, planted: pd.DataFrame, contrasts) -> dict:
    """``associations`` of the discoveries and, with replication, of the replicated rows."""
    out = {"discoveries": associations(significant, planted, contrasts)[0]}
    if "replicated" in significant.columns:
        replicated = significant[significant.replicated.astype(bool)]
        out["replicated"] = associations(replicated, planted, contrasts)[0]
    return out


REPORT_COLUMNS = [
    "contrast",
    "sex",
    "n",
    "mae",
    "mae_mean_age_baseline",
    "r_delta_corrected_age",
    "r_error_age",
    "r_delta_corrected_true",
]


def report(brain: pd.DataFrame, assoc: dict, pooled: pd.Series | None = None) -> str:
    """The text report; ``assoc``: one ``associations`` summary, or ``association_summaries``."""
    lines = ["Brain age on the test split (replicate ensemble), against the synthetic truth:"]
    lines.append(brain[REPORT_COLUMNS].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if pooled is not None:
        lines.append(
            "r(corrected delta, age), test split, both sexes: "
            + ", ".join(f"{c} {r:+.3f}" for c, r in pooled.items())
        )
    single, ens = best_single_and_ensemble(brain)
    if single and ens:
        verdict = "lower" if ens[1] < single[1] else "NOT lower"
        lines.append(
            f"Best single contrast {single[0]}: test MAE {single[1]:.3f}; best ensemble "
            f"{ens[0]}: {ens[1]:.3f} ({verdict} than the best single contrast; means over sexes)"
        )
    lines.append("")
    named = assoc if "discoveries" in assoc else {"": assoc}
    what = {"discoveries": " (discoveries, test half A)", "replicated": " (replicated in half B)"}
    for name, summary in named.items():
        lines.append(
            "Associations{what}: {planted_found}/{planted_pairs} planted (field, contrast) pairs "
            "found (sensitivity {sensitivity:.2f}); {false_rows} of {significant_rows} rows not "
            "planted (false discovery proportion {false_discovery_proportion:.2f})".format(
                what=what.get(name, ""), **summary
            )
        )
    return "\n".join(lines)


def page(text: str, brain: pd.DataFrame, assoc: dict) -> str:
    """The evaluation as an HTML page for the report, under the synthetic-cohort banner."""
    from agemapper.report import pages

    named = assoc if "discoveries" in assoc else {"discoveries": assoc}
    recovery = pd.DataFrame([{"associations": name, **summary} for name, summary in named.items()])
    body = (
        "<p>The demo's cohort is synthetic: every subject's true brain-age delta and every "
        "planted nIDP association are known. This page compares the workflow's results with "
        "that truth: brain-age accuracy against the mean-age baseline, the corrected delta's "
        "correlation with age (should be about 0) and with the true delta (should be clearly "
        "positive), and the recovery of the planted associations.</p>"
        "<h2>Brain age on the test split</h2>"
        '<p><input type="search" class="filter" placeholder="filter rows"> '
        '<span class="count"></span></p>'
        + pages.html_table(brain[REPORT_COLUMNS], digits=3)
        + "<h2>Planted associations recovered</h2>"
        + pages.html_table(recovery, digits=3)
        + f'<h2>The evaluation as text</h2><pre class="report">{pages.escape(text)}</pre>'
    )
    return pages.page(
        "Synthetic cohort: the results against the ground truth",
        body,
        synthetic=True,
        script=pages.table_script(),
    )
