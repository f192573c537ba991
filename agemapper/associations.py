"""Associations of brain-age deltas with nIDPs: deconfounded Pearson correlations, exactly.

For every delta (contrast) and nIDP, both are deconfounded (regressed on the confounds with an
intercept) within the subjects that have that nIDP, and correlated: this is the partial
correlation, whose t statistic ``r * sqrt(df / (1 - r^2))`` with ``df = n - rank(Z) - 1`` equals
the OLS t statistic of the delta in ``nidp ~ delta + confounds``.

The computation is vectorised over all nIDPs and contrasts at once. With ``M`` the (subjects x
nIDPs) availability mask, every quantity is a masked cross-product, e.g. ``Z'Z`` per nIDP is
``M' (Z * Z)``, ``Z'd`` is ``M' (Z * d)``; one batched pseudo-inverse per nIDP then gives the
residual cross-products ``d'Rd``, ``d'Ry`` and ``y'Ry``. Inputs are centred and scaled first so
the normal equations stay well conditioned.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from scipy import special, stats

log = logging.getLogger(__name__)


def design_matrix(
    frame: pd.DataFrame, columns, categorical=(), add_age2: bool = True
) -> tuple[np.ndarray, list[str]]:
    """Confound matrix (subjects x k, intercept first), standardised, categorical -> dummies."""
    parts, names = [np.ones((len(frame), 1))], ["intercept"]
    for col in columns:
        values = frame[col]
        if col in categorical:
            levels = sorted(values.dropna().unique(), key=str)
            for level in levels[1:]:  # first level is the reference
                parts.append((values == level).to_numpy(float)[:, None])
                names.append(f"{col}={level}")
            continue
        x = values.to_numpy(float)
        sd = x.std()
        parts.append(((x - x.mean()) / (sd if sd > 0 else 1.0))[:, None])
        names.append(col)
    Z = np.hstack(parts)
    if add_age2 and "age" in columns:
        a = Z[:, names.index("age")]
        a2 = a**2 - (a**2).mean()
        # orthogonalise against age for conditioning (same column space)
        a2 = a2 - a * (a @ a2) / max(a @ a, 1e-12)
        sd = a2.std()
        Z = np.hstack([Z, (a2 / (sd if sd > 0 else 1.0))[:, None]])
        names.append("age^2")
    return Z, names


def _pinv_batched(A: np.ndarray, rtol: float = 1e-10) -> tuple[np.ndarray, np.ndarray]:
    """Pseudo-inverses and ranks of a stack of symmetric PSD matrices."""
    w, V = np.linalg.eigh(A)
    cutoff = rtol * np.maximum(w.max(axis=-1, keepdims=True), 1e-300)
    keep = w > cutoff
    inv_w = np.where(keep, 1.0 / np.where(keep, w, 1.0), 0.0)
    return (V * inv_w[..., None, :]) @ np.swapaxes(V, -1, -2), keep.sum(axis=-1)


def partial_correlations(
    D: np.ndarray, Y: np.ndarray, Z: np.ndarray, chunk: int = 2048
) -> dict[str, np.ndarray]:
    """Deconfounded r, t, df, n for every pair (delta column c, nIDP column j).

    ``D``: subjects x C deltas (complete); ``Y``: subjects x J nIDPs (NaN = missing);
    ``Z``: subjects x k confounds (complete, intercept included). Returns arrays of shape (C, J).
    """
    n, C = D.shape
    J = Y.shape[1]
    k = Z.shape[1]
    D = (D - D.mean(0)) / np.where(D.std(0) > 0, D.std(0), 1.0)
    M = ~np.isnan(Y)
    mu = np.nanmean(np.where(M, Y, np.nan), axis=0) if J else np.zeros(0)
    sd = np.nanstd(np.where(M, Y, np.nan), axis=0) if J else np.zeros(0)
    Yc = np.where(M, (Y - mu) / np.where(sd > 0, sd, 1.0), 0.0)
    Mf = M.astype(float)
    ZZ = (Z[:, :, None] * Z[:, None, :]).reshape(n, k * k)
    ZD = (Z[:, :, None] * D[:, None, :]).reshape(n, k * C)
    out = {key: np.full((C, J), np.nan) for key in ("r", "t", "df", "n")}
    for s in range(0, J, chunk):
        sl = slice(s, min(s + chunk, J))
        m, y = Mf[:, sl], Yc[:, sl]
        nj = m.sum(0)
        G = (m.T @ ZZ).reshape(-1, k, k)  # J x k x k
        Gi, rank = _pinv_batched(G)
        zy = y.T @ Z  # J x k
        zd = (m.T @ ZD).reshape(-1, k, C)  # J x k x C
        dd = m.T @ (D * D)  # J x C
        dy = y.T @ D  # J x C
        yy = (y * y).sum(0)  # J
        Gzd = Gi @ zd  # J x k x C
        Gzy = np.einsum("jab,jb->ja", Gi, zy)
        dRd = dd - np.einsum("jkc,jkc->jc", zd, Gzd)
        dRy = dy - np.einsum("jkc,jk->jc", zd, Gzy)
        yRy = yy - np.einsum("jk,jk->j", zy, Gzy)
        denom = np.sqrt(np.clip(dRd, 0, None) * np.clip(yRy, 0, None)[:, None])
        with np.errstate(invalid="ignore", divide="ignore"):
            r = np.where(denom > 1e-12 * np.maximum(nj, 1)[:, None], dRy / denom, np.nan)
        r = np.clip(r, -1.0, 1.0)
        df = (nj - rank - 1).astype(float)
        df = np.where(df > 0, df, np.nan)
        with np.errstate(invalid="ignore", divide="ignore"):
            t = r * np.sqrt(df[:, None] / np.clip(1.0 - r * r, 1e-300, None))
        out["r"][:, sl] = r.T
        out["t"][:, sl] = t.T
        out["df"][:, sl] = np.broadcast_to(df[:, None], r.shape).T
        out["n"][:, sl] = np.broadcast_to(nj[:, None], r.shape).T
    return out


def _t_logsf_tail(t: np.ndarray, df: np.ndarray) -> np.ndarray:
    """log P(T > t) from the incomplete beta function, for large t (where sf underflows).

    sf = I_x(df/2, 1/2) / 2 with x = df / (df + t^2), and
    I_x(a, b) = x^a (1 - x)^b / (a B(a, b)) * 2F1(a + b, 1; a + 1; x) exactly.
    """
    a, b = df / 2.0, 0.5
    x = df / (df + t**2)
    return (
        np.log(0.5)
        + a * np.log(x)
        + b * np.log1p(-x)
        - np.log(a)
        - special.betaln(a, b)
        + np.log(special.hyp2f1(a + b, 1.0, a + 1.0, x))
    )


def _t_logsf(t: np.ndarray, df: np.ndarray) -> np.ndarray:
    """log P(T > t) for t >= 0, finite even where the p-value underflows double precision."""
    t, df = np.broadcast_arrays(np.asarray(t, float), np.asarray(df, float))
    out = np.array(stats.t.logsf(t, df), dtype=float)
    deep = (~np.isfinite(out) | (out < -600)) & np.isfinite(t) & np.isfinite(df)
    if deep.any():
        out[deep] = _t_logsf_tail(t[deep], df[deep])
    return out


def p_values(t: np.ndarray, df: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided p and -log10 p (exact far into the tail, where p itself underflows)."""
    log_p = np.minimum(np.log(2.0) + _t_logsf(np.abs(t), df), 0.0)
    return np.exp(log_p), -log_p / np.log(10.0)


