"""Benchmark: the association statistics against a per-pair statsmodels OLS loop, in one run.

    python benchmarks/associations.py            # the issue's size: 57 contrasts x 2 sexes x
                                                 # 10,000 nIDPs x 5,000 subjects per sex
    python benchmarks/associations.py --small    # smoke run, seconds

Generates a synthetic problem (deltas, nIDPs with missing values at random, realistic
confounds: age, age^2, site with 3 levels, head size, two head motions, table position x/y/z,
scan date and time), then times

(a) the per-pair loop: for a random sample of (sex, contrast, nIDP) pairs, one statsmodels OLS
    fit of ``nidp ~ delta + confounds`` on the subjects that have the nIDP; the mean time per
    pair is extrapolated to every pair;
(b) ours on the whole problem: ``associate`` (deconfounded r, t, df, n for every pair) and
    ``add_significance`` (p, -log10 p, Bonferroni and FDR over all tests, sorted table).

It prints both side by side with the speed-up, the peak memory, and how closely the two agree
on the sampled pairs. Timings depend on the machine and on whatever else runs on it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this repository's agemapper

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import statsmodels.api as sm  # noqa: E402

from agemapper.stats import associations as A  # noqa: E402

CONFOUNDS = [
    "site",
    "head_size",
    "motion_rest",
    "motion_task",
    "table_x",
    "table_y",
    "table_z",
    "scan_date",
    "scan_time",
]
SEXES = ("female", "male")


def make_problem(contrasts: int, nidps: int, subjects: int, missing: float, seed: int):
    """Long delta table, nIDP matrix (NaN = missing) and confound table, for both sexes."""
    rng = np.random.default_rng(seed)
    n = subjects * len(SEXES)
    ids = np.array([str(1000000 + i) for i in range(n)])
    sex = rng.permutation(np.repeat(SEXES, subjects))  # interleaved, as in a real table
    age = rng.uniform(45, 82, n)
    conf = pd.DataFrame(
        {
            "site": rng.choice([11025, 11026, 11027], n, p=[0.5, 0.3, 0.2]),
            "head_size": rng.normal(1.0, 0.1, n) + 0.05 * (sex == "male"),
            "motion_rest": rng.lognormal(-2.0, 0.35, n) * (1 + (age - 45) / 80),
            "motion_task": rng.lognormal(-2.1, 0.35, n),
            "table_x": rng.normal(0, 2, n),
            "table_y": rng.normal(60, 3, n),
            "table_z": rng.normal(-40, 4, n),
            "scan_date": rng.uniform(16000, 19000, n),  # days since 1970
            "scan_time": rng.uniform(8, 20, n),  # hour of the day
        },
        index=pd.Index(ids, name="subject"),
    )
    zc = ((conf - conf.mean()) / conf.std()).to_numpy()
    names = [f"c{i:02d}" for i in range(contrasts)]
    shared = rng.standard_normal(n)
    D = 0.6 * shared[:, None] + rng.standard_normal((n, contrasts))
    D += zc[:, [1, 2]] @ rng.normal(0, 0.2, (2, contrasts))  # deltas carry some confounding
    deltas = pd.DataFrame(
        {
            "subject": np.tile(ids, contrasts),
            "sex": np.tile(sex, contrasts),
            "split": "test",
            "half": np.tile(np.where(np.arange(n) % 2 == 0, "A", "B"), contrasts),
            "age": np.tile(age, contrasts),
            "contrast": np.repeat(names, n),
            "delta_corrected": D.T.ravel(),
        }
    )
    Y = np.empty((n, nidps), order="F")  # the layout DataFrame.to_numpy() gives
    step = 1000
    for s in range(0, nidps, step):  # in blocks, to keep generation's memory small
        b = min(step, nidps - s)
        block = rng.standard_normal((n, b))
        block += zc @ rng.normal(0, 0.3, (zc.shape[1], b)) + 0.02 * (age[:, None] - 63)
        block += D[:, rng.integers(0, contrasts, b)] * np.where(rng.random(b) < 0.02, 0.15, 0.0)
        block[rng.random((n, b), dtype=np.float32) < missing] = np.nan
        Y[:, s : s + b] = block
    columns = [f"{20000 + j}-2.0" for j in range(nidps)]
    table = pd.DataFrame(Y, index=pd.Index(ids, name="subject"), columns=columns, copy=False)
    return deltas, table, conf


def _rss_peak_reset() -> bool:
    """Reset the kernel's peak-RSS counter of this process (Linux); False if unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _rss_peak_gb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024**2
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


