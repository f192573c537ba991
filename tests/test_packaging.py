"""What users of a published method look for is there and agrees with itself."""

import re

import yaml

import agemapper
from conftest import REPO


def test_license_citation_and_version_agree():
    pyproject = (REPO / "pyproject.toml").read_text()
    assert 'license = "BSD-3-Clause"' in pyproject
    assert (REPO / "LICENSE").read_text().startswith("BSD 3-Clause License")
    version = re.search(r'^version = "(.+)"$', pyproject, re.M)[1]
    citation = yaml.safe_load((REPO / "CITATION.cff").read_text())
    assert citation["version"] == version == agemapper.__version__
    assert citation["license"] == "BSD-3-Clause"
    assert citation["preferred-citation"]["doi"] == "10.1109/SDS57534.2023.00010"
    assert (REPO / "agemapper/py.typed").exists()
    assert "## [Unreleased]" in (REPO / "CHANGELOG.md").read_text()


def test_pre_commit_runs_the_linters_ci_runs():
    ci = (REPO / ".ci/run").read_text().splitlines()
    ci_linters = {
        re.sub(r"^\.venv(-cffconvert)?/bin/", "", line)
        for line in ci
        if re.match(r"^\.venv(-cffconvert)?/bin/(?!pip )", line)
    }
    config = yaml.safe_load((REPO / ".pre-commit-config.yaml").read_text())
    hooks = {h["entry"] for repo in config["repos"] for h in repo["hooks"]}
    assert ci_linters == hooks
    assert "cffconvert --validate -i CITATION.cff" in hooks


def test_the_lock_pins_every_requirement_within_its_range():
    """requirements.lock.txt (the pinned reproduction environment) covers pyproject.toml."""
    import importlib.util

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    spec = importlib.util.spec_from_file_location("lock", REPO / ".ci/lock_environment.py")
    lock = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(lock)
    pins = {}
    for line in (REPO / "requirements.lock.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version
    for text in lock.project_requirements():
        req = Requirement(text)
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is not pinned in requirements.lock.txt"
        assert req.specifier.contains(pins[name], prereleases=True), (text, pins[name])
    assert pins["torch"] == "2.13.0" and "scikit-learn" in pins
    conda = yaml.safe_load((REPO / "environment.lock.yml").read_text())
    assert conda["dependencies"][-1] == {"pip": ["-r requirements.lock.txt", "-e ."]}
