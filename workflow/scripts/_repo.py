"""Put this repository's ``agemapper`` package first on the import path.

Snakemake runs each script from ``.snakemake/scripts/`` with this folder appended to
``sys.path``; importing this module makes the scripts use the package next to the Snakefile,
not some other installed copy, with or without ``pip install -e .``.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