@contextlib.contextmanager
def _blas_threads(limit):
    """Limit BLAS threads (threadpoolctl) and say how many ours runs with."""
    try:
        from threadpoolctl import threadpool_info, threadpool_limits
    except ImportError:
        yield "BLAS threads: library default"
        return
    with threadpool_limits(limits=limit, user_api="blas"):
        info = [p for p in threadpool_info() if p["user_api"] == "blas"]
        yield f"BLAS threads: {info[0]['num_threads'] if info else '?'}"


def statsmodels_loop(deltas, nidps, conf, pairs: int, seed: int) -> pd.DataFrame:
    """Per-pair OLS on a random sample of pairs; returns the pairs with r, p and the time."""
    rng = np.random.default_rng(seed + 1)
    contrasts = deltas.contrast.unique()
    per_sex = {}
    for sex in SEXES:
        part = deltas[deltas.sex == sex]
        wide = part.pivot(index="subject", columns="contrast", values="delta_corrected")
        info = part.drop_duplicates("subject").set_index("subject")
        c = conf.loc[wide.index]
        X = np.column_stack(
            [
                info.loc[wide.index, "age"],
                info.loc[wide.index, "age"] ** 2,
                c.site == 11026,
                c.site == 11027,
                c.drop(columns="site"),
            ]
        ).astype(float)
        per_sex[sex] = (wide[contrasts].to_numpy(), nidps.loc[wide.index].to_numpy(), X)
    sample = [
        (
            SEXES[rng.integers(2)],
            int(rng.integers(len(contrasts))),
            int(rng.integers(nidps.shape[1])),
        )
        for _ in range(pairs)
    ]
    D, Y, X = per_sex[SEXES[0]]
    for j in range(3):  # warm-up: statsmodels' first fit imports and caches
        m = ~np.isnan(Y[:, j])
        _ = sm.OLS(Y[m, j], sm.add_constant(np.column_stack([D[m, 0], X[m]]))).fit().pvalues
    rows = []
    start = time.perf_counter()
    for sex, c, j in sample:
        D, Y, X = per_sex[sex]
        m = ~np.isnan(Y[:, j])
        fit = sm.OLS(Y[m, j], sm.add_constant(np.column_stack([D[m, c], X[m]]))).fit()
        rows.append(
            (sex, contrasts[c], nidps.columns[j], fit.tvalues[1], fit.df_resid, fit.pvalues[1])
        )
    elapsed = time.perf_counter() - start
    out = pd.DataFrame(rows, columns=["sex", "contrast", "nidp", "t_sm", "df_sm", "p_sm"])
    out["r_sm"] = out.t_sm / np.sqrt(out.t_sm**2 + out.df_sm)
    out.attrs["seconds"] = elapsed
    return out


def ours(deltas, nidps, conf, half=None) -> pd.DataFrame:
    """Every pair: r, t, df, n (``associate``); p, -log10 p, Bonferroni, FDR, sorted."""
    run = dict(groups=SEXES, min_subjects=50)
    if half is None:
        table = A.associate(deltas, nidps, conf, CONFOUNDS, ["site"], **run)
        return A.add_significance(table)
    return A.discover_and_replicate(
        A.associate(deltas, nidps, conf, CONFOUNDS, ["site"], half="A", **run),
        A.associate(deltas, nidps, conf, CONFOUNDS, ["site"], half="B", **run),
    )


