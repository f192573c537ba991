"""Associations of brain-age deltas with nIDPs: deconfounded Pearson correlations, exactly.

For every delta (contrast) and nIDP, both are deconfounded (regressed on the confounds with an
intercept) within the subjects that have that nIDP, and correlated: this is the partial
correlation, whose t statistic ``r * sqrt(df / (1 - r^2))`` with ``df = n - rank(Z) - 1`` equals
the OLS t statistic of the delta in ``nidp ~ delta + confounds``; p is two-sided, from the t
distribution with ``df`` degrees of freedom (exact far into the tail, see ``p_values``).

The computation is vectorised over all nIDPs and contrasts at once (``partial_correlations``):
one BLAS matrix product per chunk of nIDPs gives every per-nIDP Gram matrix and cross-product,
batched small solves give the residual sums of squares; no loop over pairs.

Discovery and replication (``discover_and_replicate``): the tests are run on test half A
(discovery, with Bonferroni and Benjamini-Hochberg FDR over all of its tests) and, separately, on
half B (replication); the rule that marks an association *replicated* is stated there.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from scipy import special, stats
from statsmodels.stats.multitest import multipletests

log = logging.getLogger(__name__)

KEYS = ["contrast", "sex", "nidp"]


def design_matrix(
    frame: pd.DataFrame, columns, categorical=(), add_age2: bool = True
) -> tuple[np.ndarray, list[str]]:
    """Confound matrix (subjects x k, intercept first), standardised, categorical -> dummies."""
    parts, names = [np.ones((len(frame), 1))], ["intercept"]
    for col in columns:
        values = frame[col]
        if col in categorical:  # one 0/1 column per level but the first (the reference)
            levels = values.astype(str).where(values.notna())  # sorted as text; NaN: all 0
            dummies = pd.get_dummies(levels, prefix=col, prefix_sep="=", drop_first=True)
            parts.append(dummies.to_numpy(float))
            names += list(dummies.columns)
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


def whiten(G: np.ndarray, rtol: float = 1e-10) -> tuple[np.ndarray, np.ndarray]:
    """Whitening matrices ``W`` with ``W'W = G^+`` and ranks, for a stack of Gram matrices.

    ``G``: (P, k, k) symmetric positive semi-definite. Each matrix is judged on its own: when a
    Cholesky pivot (of ``G`` plus a 1e-13 relative jitter, so that the factorisation exists) is
    below ``rtol`` times the largest diagonal element, some confounds are collinear within that
    subset (a site absent, say) and the eigen-decomposition is used, eigenvalues below ``rtol``
    times the largest counting as zero (``W = diag(w^-1/2) V'`` on the kept ones: the
    Moore-Penrose pseudo-inverse). Otherwise ``W = L^-1`` from the Cholesky factor of ``G``.
    """
    P, k, _ = G.shape
    W = np.zeros_like(G)
    rank = np.full(P, k, dtype=np.intp)
    if P == 0:
        return W, rank
    scale = np.maximum(np.einsum("pii->pi", G).max(axis=1), 1e-300)
    good = np.zeros(P, dtype=bool)
    try:
        jittered = G + (1e-13 * scale)[:, None, None] * np.eye(k)
        pivots = np.einsum("pii->pi", np.linalg.cholesky(jittered)) ** 2
        good = (pivots > rtol * scale[:, None]).all(axis=1)
        if good.any():
            W[good] = np.linalg.inv(np.linalg.cholesky(G[good]))
    except np.linalg.LinAlgError:  # not even positive semi-definite numerically: all by eigh
        good[:] = False
    bad = ~good
    if bad.any():
        w, V = np.linalg.eigh(G[bad])
        keep = w > rtol * np.maximum(w.max(axis=-1, keepdims=True), 1e-300)
        inv_sqrt = np.where(keep, 1.0 / np.sqrt(np.where(keep, w, 1.0)), 0.0)
        W[bad] = inv_sqrt[:, :, None] * np.swapaxes(V, -1, -2)
        rank[bad] = keep.sum(axis=-1)
    return W, rank


def missingness_patterns(available: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct availability patterns of the rows of a (nIDPs x subjects) boolean mask.

    Returns ``first`` (a row holding each pattern) and ``inverse`` (each row's pattern), so
    ``available[first[inverse]] == available``. The binarised levels of one categorical field,
    or the fields of one questionnaire, share a pattern; everything that depends on the mask
    alone is computed once per pattern.
    """
    J, n = available.shape
    if J == 0:
        return np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.intp)
    if n == 0:
        return np.zeros(1, dtype=np.intp), np.zeros(J, dtype=np.intp)
    packed = np.ascontiguousarray(np.packbits(available, axis=1))  # nIDPs x ceil(n/8) bytes
    keys = packed.view(np.dtype((np.void, packed.shape[1])))[:, 0]
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    return first, inverse.ravel()


