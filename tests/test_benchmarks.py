"""The benchmark scripts still run (smoke mode); no timing is asserted."""

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
