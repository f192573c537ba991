"""Atomic file writing and small table helpers.

Every file this package produces is written to a temporary name in the same directory and
renamed into place, so a job killed mid-write never leaves a file that looks complete.
Hand-written (twenty lines over ``tempfile`` and ``os.replace``): the library that did this,
``atomicwrites``, is archived and unmaintained.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path

import pandas as pd

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path, suffix: str | None = None):
    """Yield a temporary path next to ``path``; rename it to ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes) if suffix is None else suffix
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    os.chmod(tmp, 0o666 & ~_UMASK)
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _fsync(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def write_bytes(path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(obj):
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")


def write_table(path, df: pd.DataFrame, digits: int | None = None, **kwargs) -> None:
    """Write a table as TSV (or CSV when the name ends in .csv), atomically.

    ``digits``: floats with that many significant digits (``%.4g`` for 4), for tables people
    read; without it every float keeps full precision (tables that later stages read back).
    """
    sep = "," if str(path).endswith(".csv") else "\t"
    if digits is not None:
        kwargs.setdefault("float_format", f"%.{int(digits)}g")
    with atomic_path(path) as tmp:
        df.to_csv(tmp, sep=sep, index=False, **kwargs)


READABLE_DIGITS = 4  # significant digits of the floats in the tables people read


def read_table(path, **kwargs) -> pd.DataFrame:
    """Read a TSV or CSV table (by extension; .txt and .tsv are tab-separated)."""
    sep = "," if str(path).endswith(".csv") else "\t"
    return pd.read_csv(path, sep=sep, **kwargs)