def _residualise_full(D: np.ndarray, Z: np.ndarray) -> np.ndarray:
    """``D - Z B`` with B the least-squares fit (normal equations, refined once)."""
    W, _ = whiten((Z.T @ Z)[None])
    E = D
    for _ in range(2):
        E = E - Z @ (W[0].T @ (W[0] @ (Z.T @ E)))
    return E


def partial_correlations(
    D: np.ndarray, Y: np.ndarray, Z: np.ndarray, rows=None, chunk: int = 1024
) -> dict[str, np.ndarray]:
    """Deconfounded r, t, df, n for every pair (delta column c, nIDP column j).

    ``D``: subjects x C deltas (complete); ``Z``: subjects x k confounds (complete, intercept
    included); ``Y``: nIDPs (NaN = missing), subjects x J, or, with ``rows`` (integer positions),
    a larger matrix of which ``Y[rows]`` are these subjects (no copy of it is made). Fortran
    order, as ``DataFrame.to_numpy()`` gives it, is read fastest. Returns (C, J) arrays.

    For nIDP j, with ``m`` its subjects and ``R`` the residual projector of ``Z[m]``, the partial
    correlation is ``d'Ry / sqrt(d'Rd y'Ry)``, computed exactly (no approximation) as follows.

    - Deltas are residualised on ``Z`` over all subjects first (``E = D - Z B``). This changes no
      statistic, since ``Z[m] B`` lies in the span that ``R`` removes, but makes the subset
      cross-products ``Z[m]'E[m]`` small, so ``d'Rd = E[m]'E[m] - E[m]'Z[m] G^+ Z[m]'E[m]``
      (``G = Z[m]'Z[m]``) loses no digits to cancellation.
    - Everything that depends on the mask alone (``G``, its rank, ``Z[m]'E[m]``, ``E[m]'E[m]``)
      is one matrix product ``M [Z*Z | Z*E | E*E]`` (``M``: the distinct availability patterns
      of a chunk of nIDPs; ``Z*Z`` its upper triangle): the only O(n J k C) step, done by BLAS
      in float64.
    - nIDPs are centred within their subjects and residualised directly (one small solve per
      nIDP, batched), so ``y'Ry = |Ry|^2`` and ``d'Ry = E'(Ry)``, with ``Ry`` zero outside
      ``m``, are plain sums of products.

    Pairs whose delta or nIDP has (almost) no variance left after deconfounding get NaN.
    """
    n, C = D.shape
    J = Y.shape[1]
    k = Z.shape[1]
    out = {key: np.full((C, J), np.nan) for key in ("r", "t", "df", "n")}
    if n == 0 or J == 0 or C == 0:
        return out
    rows = None if rows is None else np.asarray(rows, dtype=np.intp)
    if (len(rows) if rows is not None else Y.shape[0]) != n:
        raise ValueError("D and Y describe different numbers of subjects")
    sd = D.std(axis=0)
    E = _residualise_full((D - D.mean(axis=0)) / np.where(sd > 0, sd, 1.0), Z)
    iu, ju = np.triu_indices(k)
    nk = len(iu)
    F = np.hstack([Z[:, iu] * Z[:, ju], (Z[:, :, None] * E[:, None, :]).reshape(n, k * C), E * E])
    YT = Y.T  # nIDPs x subjects: one nIDP per contiguous row for Fortran-ordered input
    for s in range(0, J, chunk):
        sl = slice(s, min(s + chunk, J))
        y = YT[sl] if rows is None else np.take(YT[sl], rows, axis=1)
        m = ~np.isnan(y)
        mf = m.astype(float)
        y = np.where(m, y, 0.0)  # a fresh array: the caller's data are never written

        # mask-only quantities, once per distinct pattern in the chunk
        first, pattern = missingness_patterns(m)
        prod = mf[first] @ F
        G = np.empty((len(first), k, k))
        G[:, iu, ju] = prod[:, :nk]
        G[:, ju, iu] = prod[:, :nk]
        W, rank = whiten(G)
        proj = W @ prod[:, nk : nk + k * C].reshape(-1, k, C)  # W Z[m]'E[m]
        dRd = (prod[:, nk + k * C :] - np.einsum("pkc,pkc->pc", proj, proj))[pattern].T

        # per nIDP: centre within its subjects, residualise, cross with the deltas
        nj = m.sum(axis=1).astype(float)
        y -= (y.sum(axis=1) / np.maximum(nj, 1))[:, None] * mf
        yy = np.einsum("ji,ji->j", y, y)
        Wj = W[pattern]
        for _ in range(2):  # R y (zero outside the nIDP's subjects); the second pass refines
            coef = np.einsum("jab,ja->jb", Wj, np.einsum("jab,jb->ja", Wj, y @ Z))
            fit = coef @ Z.T
            fit *= mf
            y -= fit
        yRy = np.einsum("ji,ji->j", y, y)
        dRy = (y @ E).T  # C x chunk
        ok = (dRd > 1e-10 * nj) & (yRy > 1e-12 * yy)
        with np.errstate(invalid="ignore", divide="ignore"):
            r = np.clip(np.where(ok, dRy / np.sqrt(np.where(ok, dRd * yRy, 1.0)), np.nan), -1, 1)
            df = nj - rank[pattern] - 1.0
            df = np.where(df > 0, df, np.nan)
            t = r * np.sqrt(df / np.clip(1.0 - r * r, 1e-300, None))
        out["r"][:, sl] = r
        out["t"][:, sl] = t
        out["df"][:, sl] = df
        out["n"][:, sl] = nj
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


