"""The contrast table: which file holds each of the 57 AgeMapper contrasts, and how to scale it.

``config/contrasts.tsv`` has one row per contrast (``workflow/schemas/contrasts.schema.yaml``
says what each may hold) with columns

- ``contrast``: name used in file names and configs (e.g. ``T1_nonlinear``, ``rsfmri_3``);
- ``modality``: a coarse family for reports (structural, swi, diffusion, resting fmri, ...);
- ``resolution``: ``1mm`` or ``2mm`` (the MNI152 grid of the file);
- ``data_file``: path relative to a subject folder, as UK Biobank lays it out;
- ``volume``: index along the 4th axis for 4D files (rsfMRI components), empty for 3D files;
- ``normalise``: ``mean`` (divide by the mean of the cropped volume) or ``none``;
- ``scale_factor``: divisor applied to every voxel after normalisation.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from agemapper.errors import ConfigError
from agemapper.tables import load_schema, repository_file, row_problems, unknown_columns

# The columns of workflow/schemas/contrasts.schema.yaml, in file order.
COLUMNS = ["contrast", "modality", "resolution", "data_file", "volume", "normalise", "scale_factor"]
DEFAULT_TABLE = "config/contrasts.tsv"
# Contrasts the original divides by their cropped mean before scaling.
MEAN_NORMALISED = ("T1_nonlinear", "T1_linear", "T2_nonlinear")


@dataclass(frozen=True)
class Contrast:
    name: str
    modality: str
    resolution: str
    data_file: str
    volume: int | None
    normalise: str
    scale_factor: float

    @property
    def is_4d(self) -> bool:
        return self.volume is not None

    def path_for(self, data_directory, subject) -> Path:
        return Path(data_directory) / str(subject) / self.data_file

    @classmethod
    def from_dict(cls, row: dict) -> Contrast:
        """The inverse of :meth:`as_dict` (a row of the contrast table)."""
        return cls(**{("name" if k == "contrast" else k): v for k, v in row.items()})

    def as_dict(self) -> dict:
        return {
            "contrast": self.name,
            "modality": self.modality,
            "resolution": self.resolution,
            "data_file": self.data_file,
            "volume": self.volume,
            "normalise": self.normalise,
            "scale_factor": self.scale_factor,
        }


def modality_of(name: str) -> str:
    if name.startswith("rsfmri_"):
        return "resting fMRI"
    if name.startswith("tfmri"):
        return "task fMRI"
    if name.startswith("tbss_") or name == "tracts":
        return "diffusion"
    if name == "swi":
        return "susceptibility"
    return "structural"


def from_released_table(path) -> pd.DataFrame:
    """Convert the release's ``scaling_values_simple.csv`` into our tidy contrast table."""
    raw = pd.read_csv(path, index_col=0)
    rows = []
    for name, rec in raw.iterrows():
        match = re.fullmatch(r"rsfmri_(\d+)", str(name))
        rows.append(
            {
                "contrast": name,
                "modality": modality_of(str(name)),
                "resolution": rec["resolution"],
                "data_file": rec["data_file"],
                "volume": int(match.group(1)) if match else None,
                "normalise": "mean" if name in MEAN_NORMALISED else "none",
                "scale_factor": float(rec["scale_factor"]),
            }
        )
    table = pd.DataFrame(rows, columns=COLUMNS)
    table["volume"] = table["volume"].astype("Int64")
    return table


def default_table() -> Path:
    """``config/contrasts.tsv`` of the repository the package sits in (from any directory)."""
    return repository_file(DEFAULT_TABLE)


def read_table(path) -> pd.DataFrame:
    """The contrast table as it is in the file (one row per contrast), unchecked."""
    try:
        return pd.read_csv(path, sep="\t", dtype={"volume": "Int64"}, keep_default_na=True)
    except Exception as exc:  # pandas gives the reason
        raise ConfigError(f"contrast table {path}: cannot be read as TSV ({exc})") from exc


def read_contrasts(path=None) -> dict[str, Contrast]:
    """Read a contrast table (default: :func:`default_table`) and check it against
    ``workflow/schemas/contrasts.schema.yaml``; return contrasts by name, in file order.
    """
    path = default_table() if path is None else path
    table = read_table(path)
    schema = load_schema("contrasts")
    missing = [c for c in COLUMNS if c not in table.columns]
    extra = unknown_columns(table, schema)
    if missing or extra:
        raise ConfigError(
            f"contrast table {path}: expected columns {COLUMNS}; missing {missing}, unknown {extra}"
        )
    for i, _, sentence in row_problems(table, schema):
        raise ConfigError(f"contrast table {path}, row {i + 2}: {sentence}")
    # what a row schema cannot say: names are unique, scale factors finite (JSON has no inf)
    twice = table.contrast[table.contrast.duplicated()].tolist()
    if twice:
        raise ConfigError(f"contrast table {path}: contrast(s) {twice} listed twice")
    infinite = table.contrast[~np.isfinite(table.scale_factor.astype(float))].tolist()
    if infinite:
        raise ConfigError(f"contrast table {path}: scale_factor of {infinite} is not finite")
    return {
        rec.contrast: Contrast(
            name=str(rec.contrast),
            modality=str(rec.modality),
            resolution=str(rec.resolution),
            data_file=str(rec.data_file),
            volume=None if pd.isna(rec.volume) else int(rec.volume),
            normalise=str(rec.normalise),
            scale_factor=float(rec.scale_factor),
        )
        for rec in table.itertuples(index=False)
    }


def by_source(contrasts) -> dict[str, list[Contrast]]:
    """Contrasts grouped by the file they read, in their order: one preprocessing job decodes
    each file once for all of them (the 25 resting-state maps are volumes of one 4D file).

    Keys name the groups in file and rule names: a contrast reading a file of its own keeps its
    name; a group of several is named by what their names share (``rsfmri`` for
    ``rsfmri_0`` ... ``rsfmri_24``), else by its file (``fMRI_tfMRI_feat_stats``).
    """
    files: dict[str, list[Contrast]] = {}
    for c in contrasts:
        files.setdefault(c.data_file, []).append(c)
    groups: dict[str, list[Contrast]] = {}
    singles = {g[0].name for g in files.values() if len(g) == 1}
    for data_file, group in files.items():
        name = group[0].name
        if len(group) > 1:
            name = re.sub(r"[_\d]+$", "", os.path.commonprefix([c.name for c in group]))
            if not re.fullmatch(r"[A-Za-z]\w*", name) or name in singles or name in groups:
                name = re.sub(r"\W+", "_", data_file.removesuffix(".gz").removesuffix(".nii"))
                name = name.strip("_")
        groups[name] = group
    return groups


def select(contrasts: dict[str, Contrast], names) -> list[Contrast]:
    unknown = [n for n in names if n not in contrasts]
    if unknown:
        raise ConfigError(
            f"unknown contrast(s) {unknown}; the contrast table has {len(contrasts)}: "
            f"{', '.join(list(contrasts)[:8])}, ..."
        )
    return [contrasts[n] for n in names]