def _rel(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300))) if len(a) else 0.0


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="smoke run (seconds)")
    parser.add_argument("--contrasts", type=int, default=57)
    parser.add_argument("--nidps", type=int, default=10_000)
    parser.add_argument("--subjects", type=int, default=5_000, help="per sex")
    parser.add_argument("--missing", type=float, default=0.2, help="fraction, per nIDP")
    parser.add_argument("--pairs", type=int, default=1000, help="pairs timed with statsmodels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--blas-threads", type=int, default=None, help="BLAS threads for ours (default: all)"
    )
    args = parser.parse_args(argv)
    if args.small:
        args.contrasts, args.nidps, args.subjects, args.pairs = 4, 300, 400, 40

    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    t0 = time.perf_counter()
    deltas, nidps, conf = make_problem(
        args.contrasts, args.nidps, args.subjects, args.missing, args.seed
    )
    tests = args.contrasts * len(SEXES) * args.nidps
    print(
        f"problem: {args.contrasts} contrasts x {len(SEXES)} sexes x {args.nidps} nIDPs x "
        f"{args.subjects} subjects per sex, {args.missing:.0%} missing at random per nIDP, "
        f"confounds age, age^2, {', '.join(CONFOUNDS)} (site: 3 levels); {tests:,} tests "
        f"(generated in {time.perf_counter() - t0:.1f} s)",
        flush=True,
    )

    try:  # small fits run fastest on one BLAS thread (threads only add overhead there)
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=1, user_api="blas"):
            base = statsmodels_loop(deltas, nidps, conf, args.pairs, args.seed)
        base_threads = "1 BLAS thread"
    except ImportError:
        base = statsmodels_loop(deltas, nidps, conf, args.pairs, args.seed)
        base_threads = "default BLAS threads"
    per_pair = base.attrs["seconds"] / len(base)
    baseline_total = per_pair * tests
    print(f"statsmodels loop: {len(base)} pairs in {base.attrs['seconds']:.2f} s", flush=True)

    with _blas_threads(args.blas_threads) as threads:
        reset = _rss_peak_reset()
        start = time.perf_counter()
        table = ours(deltas, nidps, conf)
        seconds = time.perf_counter() - start
        peak_ours = _rss_peak_gb()
        peak_label = "during ours" if reset else "whole process"
        start = time.perf_counter()
        halves = ours(deltas, nidps, conf, half="AB")
        seconds_halves = time.perf_counter() - start

    got = base.merge(table, on=["sex", "contrast", "nidp"], how="left")
    speedup = baseline_total / seconds
    width = 28
    print()
    print(f"{'':{width}} {'per pair':>12} {'all ' + format(tests, ',') + ' tests':>24}")
    print(
        f"{'statsmodels OLS loop':{width}} {per_pair * 1e3:>9.3f} ms "
        f"{baseline_total:>18.1f} s (extrapolated from {len(base)} pairs, {base_threads})"
    )
    print(
        f"{'agemapper (vectorised)':{width}} {seconds / tests * 1e6:>9.3f} us "
        f"{seconds:>18.1f} s (measured, all pairs, {threads})"
    )
    print(
        f"{'  same, discovery+replication':{width}} {'':>12} {seconds_halves:>18.1f} s "
        f"(halves A and B, {len(halves):,} rows, as the workflow runs it)"
    )
    print(f"{'speed-up':{width}} {speedup:>12.0f}x")
    print(f"{'peak memory (RSS)':{width}} {peak_ours:>9.2f} GB ({peak_label}, data included)")
    print(
        f"{'agreement on sampled pairs':{width}} max relative difference: "
        f"r {_rel(got.r, got.r_sm):.1e}, p {_rel(got.p, got.p_sm):.1e}, "
        f"df {'equal' if (got['df'] == got.df_sm).all() else 'DIFFERENT'}"
    )
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return {
        "tests": tests,
        "baseline_s": baseline_total,
        "ours_s": seconds,
        "speedup": speedup,
        "peak_gb": peak_ours,
        "max_rel_r": _rel(got.r, got.r_sm),
        "max_rel_p": _rel(got.p, got.p_sm),
    }


if __name__ == "__main__":
    main()
