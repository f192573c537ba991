"""The nIDP table from the UK Biobank main dataset, by FUNPACK with FMRIB's configuration.

What a UK Biobank user downloads is the main dataset: one or more CSV files with a subject id
column ``eid`` and one column per field, instance and array entry, ``field-instance.array``
(``6150-2.0``, ``6150-2.1``, ...; the Research Analysis Platform's ``p6150_i2_a0`` names work
too), integer codes for categorical fields with negative codes for "do not know" and "prefer
not to answer". :func:`extract_nidps` turns it into the nIDP table the way the FMRIB
brain-ageing studies do, by running FUNPACK itself::

    fmrib_unpack -cfg fmrib -nd -nj THREADS -v FIELDS -vi 2 -s SUBJECTS -def DESCRIPTIONS \
        nidps.tsv main.csv [more.csv ...]

- ``-cfg fmrib``: FMRIB's configuration (missing-value codes, recodings, binarised fields,
  sparsity and redundancy checks); ``-nd``: the showcase schema FUNPACK ships, never a
  download (compute nodes are often offline, and the table then depends on installed versions
  only);
- ``-v``: the fields of the field list (``cohort.nidp_fields``); without one, every field of
  the categories FMRIB recommends (FUNPACK's ``fmrib_cats`` configuration);
- ``-vi``: the visits of ``associations.instances`` (FUNPACK applies it to visit-instanced
  fields only), so that the fields FUNPACK binarises across visits cover those visits only;
- ``-s``: the cohort's subjects (of the checked subject table): FUNPACK's sparsity checks are
  then about the imaging cohort, and a 500,000-row dataset shrinks to its 50,000 imaging rows;
- ``-def``: FUNPACK's description of every column, which the labels use.

The main dataset is never written; FUNPACK's output goes to a temporary name and is renamed
into place once it is checked (an ``eid`` column and at least one nIDP column).
"""

from __future__ import annotations

import csv
import logging
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from agemapper.errors import ConfigError, InputDataError
from agemapper.io import atomic_path
from agemapper.stats import ukb

log = logging.getLogger(__name__)

SHOWCASE = re.compile(r"^(?P<field>\d+)-(?P<instance>\d+)\.(?P<array>\d+)$")
RAP = re.compile(r"^p(?P<field>\d+)(?:_i(?P<instance>\d+))?(?:_a(?P<array>\d+))?$")
RECOMMENDED = "fmrib_cats"  # FUNPACK's configuration of FMRIB's recommended categories
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# FUNPACK's messages about its configuration's (or the recommended categories') fields that this
# dataset lacks, and about the schema it was told (-nd) not to download: one line per field
# (about 10,000 with the recommended categories), none of them a problem; counted, not logged
_NOISE = (
    "refers to missing variable",
    "is not present in the data set",
    "is not present in input file(s)",
    "Unable to download",
)


def read_field_list(path) -> list[int]:
    """Field ids, one or more a line (spaces or commas between them; ``#`` starts a comment)."""
    path = Path(path)
    if not path.is_file():
        raise InputDataError("the nIDP field list is missing", path=path)
    fields: list[int] = []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        for word in re.split(r"[\s,]+", line.split("#", 1)[0].strip()):
            if not word:
                continue
            if not word.isdigit():
                raise InputDataError(
                    f"line {number}: {word!r} is not a UK Biobank field id (a whole number)",
                    path=path,
                )
            if int(word) not in fields:
                fields.append(int(word))
    if not fields:
        raise InputDataError("the nIDP field list names no field", path=path)
    return fields


def main_dataset_fields(path) -> set[int]:
    """The fields of a main-dataset CSV, from its header; a file that is not one is an error."""
    path = Path(path)
    if not path.is_file():
        raise InputDataError("the UK Biobank main dataset is missing", path=path)
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            header = next(csv.reader(fh), [])
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputDataError(
            f"cannot be read as the UK Biobank main dataset (a CSV file): {exc}", path=path
        ) from exc
    header = [h.strip() for h in header]
    if not header:
        raise InputDataError("the UK Biobank main dataset is empty", path=path)
    if header[0] != "eid":
        hint = " (tab-separated? the main dataset is a CSV)" if "\t" in header[0] else ""
        raise InputDataError(
            "the UK Biobank main dataset's first column must be 'eid' (the subject id); it is "
            f"{header[0][:40]!r}{hint}",
            path=path,
        )
    fields = set()
    for name in header[1:]:
        m = SHOWCASE.match(name) or RAP.match(name)
        if m:
            fields.add(int(m["field"]))
    if not fields:
        raise InputDataError(
            "no column in the showcase layout field-instance.array (6150-2.0) or p6150_i2_a0: "
            "is it the UK Biobank main dataset?",
            path=path,
        )
    return fields


def funpack_executable() -> str:
    """``fmrib_unpack`` of this Python environment, else the first on PATH."""
    found = shutil.which("fmrib_unpack", path=str(Path(sys.executable).parent)) or shutil.which(
        "fmrib_unpack"
    )
    if not found:
        raise ConfigError(
            "fmrib_unpack (FUNPACK) is not installed: install the workflow's environment "
            "(pip install -e '.[workflow]', or environment.yml)"
        )
    return found


