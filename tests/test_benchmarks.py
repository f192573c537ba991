"""The benchmark scripts still run (smoke mode); no timing is asserted."""

import importlib.util
import re
import subprocess
import sys

from conftest import REPO


def test_association_benchmark_small_mode_runs():
    res = subprocess.run(
        [sys.executable, str(REPO / "benchmarks/associations.py"), "--small"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "statsmodels OLS loop" in res.stdout and "speed-up" in res.stdout
    agreement = re.search(r"r ([0-9.e+-]+), p ([0-9.e+-]+), df equal", res.stdout)
    assert agreement, res.stdout
    assert float(agreement[1]) < 1e-8 and float(agreement[2]) < 1e-8


def test_ensemble_benchmark_small_mode_runs():
    res = subprocess.run(
        [sys.executable, str(REPO / "benchmarks/ensembles.py"), "--small"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "hand-written (baseline)" in res.stdout and "speed-up" in res.stdout
    ours = re.search(r"scikit-learn \(ours\) .* (\S+) +\S+ +\S+ y$", res.stdout, re.M)
    assert ours and float(ours[1]) < 1e-9, res.stdout  # the objective's excess over the optimum


def test_train_throughput_smoke(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("tt", REPO / "benchmarks/train_throughput.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "figures.json"
    figures = bench.main(
        [
            "--tiny",
            "--device",
            "cpu",
            "--subjects",
            "14",
            "--steps",
            "2",
            "--warmup",
            "1",
            "--workers",
            "1",
            "--workdir",
            str(tmp_path / "w"),
            "--json",
            str(out),
        ]
    )
    text = capsys.readouterr().out
    assert "(a) original path" in text and "(c) ours, 3 packed" in text
    assert out.exists() and figures["grid"] == [32, 40, 32]
    for path in ("original", "ours_one", "ours_packed"):
        assert figures[path]["samples_per_s"] > 0
    assert figures["cache_mb_per_volume"] < figures["dense_mb_per_volume"]
    assert figures["study_gpu_hours"]["original"] > 0


def test_training_fidelity_smoke(capsys):
    spec = importlib.util.spec_from_file_location("tf", REPO / "benchmarks/training_fidelity.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    df = bench.main(["--small"])
    text = capsys.readouterr().out
    assert set(df.variant) == {"reference", "shared batch order", "float32 cache"}
    assert (df.single > 0).all() and (df.replicates == 3).all()
    assert "float32 cache vs float16 cache mean |diff|" in text


def test_browser_benchmark_small_mode_builds_both_pages(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("bb", REPO / "benchmarks/browser.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    figures = bench.main(["--small", "--no-browser", "--out", str(tmp_path)])
    text = capsys.readouterr().out
    assert "baseline: every test on the page" in text and "ours:" in text
    assert figures["tests"] == 6 * 2 * 300
    assert figures["baseline"]["loaded"] == figures["ours"]["loaded"] == figures["tests"]
    assert (tmp_path / "browser.html").exists() and (tmp_path / "all_tests.html").exists()
