"""The MNI152 grids UK Biobank images come on, and the AgeMapper crop box.

FSL's MNI152 templates (which UK Biobank registers to) use a 182x218x182 grid at 1 mm and
91x109x91 at 2 mm, both with the origin voxel of the same world point. AgeMapper crops the box
x 10..170, y 12..204, z 0..160 mm of the grid, i.e. voxels [10:170, 12:204, 0:160] at 1 mm
(160x192x160) and [5:85, 6:102, 0:80] at 2 mm (80x96x80).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Grid:
    name: str
    shape: tuple[int, int, int]
    voxel_mm: float
    affine: tuple[tuple[float, ...], ...]
    crop: tuple[tuple[int, int], tuple[int, int], tuple[int, int]]

    @property
    def crop_shape(self) -> tuple[int, int, int]:
        return tuple(b - a for a, b in self.crop)

    @property
    def crop_slices(self) -> tuple[slice, slice, slice]:
        return tuple(slice(a, b) for a, b in self.crop)

    @property
    def affine_array(self) -> np.ndarray:
        return np.array(self.affine, dtype=float)


GRIDS: dict[str, Grid] = {
    "1mm": Grid(
        name="1mm",
        shape=(182, 218, 182),
        voxel_mm=1.0,
        affine=((-1.0, 0, 0, 90.0), (0, 1.0, 0, -126.0), (0, 0, 1.0, -72.0), (0, 0, 0, 1.0)),
        crop=((10, 170), (12, 204), (0, 160)),
    ),
    "2mm": Grid(
        name="2mm",
        shape=(91, 109, 91),
        voxel_mm=2.0,
        affine=((-2.0, 0, 0, 90.0), (0, 2.0, 0, -126.0), (0, 0, 2.0, -72.0), (0, 0, 0, 1.0)),
        crop=((5, 85), (6, 102), (0, 80)),
    ),
}

# The grid every AgeMapper network sees at full size: the 1 mm crop box.
FULL_TRAINING_SHAPE = GRIDS["1mm"].crop_shape


def get_grid(resolution: str) -> Grid:
    try:
        return GRIDS[resolution]
    except KeyError:
        raise ValueError(
            f"unknown resolution {resolution!r}; expected one of {sorted(GRIDS)}"
        ) from None