def bonferroni(p: np.ndarray) -> np.ndarray:
    return np.minimum(p * np.count_nonzero(~np.isnan(p)), 1.0)


def fdr_bh(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (q-values); NaN stays NaN."""
    p = np.asarray(p, float)
    q = np.full_like(p, np.nan)
    ok = ~np.isnan(p)
    pv = p[ok]
    m = len(pv)
    if m == 0:
        return q
    order = np.argsort(pv)
    ranked = pv[order] * m / np.arange(1, m + 1)
    ranked = np.minimum.accumulate(ranked[::-1])[::-1]
    adj = np.empty(m)
    adj[order] = np.minimum(ranked, 1.0)
    q[ok] = adj
    return q


def associate(
    deltas: pd.DataFrame,
    nidps: pd.DataFrame,
    confounds: pd.DataFrame,
    confound_columns,
    categorical_confounds=(),
    groups=("female", "male"),
    split: str = "test",
    min_subjects: int = 50,
    delta_column: str = "delta_corrected",
) -> pd.DataFrame:
    """Association table for every group x contrast x nIDP (before multiple-comparison control).

    ``deltas``: long table (subject, sex, split, half, age, contrast, delta_corrected, ...).
    ``nidps``: numeric matrix indexed by subject. ``confounds``: table indexed by subject.
    ``groups``: sexes, and/or ``pooled`` (both sexes, with sex as a confound).
    """
    test = deltas[deltas.split == split]
    frames = []
    for group in groups:
        part = test if group == "pooled" else test[test.sex == group]
        if part.empty:
            continue
        wide = part.pivot_table(index="subject", columns="contrast", values=delta_column)
        info = part.drop_duplicates("subject").set_index("subject")[["sex", "age"]]
        conf_cols = ["age", *confound_columns] + (["sex"] if group == "pooled" else [])
        frame = info.join(confounds, how="left")
        frame["sex"] = (frame["sex"] == "male").astype(float)
        missing_conf = frame[conf_cols].isna().any(axis=1)
        if missing_conf.any():
            log.warning(
                "%s: %d subjects lack confounds (%s) and are left out, e.g. %s",
                group,
                int(missing_conf.sum()),
                ", ".join(conf_cols),
                ", ".join(frame.index[missing_conf][:3]),
            )
        frame = frame[~missing_conf]
        # contrasts can cover different subjects (e.g. after QC): one pass per subject set
        patterns = wide.reindex(frame.index).notna()
        subsets: dict[bytes, list] = {}
        for contrast in patterns.columns:
            subsets.setdefault(patterns[contrast].to_numpy().tobytes(), []).append(contrast)
        for contrasts in subsets.values():
            rows = patterns.index[patterns[contrasts[0]].to_numpy()]
            Z, _ = design_matrix(frame.loc[rows], conf_cols, categorical_confounds)
            D = wide.loc[rows, contrasts].to_numpy(float)
            Y = nidps.reindex(rows).to_numpy(float)
            res = partial_correlations(D, Y, Z)
            C, J = res["r"].shape
            frames.append(
                pd.DataFrame(
                    {
                        "contrast": np.repeat(contrasts, J),
                        "sex": group,
                        "nidp": np.tile(nidps.columns.to_numpy(), C),
                        "n": res["n"].ravel(),
                        "r": res["r"].ravel(),
                        "t": res["t"].ravel(),
                        "df": res["df"].ravel(),
                    }
                )
            )
    columns = ["contrast", "sex", "nidp", "n", "r", "t", "df"]
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
    ok = (table.n >= min_subjects) & table.r.notna() & table.t.notna() & table.df.notna()
    table = table[ok].reset_index(drop=True)
    table["n"] = table.n.astype(int)
    table["df"] = table.df.astype(int)
    return table


def add_significance(table: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """p, -log10 p, Bonferroni and BH-FDR over all tests in the table; sorted by p."""
    table = table.copy()
    p, nl = p_values(table.t.to_numpy(float), table.df.to_numpy(float))
    table["p"] = p
    table["neglog10_p"] = nl
    table["p_bonferroni"] = bonferroni(p)
    table["p_fdr"] = fdr_bh(p)
    table["significant_bonferroni"] = table.p_bonferroni < alpha
    table["significant_fdr"] = table.p_fdr < alpha
    return table.sort_values(["neglog10_p"], ascending=False, kind="stable").reset_index(drop=True)


OUTPUT_COLUMNS = [
    "contrast",
    "sex",
    "nidp",
    "field",
    "title",
    "category",
    "n",
    "r",
    "t",
    "df",
    "p",
    "neglog10_p",
    "p_bonferroni",
    "p_fdr",
    "significant_bonferroni",
    "significant_fdr",
]


def run_associations(
    deltas_path, nidps_path, confounds_path, cfg: dict, out_all, out_sig, out_dropped
) -> pd.DataFrame:
    """The association stage from files to files (see the ``associations:`` config)."""
    from .io import write_table
    from .nidps import labels, prepare, read_subject_table

    deltas = pd.read_csv(deltas_path, dtype={"subject": str, "half": str})
    deltas["half"] = deltas["half"].fillna("")
    raw = read_subject_table(nidps_path, "nIDP table")
    matrix, dropped = prepare(
        raw, int(cfg.get("min_subjects", 50)), cfg.get("categorical_fields", ())
    )
    confounds = read_subject_table(confounds_path, "confound table")
    missing = [c for c in cfg["confounds"] if c not in confounds.columns]
    if missing:
        from .errors import InputDataError

        raise InputDataError(
            f"confound column(s) {missing} named in the config are not in the table "
            f"(it has {list(confounds.columns)})",
            path=confounds_path,
        )
    confounds = confounds[~confounds.index.duplicated(keep="first")]
    log.info(
        "%d nIDP columns (from %d) x %d contrasts; %d dropped",
        matrix.shape[1],
        raw.shape[1],
        deltas.contrast.nunique(),
        len(dropped),
    )
    table = associate(
        deltas,
        matrix,
        confounds,
        cfg["confounds"],
        cfg.get("categorical_confounds", ()),
        groups=cfg["groups"],
        min_subjects=int(cfg.get("min_subjects", 50)),
    )
    table = add_significance(table, float(cfg.get("alpha", 0.05)))
    table = table.merge(labels(table.nidp.unique()), on="nidp", how="left")[OUTPUT_COLUMNS]
    flag = (
        "significant_fdr" if cfg.get("significance", "fdr") == "fdr" else "significant_bonferroni"
    )
    significant = table[table[flag]]
    write_table(out_all, table)
    write_table(out_sig, significant)
    write_table(out_dropped, dropped)
    log.info("%d tests, %d significant (%s)", len(table), len(significant), flag)
    return table
