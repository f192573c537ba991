"""The contrast table: which file holds each of the 57 AgeMapper contrasts, and how to scale it.

``config/contrasts.tsv`` has one row per contrast with columns

- ``contrast``: name used in file names and configs (e.g. ``T1_nonlinear``, ``rsfmri_3``);
- ``modality``: a coarse family for reports (structural, swi, diffusion, resting fmri, ...);
- ``resolution``: ``1mm`` or ``2mm`` (the MNI152 grid of the file);
- ``data_file``: path relative to a subject folder, as UK Biobank lays it out;
- ``volume``: index along the 4th axis for 4D files (rsfMRI components), empty for 3D files;
- ``normalise``: ``mean`` (divide by the mean of the cropped volume) or ``none``;
- ``scale_factor``: divisor applied to every voxel after normalisation.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from agemapper.errors import ConfigError
from agemapper.images.grids import GRIDS

COLUMNS = ["contrast", "modality", "resolution", "data_file", "volume", "normalise", "scale_factor"]
NORMALISATIONS = ("mean", "none")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_]*$")
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


def read_contrasts(path) -> dict[str, Contrast]:
    """Read and validate a contrast table; return contrasts by name, in file order."""
    try:
        table = pd.read_csv(path, sep="\t", dtype={"volume": "Int64"}, keep_default_na=True)
    except Exception as exc:  # pragma: no cover - pandas gives the reason
        raise ConfigError(f"contrast table {path}: cannot be read as TSV ({exc})") from exc
    missing = [c for c in COLUMNS if c not in table.columns]
    extra = [c for c in table.columns if c not in COLUMNS]
    if missing or extra:
        raise ConfigError(
            f"contrast table {path}: expected columns {COLUMNS}; missing {missing}, unknown {extra}"
        )
    contrasts: dict[str, Contrast] = {}
    for i, rec in table.iterrows():
        where = f"contrast table {path}, row {i + 2}"
        name = str(rec["contrast"])
        if not _NAME.match(name):
            raise ConfigError(f"{where}: contrast name {name!r} must be letters, digits and _")
        if name in contrasts:
            raise ConfigError(f"{where}: contrast {name!r} is listed twice")
        if rec["resolution"] not in GRIDS:
            raise ConfigError(
                f"{where}: resolution {rec['resolution']!r} of {name} is not one of {list(GRIDS)}"
            )
        if rec["normalise"] not in NORMALISATIONS:
            raise ConfigError(
                f"{where}: normalise {rec['normalise']!r} of {name} is not one of {NORMALISATIONS}"
            )
        scale = float(rec["scale_factor"])
        if not math.isfinite(scale) or scale <= 0:
            raise ConfigError(f"{where}: scale_factor of {name} must be a positive number")
        data_file = str(rec["data_file"])
        if data_file.startswith("/") or ".." in Path(data_file).parts:
            raise ConfigError(f"{where}: data_file of {name} must be relative to a subject folder")
        volume = None if pd.isna(rec["volume"]) else int(rec["volume"])
        if volume is not None and volume < 0:
            raise ConfigError(f"{where}: volume of {name} must be >= 0")
        contrasts[name] = Contrast(
            name=name,
            modality=str(rec["modality"]),
            resolution=str(rec["resolution"]),
            data_file=data_file,
            volume=volume,
            normalise=str(rec["normalise"]),
            scale_factor=scale,
        )
    return contrasts


def select(contrasts: dict[str, Contrast], names) -> list[Contrast]:
    unknown = [n for n in names if n not in contrasts]
    if unknown:
        raise ConfigError(
            f"unknown contrast(s) {unknown}; the contrast table has {len(contrasts)}: "
            f"{', '.join(list(contrasts)[:8])}, ..."
        )
    return [contrasts[n] for n in names]