def funpack_command(
    mains, out, descriptions, instances, fields_file=None, subjects_file=None, threads: int = 1
) -> list[str]:
    """The ``fmrib_unpack`` command line (see the module docstring)."""
    cmd = [funpack_executable(), "-cfg", ukb.CONFIG]
    if fields_file is None:
        cmd += ["-cfg", RECOMMENDED]
    cmd += ["-nd", "-nj", str(max(1, int(threads))), "-f", "tsv"]
    if fields_file is not None:
        cmd += ["-v", str(fields_file)]
    for instance in instances:
        cmd += ["-vi", str(int(instance))]
    if subjects_file is not None:
        cmd += ["-s", str(subjects_file)]
    cmd += ["-def", str(descriptions), str(out), *map(str, mains)]
    return cmd


def _cohort_ids(subjects_path) -> list[int]:
    table = pd.read_csv(subjects_path, sep="\t", dtype=str)
    ids = table["subject"].dropna().str.strip().str.replace(r"\.0$", "", regex=True)
    numeric = ids[ids.str.fullmatch(r"\d+")].astype(int).unique().tolist()
    if not numeric:
        raise InputDataError(
            "no subject id is a UK Biobank eid (a whole number): the main dataset cannot hold "
            "this cohort",
            path=subjects_path,
        )
    if len(numeric) < len(set(ids)):
        log.warning(
            "%d subject ids are not UK Biobank eids (whole numbers) and cannot be in the main "
            "dataset",
            len(set(ids)) - len(numeric),
        )
    return numeric


def extract_nidps(
    mains,
    out_nidps,
    out_descriptions,
    subjects=None,
    fields=None,
    instances=(2,),
    threads: int = 1,
) -> pd.DataFrame:
    """Run FUNPACK on the main dataset (``mains``: one or more CSVs); write the nIDP table
    and FUNPACK's column descriptions. ``subjects``: the checked subject table (its
    ``subject`` column restricts the rows); ``fields``: the field list file (None: FMRIB's
    recommended categories). Returns the table's shape as a one-row summary.
    """
    mains = [Path(m) for m in ([mains] if isinstance(mains, str | Path) else mains)]
    present: set[int] = set()
    for main in mains:
        present |= main_dataset_fields(main)
    wanted = read_field_list(fields) if fields is not None else None
    if wanted is not None:
        absent = [f for f in wanted if f not in present]
        if len(absent) == len(wanted):
            raise InputDataError(
                f"none of the {len(wanted)} fields of the nIDP field list {fields} is a column "
                f"of the main dataset (e.g. {', '.join(map(str, absent[:5]))})",
                path=mains[0],
            )
        if absent:
            log.warning(
                "%d field(s) of the field list are not in the main dataset: %s",
                len(absent),
                ", ".join(map(str, absent[:30])) + (" ..." if len(absent) > 30 else ""),
            )
    with tempfile.TemporaryDirectory(prefix="extract_nidps.") as tmp:
        tmp = Path(tmp)
        fields_file = subjects_file = None
        if wanted is not None:
            fields_file = tmp / "fields.txt"
            fields_file.write_text("".join(f"{f}\n" for f in wanted))
        if subjects is not None:
            subjects_file = tmp / "subjects.txt"
            ids = _cohort_ids(subjects)
            subjects_file.write_text("".join(f"{s}\n" for s in ids))
            log.info("rows: the %d subjects of %s", len(ids), subjects)
        with atomic_path(out_nidps) as table_tmp, atomic_path(out_descriptions) as desc_tmp:
            cmd = funpack_command(
                mains, table_tmp, desc_tmp, instances, fields_file, subjects_file, threads
            )
            log.info("running %s", " ".join(cmd))
            start = time.monotonic()
            done = subprocess.run(cmd, capture_output=True, text=True, errors="replace")
            seconds = time.monotonic() - start
            output = _ANSI.sub("", done.stdout + done.stderr)
            quiet = 0
            for line in output.splitlines():
                if any(noise in line for noise in _NOISE):
                    quiet += 1
                elif line.strip():
                    log.info("funpack: %s", line.rstrip())
            if quiet:
                log.info(
                    "funpack: %d messages about fields absent from this main dataset not shown",
                    quiet,
                )
            if done.returncode != 0:
                last = next((ln for ln in reversed(output.splitlines()) if ln.strip()), "")
                raise InputDataError(
                    f"FUNPACK (fmrib_unpack) failed with exit status {done.returncode}: "
                    f"{last.strip()[:300]} (its output is in this job's log)",
                    path=mains[0],
                )
            header = table_tmp.read_text(errors="replace").split("\n", 1)[0].split("\t")
            if header[0] != "eid" or len(header) < 2:
                raise InputDataError(
                    "FUNPACK kept no nIDP column of the main dataset (are the fields of the "
                    "list, at the visits of associations.instances, in it, for the cohort's "
                    "subjects?)",
                    path=mains[0],
                )
    rows = sum(1 for _ in open(out_nidps, encoding="utf-8", errors="replace")) - 1
    log.info(
        "FUNPACK wrote %d nIDP columns for %d subjects in %.1f s: %s", len(header) - 1, rows,
        seconds, out_nidps,
    )  # fmt: skip
    return pd.DataFrame([{"columns": len(header) - 1, "subjects": rows, "seconds": seconds}])
