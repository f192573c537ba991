"""Write the pinned reproduction environment: requirements.lock.txt (the exact version, in this
environment, of everything ``pip install -e ".[dev]"`` brings: the project's requirements and
theirs, recursively) and environment.lock.yml (conda: this Python, then those pins).

    .venv/bin/python .ci/lock_environment.py          # rewrites both files
    .venv/bin/python .ci/lock_environment.py --check  # exit 1 if either would change

Run it in an environment where the tests pass, after changing a dependency. Only what the
project needs is pinned, not whatever else happens to be installed.
"""

from __future__ import annotations

import argparse
import platform
import re
import sys
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
PINS = REPO / "requirements.lock.txt"
CONDA = REPO / "environment.lock.yml"
PINS_HEADER = """\
# THE PINNED REPRODUCTION ENVIRONMENT: the exact versions the tests passed with (Python
# {python}, {platform}), written by .ci/lock_environment.py. pyproject.toml, environment.yml
# and workflow/envs/agemapper.yaml give ranges for everyday use; these pins re-create the
# versions a result was made with:
#   python3 -m venv .venv && .venv/bin/pip install -r requirements.lock.txt -e .
# (with conda: conda env create -f environment.lock.yml). torch is pinned without its local
# build tag ({torch}): pip takes the build for the machine (from PyPI on Linux a CUDA build,
# which brings its own nvidia-* packages), of the same version.
"""
CONDA_HEADER = """\
# THE PINNED REPRODUCTION ENVIRONMENT (conda): Python {python} and the exact package versions of
# requirements.lock.txt, the versions the tests passed with (written by .ci/lock_environment.py;
# environment.yml is the ranged, everyday environment).
#   conda env create -f environment.lock.yml && conda activate agemapper-lock
name: agemapper-lock
channels:
  - conda-forge
  - nodefaults
dependencies:
  - python={python}
  - pip
  - pip:
      - -r requirements.lock.txt
      - -e .
"""


def project_requirements() -> list[str]:
    """The requirements of ``agemapper[dev]`` as pyproject.toml states them (the installed
    metadata may be older: an editable install is not rebuilt when pyproject.toml changes).
    """
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    out, todo, seen = list(project["dependencies"]), ["dev"], set()
    while todo:
        extra = todo.pop()
        seen.add(extra)
        for text in extras[extra]:
            req = Requirement(text)
            if canonicalize_name(req.name) == "agemapper":  # agemapper[workflow] in [dev]
                todo += [e for e in req.extras if e not in seen]
            else:
                out.append(text)
    return out


def closure(requirements: list[str]) -> dict[str, str]:
    """name -> installed version of every requirement and of theirs, recursively."""
    env = default_environment()
    found: dict[tuple, str] = {}
    todo = [(text, ()) for text in requirements]
    while todo:
        text, active = todo.pop()
        req = Requirement(text)
        if req.marker and not any(
            req.marker.evaluate({**env, "extra": e}) for e in (active or ("",))
        ):
            continue
        key = (canonicalize_name(req.name), tuple(sorted(req.extras)))
        if key in found:
            continue
        found[key] = metadata.version(req.name)
        todo += [(r, tuple(req.extras)) for r in metadata.requires(req.name) or []]
    return dict(sorted((name, version) for (name, _), version in found.items()))


def render() -> dict[Path, str]:
    pins = closure(project_requirements())
    python = platform.python_version()
    info = {
        "python": python,
        "platform": f"{platform.system()} {platform.machine()}",
        "torch": pins.get("torch", "-"),
    }
    lines = [f"{name}=={re.sub(r'[+].*$', '', version)}\n" for name, version in pins.items()]
    return {
        PINS: PINS_HEADER.format(**info) + "".join(lines),
        CONDA: CONDA_HEADER.format(**info),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a file would change")
    args = parser.parse_args(argv)
    stale = 0
    for path, text in render().items():
        if args.check:
            same = path.exists() and path.read_text() == text
            print(f"{path.name}: {'up to date' if same else 'out of date'}")
            stale += not same
        else:
            path.write_text(text)
            print(f"{path.name}: written ({text.count('==')} pins)")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
