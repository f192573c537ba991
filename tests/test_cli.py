"""The ``agemapper`` command: its tools, from any directory."""

import os
import subprocess
import sys

import pandas as pd
import torch
from test_legacy import _original_state_dict

from agemapper import cli
from agemapper.images import contrasts, subjects
from agemapper.networks.training import load_model
from conftest import REPO, write_released_splits


def _agemapper(*args, cwd):
    """``python -m agemapper ARGS`` (what the console script runs), this checkout's package."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "agemapper", *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_console_script_is_the_cli():
    text = (REPO / "pyproject.toml").read_text()  # (tomllib is not in Python 3.10)
    scripts = text.split("[project.scripts]\n", 1)[1].split("\n[", 1)[0]
    assert 'agemapper = "agemapper.cli:main"' in scripts.splitlines()


def test_help_lists_the_tools(tmp_path):
    res = _agemapper("--help", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    for tool in ("import-original", "export-original", "import-splits", "import-contrasts"):
        assert tool in cli.TOOLS and tool in res.stdout
    # listing the tools loads none of them (no torch)
    probe = "import sys; from agemapper import cli; cli.parser([]).format_help(); "
    probe += "print('torch' in sys.modules)"
    res = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True)
    assert res.stdout.strip() == "False", res.stderr


def test_import_original_works_from_another_directory(tmp_path):
    """The default contrast table is the repository's, wherever the command runs."""
    torch.save(_original_state_dict(), tmp_path / "orig.pth.tar")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    res = _agemapper(
        "import-original", tmp_path / "orig.pth.tar", "m.safetensors", "--contrast", "vbm",
        cwd=elsewhere,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    _, meta = load_model(elsewhere / "m.safetensors")
    expected = contrasts.read_contrasts(REPO / "config/contrasts.tsv")["vbm"]
    assert meta["input"]["contrast"] == "vbm"
    assert meta["input"]["scale_factor"] == expected.scale_factor
    assert meta["input"]["resolution"] == "2mm"


def test_errors_are_one_line(tmp_path):
    torch.save(_original_state_dict(), tmp_path / "orig.pth.tar")
    res = _agemapper(
        "import-original", "orig.pth.tar", "m.safetensors", "--contrast", "T3", cwd=tmp_path
    )
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 1 and not (tmp_path / "m.safetensors").exists()
    assert len(lines) == 1 and "unknown contrast(s) ['T3']" in lines[0], res.stderr


def test_import_splits_writes_a_checked_subject_table(tmp_path):
    release = tmp_path / "release"
    release.mkdir()
    write_released_splits(release)
    assert cli.main(["import-splits", str(release), str(tmp_path / "s.tsv")]) == 0
    table = subjects.read_subjects(tmp_path / "s.tsv")
    pd.testing.assert_frame_equal(table, subjects.read_subjects(release))
    assert len(table) == 26 and set(table.half) == {"", "A", "B"}


def test_import_contrasts_rebuilds_the_shipped_table(tmp_path):
    shipped = pd.read_csv(REPO / "config/contrasts.tsv", sep="\t")
    # the release's scaling_values_simple.csv: contrast as index, then these three columns
    shipped.set_index("contrast")[["scale_factor", "resolution", "data_file"]].to_csv(
        tmp_path / "scaling_values_simple.csv"
    )
    out = tmp_path / "contrasts.tsv"
    assert (
        cli.main(["import-contrasts", str(tmp_path / "scaling_values_simple.csv"), str(out)]) == 0
    )
    assert out.read_text() == (REPO / "config/contrasts.tsv").read_text()


def test_import_and_export_a_release_folder(tmp_path):
    from test_legacy import original_network

    release = tmp_path / "release" / "saved_models"
    release.mkdir(parents=True)
    torch.save(original_network().state_dict(), release / "swi_male_2.pth.tar")
    res = _agemapper("import-original", "release", "networks", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "networks: 1 networks imported, 0 unchanged" in res.stdout
    weights = tmp_path / "networks/swi/male/replicate-2/model.safetensors"
    assert load_model(weights)[1]["input"]["contrast"] == "swi"
    res = _agemapper("import-original", "release", "networks", "--sex", "male", cwd=tmp_path)
    assert res.returncode == 1 and "a folder's files name their own" in res.stderr
    res = _agemapper("export-original", "networks", "exported", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "1 networks exported (1 loadable by the original code" in res.stdout
    assert (tmp_path / "exported/swi_male_2.pth.tar").exists()
    assert (tmp_path / "exported/swi_male_2.json").exists()