def adjust_p(p: np.ndarray, method: str) -> np.ndarray:
    """p-values adjusted over their non-NaN entries by statsmodels' ``multipletests``
    (``bonferroni``, ``fdr_bh``, ...); NaN stays NaN and is not counted as a test.
    """
    p = np.asarray(p, float)
    out = np.full_like(p, np.nan)
    ok = ~np.isnan(p)
    if ok.any():
        out[ok] = multipletests(p[ok], method=method)[1]
    return out


def bonferroni(p: np.ndarray) -> np.ndarray:
    return adjust_p(p, "bonferroni")


def fdr_bh(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (q-values)."""
    return adjust_p(p, "fdr_bh")


def associate(
    deltas: pd.DataFrame,
    nidps: pd.DataFrame,
    confounds: pd.DataFrame,
    confound_columns,
    categorical_confounds=(),
    groups=("female", "male"),
    split: str = "test",
    half: str | None = None,
    min_subjects: int = 50,
    delta_column: str = "delta_corrected",
) -> pd.DataFrame:
    """Association table for every group x contrast x nIDP (before multiple-comparison control).

    ``deltas``: long table (subject, sex, split, half, age, contrast, delta_corrected, ...), of
    which the rows of ``split`` (and of test ``half`` A or B, if given) are used. ``nidps``:
    numeric matrix indexed by subject (unique). ``confounds``: table indexed by subject (a
    subject with a missing or infinite confound is left out, logged).
    ``groups``: sexes, and/or ``pooled`` (both sexes, with sex as a confound). Tests with fewer
    than ``min_subjects`` subjects, or without variance left after deconfounding, are left out.
    Returns columns contrast, sex, nidp (categorical: cheap to sort and join), n, r, t, df.
    """
    test = deltas[deltas.split == split]
    if half is not None:
        test = test[test.half == half]
    Y = np.asfortranarray(nidps.to_numpy(dtype=float))  # usually a view: one nIDP per column
    # categorical key columns (no string copies); the same categories for either half
    contrast_levels = pd.Index(sorted(deltas.contrast.unique()))
    nidp_levels = pd.Index(nidps.columns)
    J = len(nidp_levels)
    frames = []
    for g, group in enumerate(groups):
        part = test if group == "pooled" else test[test.sex == group]
        if part.empty:
            continue
        where = f"{group}{'' if half is None else f' (half {half})'}"
        wide = part.pivot_table(index="subject", columns="contrast", values=delta_column)
        info = part.drop_duplicates("subject").set_index("subject")[["sex", "age"]]
        conf_cols = ["age", *confound_columns] + (["sex"] if group == "pooled" else [])
        frame = info.join(confounds, how="left")
        frame["sex"] = (frame["sex"] == "male").astype(float)
        missing_conf = (frame[conf_cols].isna() | _infinite(frame[conf_cols])).any(axis=1)
        if missing_conf.any():
            log.warning(
                "%s: %d subjects lack (finite) confounds (%s) and are left out, e.g. %s",
                where,
                int(missing_conf.sum()),
                ", ".join(conf_cols),
                ", ".join(frame.index[missing_conf][:3]),
            )
        frame = frame[~missing_conf]
        position = nidps.index.get_indexer(frame.index)
        if (position < 0).any():
            log.warning(
                "%s: %d subjects have no row in the nIDP table and are left out, e.g. %s",
                where,
                int((position < 0).sum()),
                ", ".join(frame.index[position < 0][:3]),
            )
            frame, position = frame[position >= 0], position[position >= 0]
        # contrasts can cover different subjects (e.g. after QC): one pass per subject set
        available = wide.reindex(frame.index).notna()
        subsets: dict[bytes, list] = {}
        for contrast in available.columns:
            subsets.setdefault(available[contrast].to_numpy().tobytes(), []).append(contrast)
        for contrasts in subsets.values():
            keep = available[contrasts[0]].to_numpy()
            rows = frame.index[keep]
            Z, _ = design_matrix(frame.loc[rows], conf_cols, categorical_confounds)
            D = wide.loc[rows, contrasts].to_numpy(float)
            res = partial_correlations(D, Y, Z, rows=position[keep])
            C = len(contrasts)
            codes = np.repeat(contrast_levels.get_indexer(contrasts), J)
            frames.append(
                pd.DataFrame(
                    {
                        "contrast": pd.Categorical.from_codes(codes, contrast_levels),
                        "sex": pd.Categorical.from_codes(np.full(C * J, g), list(groups)),
                        "nidp": pd.Categorical.from_codes(np.tile(np.arange(J), C), nidp_levels),
                        "n": res["n"].ravel(),
                        "r": res["r"].ravel(),
                        "t": res["t"].ravel(),
                        "df": res["df"].ravel(),
                    }
                )
            )
    columns = [*KEYS, "n", "r", "t", "df"]
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
    ok = (table.n >= min_subjects) & table.r.notna() & table.t.notna() & table.df.notna()
    if (~ok).any():
        log.info(
            "%d of %d tests%s left out: fewer than %d subjects, or no variance left after "
            "deconfounding",
            int((~ok).sum()),
            len(table),
            "" if half is None else f" in half {half}",
            min_subjects,
        )
    table = table[ok].reset_index(drop=True)
    table["n"] = table.n.astype(int)
    table["df"] = table.df.astype(int)
    return table


def add_significance(table: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """p, -log10 p, Bonferroni and BH-FDR over all tests in the table; most significant first."""
    table = table.copy()
    p, nl = p_values(table.t.to_numpy(float), table.df.to_numpy(float))
    table["p"] = p
    table["neglog10_p"] = nl
    table["p_bonferroni"] = bonferroni(p)
    table["p_fdr"] = fdr_bh(p)
    table["significant_bonferroni"] = table.p_bonferroni < alpha
    table["significant_fdr"] = table.p_fdr < alpha
    order = np.argsort(-nl, kind="stable")
    return table.take(order).reset_index(drop=True)


def discover_and_replicate(
    discovery: pd.DataFrame,
    replication: pd.DataFrame,
    alpha: float = 0.05,
    significance: str = "fdr",
) -> pd.DataFrame:
    """Discovery statistics with multiple-comparison control, beside the replication ones.

    ``discovery`` and ``replication`` are ``associate`` tables of test halves A and B (disjoint
    subjects). Returns one row per discovery test, most significant first: the discovery
    columns of ``add_significance`` (Bonferroni and FDR over *all* discovery tests), then
    ``n_B``, ``r_B``, ``t_B``, ``df_B``, ``p_B``, ``neglog10_p_B`` (the same test in half B;
    empty where it could not be run there), ``p_B_<significance>`` (``p_B_fdr`` or
    ``p_B_bonferroni``: p_B corrected over the discoveries, see ``replication_p_column``) and
    ``replicated``.

    The rule. A test is a *discovery* when its discovery p, corrected over all discovery tests
    by ``significance`` (``fdr``: Benjamini-Hochberg; ``bonferroni``), is below ``alpha``. A
    discovery *replicates* when, in half B, (1) r has the same sign and (2) the two-sided p,
    corrected by the same method over the K discoveries carried to replication, is below
    ``alpha``. Why: the halves share no subject, so a null association's p_B is uniform whatever
    happened in half A, and correcting over the K carried tests (not over all tests) controls
    the family-wise error rate (Bonferroni) or the false discovery rate (BH) among the
    replication claims at ``alpha``; requiring the same sign means the discovered effect, not
    just any effect, is seen again, and makes each replication test one-sided at ``alpha/2``
    (conservative). A discovery that cannot be tested in half B (too few subjects) counts in K
    with p = 1 and is not replicated.
    """
    if significance not in ("fdr", "bonferroni"):
        raise ValueError(f"significance must be 'fdr' or 'bonferroni', not {significance!r}")
    table = add_significance(discovery, alpha)
    rep = replication[[*KEYS, "n", "r", "t", "df"]].copy()
    rep["p"], rep["neglog10_p"] = p_values(rep.t.to_numpy(float), rep.df.to_numpy(float))
    rep = rep.rename(columns={c: f"{c}_B" for c in ("n", "r", "t", "df", "p", "neglog10_p")})
    table = table.merge(rep, on=KEYS, how="left", sort=False, validate="one_to_one")
    for col in ("n_B", "df_B"):
        table[col] = table[col].astype("Int64")
    found = table[f"significant_{significance}"].to_numpy()
    p_b = table.p_B.to_numpy(float)
    carried = np.where(np.isnan(p_b[found]), 1.0, p_b[found])
    corrected = np.full(len(table), np.nan)
    corrected[found] = (bonferroni if significance == "bonferroni" else fdr_bh)(carried)
    corrected[np.isnan(p_b)] = np.nan
    table[replication_p_column(significance)] = corrected
    same_sign = np.sign(table.r_B.to_numpy(float)) == np.sign(table.r.to_numpy(float))
    table["replicated"] = found & same_sign & (np.nan_to_num(corrected, nan=1.0) < alpha)
    return table


OUTPUT_COLUMNS = [
    *KEYS,
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
REPLICATION_COLUMNS = ["n_B", "r_B", "t_B", "df_B", "p_B", "neglog10_p_B"]


def replication_p_column(significance: str) -> str:
    """The column of p_B corrected over the discoveries, named after the method that did it."""
    return f"p_B_{significance}"


def find_replication_p_column(table: pd.DataFrame) -> str | None:
    """The ``replication_p_column`` of a table written by this module (None without one)."""
    found = [c for c in ("p_B_fdr", "p_B_bonferroni") if c in table.columns]
    return found[0] if found else None


def with_labels(table: pd.DataFrame, descriptions=None) -> pd.DataFrame:
    """The table with field, title and FMRIB category beside the nIDP column.

    ``descriptions``: column -> FUNPACK's description (``agemapper.stats.nidps.labels``).
    """
    from agemapper.stats.nidps import labels

    lab = labels(pd.unique(table.nidp), descriptions).set_index("nidp")
    lab = lab[["field", "title", "category"]]
    out = table.join(lab, on="nidp")
    columns = [c for c in OUTPUT_COLUMNS if c in out.columns]
    return out[columns + [c for c in out.columns if c not in columns]]


def _infinite(frame: pd.DataFrame) -> pd.DataFrame:
    """Where a numeric column holds +inf or -inf (False elsewhere, and in text columns)."""
    out = pd.DataFrame(False, index=frame.index, columns=frame.columns)
    for col in frame.columns:
        if pd.api.types.is_numeric_dtype(frame[col]) and not pd.api.types.is_bool_dtype(frame[col]):
            out[col] = np.isinf(frame[col].to_numpy(dtype=float, na_value=np.nan))
    return out


def check_coverage(tested, nidps, confounds, conf_cols, nidps_path, confounds_path, qclog):
    """Test subjects absent from the nIDP table, or without a confound, go through ``qclog``.

    An infinite confound (+inf/-inf; no regression can use it) counts as a missing one, named
    as infinite. Under the strict policy the first such subject stops the stage (with the count
    of others); under skip each is recorded, and the statistics leave it out where it has no
    data.
    """
    from agemapper.errors import InputDataError

    problems = []
    for s in pd.Index(tested).difference(nidps.index):
        problems.append((s, nidps_path, "absent from the nIDP table"))
    present = confounds.reindex(pd.Index(tested))[list(conf_cols)]
    infinite = _infinite(present)
    for s, row in present[present.isna().any(axis=1) | infinite.any(axis=1)].iterrows():
        if row.isna().all():
            what = "absent from the confound table"
        else:
            parts = []
            if row.isna().any():
                parts.append(f"missing confound(s) {list(row.index[row.isna()])}")
            if infinite.loc[s].any():
                bad = infinite.columns[infinite.loc[s].to_numpy()]
                values = ", ".join(f"{c}={row[c]}" for c in bad)
                parts.append(f"infinite confound(s) {list(bad)} ({values})")
            what = "; ".join(parts)
        problems.append((s, confounds_path, what))
    if problems and qclog.policy == "strict":
        s, path, what = problems[0]
        more = f" ({len(problems) - 1} more test subjects have the same kind of problem)"
        raise InputDataError(what + (more if len(problems) > 1 else ""), subject=s, path=path)
    for s, path, what in problems:
        qclog.handle(InputDataError(what, subject=s, path=path))


def run_associations(
    deltas_path, nidps_path, confounds_path, cfg: dict, out_all, out_sig, out_dropped,
    qc: str = "strict", out_qc=None, descriptions=None,
) -> pd.DataFrame:  # fmt: skip
    """The association stage from files to files (see the ``associations:`` config).

    ``descriptions``: FUNPACK's description file of the nIDP table's columns (``-def``), if
    there is one: the titles use it where the coding tables cannot decode a level.

    With ``replication`` (the default), tests run on test half A (discovery) and half B
    (replication), see ``discover_and_replicate``; without it, on the whole test split.
    ``out_sig`` receives the discoveries, most significant first.
    """
    from agemapper.errors import ConfigError, InputDataError
    from agemapper.io import READABLE_DIGITS, write_table
    from agemapper.stats.nidps import prepare, read_descriptions, read_subject_table

    alpha = float(cfg.get("alpha", 0.05))
    significance = cfg.get("significance", "fdr")
    min_subjects = int(cfg.get("min_subjects", 50))
    replication = bool(cfg.get("replication", True))
    deltas = pd.read_csv(deltas_path, dtype={"subject": str, "half": str})
    deltas["half"] = deltas["half"].fillna("")
    tested = deltas.loc[deltas.split == "test", "subject"].unique()
    raw = read_subject_table(nidps_path, "nIDP table")
    n_raw = raw.shape[1]
    raw = raw[raw.index.isin(tested)]
    matrix, dropped = prepare(
        raw, min_subjects, cfg.get("categorical_fields", ()), instances=cfg.get("instances")
    )
    confounds = read_subject_table(confounds_path, "confound table")
    missing = [c for c in cfg["confounds"] if c not in confounds.columns]
    if missing:
        raise InputDataError(
            f"confound column(s) {missing} named in the config are not in the table "
            f"(it has {list(confounds.columns)})",
            path=confounds_path,
        )
    if confounds.index.duplicated().any():
        log.warning(
            "confound table: %d duplicated subject id(s), first row kept",
            int(confounds.index.duplicated().sum()),
        )
        confounds = confounds[~confounds.index.duplicated(keep="first")]
    from agemapper.qc import QCLog

    qclog = QCLog(qc, "associations")
    check_coverage(tested, raw, confounds, cfg["confounds"], nidps_path, confounds_path, qclog)
    log.info(
        "nIDPs: %d columns in the table, %d tested (a column per indicator) on %d test "
        "subjects; %d dropped (see %s); %d contrasts",
        n_raw,
        matrix.shape[1],
        len(tested),
        int((dropped.nidp != "(rows)").sum()),
        out_dropped,
        deltas.contrast.nunique(),
    )
    run = dict(
        confound_columns=cfg["confounds"],
        categorical_confounds=cfg.get("categorical_confounds", ()),
        groups=cfg["groups"],
        min_subjects=min_subjects,
    )
    flag = f"significant_{significance}"
    if replication:
        halves = set(deltas.half[deltas.split == "test"])
        if not {"A", "B"} <= halves:
            raise ConfigError(
                f"{deltas_path}: associations.replication needs test halves A and B, but the "
                f"test subjects' halves are {sorted(halves)}; give the subject table a half "
                "column (A/B) or set associations.replication: false"
            )
        table = discover_and_replicate(
            associate(deltas, matrix, confounds, half="A", **run),
            associate(deltas, matrix, confounds, half="B", **run),
            alpha,
            significance,
        )
    else:
        table = add_significance(associate(deltas, matrix, confounds, **run), alpha)
    table = with_labels(table, read_descriptions(descriptions) if descriptions else None)
    if table.empty:
        log.warning(
            "no association was tested: every test had fewer than %d subjects or no variance "
            "left after deconfounding (too small a cohort for its confounds?)",
            min_subjects,
        )
    significant = table[table[flag].astype(bool)]
    write_table(out_all, table, digits=READABLE_DIGITS)
    write_table(out_sig, significant, digits=READABLE_DIGITS)
    if dropped.empty:  # say so, rather than leave a table with no rows
        dropped = pd.DataFrame([{"nidp": "(none)", "reason": "no nIDP column or row left out"}])
    write_table(out_dropped, dropped)
    if out_qc is not None:
        write_table(out_qc, qclog.table())
    summary = f"{len(table)} tests, {len(significant)} significant ({significance} < {alpha})"
    if replication:
        summary = (
            f"discovery (test half A): {summary}; replication (half B): "
            f"{int(table.replicated.sum())} of {len(significant)} replicated"
        )
    log.info(summary)
    return table
