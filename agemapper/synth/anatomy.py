"""A brain in FSL's MNI152 space, built from the templates nilearn ships (no download).

nilearn's ICBM 2009a templates (T1, grey- and white-matter probability) sit on a 197x233x189
grid at 1 mm with origin (-98, -134, -72). FSL's MNI152 grid (182x218x182, origin voxel at world
(90, -126, -72), x flipped) is an integer re-indexing of it, so the 1 mm maps are exact; the
2 mm maps are [1, 2, 1]-smoothed and subsampled at the FSL 2 mm voxel centres.

From those maps we derive what the synthetic contrasts need: CSF, a brain mask, distance to the
ventricles, cortical and deep grey matter, a white-matter skeleton, periventricular white matter,
smooth subject-variability fields, and 25 resting-state-like component maps.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from agemapper.images.grids import GRIDS


@dataclass
class Anatomy:
    """Maps on one grid, flattened to the voxels of ``mask`` (``index`` gives their positions)."""

    grid: str
    shape: tuple[int, int, int]
    mask: np.ndarray  # bool volume
    index: np.ndarray  # flat indices of mask voxels
    maps: dict  # name -> float32 vector over mask voxels (or (k, n) for stacks)

    def volume(self, values: np.ndarray, dtype=np.float32, quantum: float | None = None):
        """Scatter mask-voxel values (or a (k, voxels) stack -> 4D) into a volume.

        With an integer ``dtype`` and a ``quantum``, values are stored as round(v / quantum).
        The result is Fortran-ordered, NIfTI's own layout, so writing it is a plain copy.
        """
        values = np.asarray(values, dtype=np.float32)
        if quantum is not None and np.issubdtype(np.dtype(dtype), np.integer):
            info = np.iinfo(dtype)
            values = np.clip(np.rint(values / np.float32(quantum)), info.min, info.max)
        stack = values.reshape(-1, len(self.index))
        out = np.zeros((stack.shape[0], int(np.prod(self.shape))), dtype=dtype)
        out[:, self.index_f] = stack
        shape = self.shape if values.ndim == 1 else (*self.shape, stack.shape[0])
        return out.reshape(-1).reshape(shape, order="F")

    @property
    def index_f(self) -> np.ndarray:
        """Mask voxels as flat indices in Fortran (NIfTI) order."""
        if not hasattr(self, "_index_f"):
            ijk = np.unravel_index(self.index, self.shape)
            self._index_f = np.ravel_multi_index(ijk, self.shape, order="F")
        return self._index_f


def _nilearn_to_fsl(data: np.ndarray) -> np.ndarray:
    """Re-index an ICBM 2009a 1 mm volume onto FSL's MNI152 1 mm grid (exact, no interpolation)."""
    # FSL voxel (i, j, k): x = 90 - i, y = j - 126, z = k - 72
    # nilearn voxel (a, b, c): x = a - 98, y = b - 134, z = c - 72
    # hence a = 188 - i, b = j + 8, c = k
    fsl = data[188 - np.arange(182)][:, 8 : 8 + 218, 0:182]
    return np.ascontiguousarray(fsl, dtype=np.float32)


@functools.lru_cache(maxsize=1)
def templates_1mm() -> dict[str, np.ndarray]:
    from nilearn import datasets

    t1 = _nilearn_to_fsl(datasets.load_mni152_template(resolution=1).get_fdata())
    gm = _nilearn_to_fsl(datasets.load_mni152_gm_template(resolution=1).get_fdata())
    wm = _nilearn_to_fsl(datasets.load_mni152_wm_template(resolution=1).get_fdata())
    brain = ndimage.binary_fill_holes((t1 > 0) | (gm + wm > 0.2))
    total = np.clip(gm + wm, 0, 1)
    csf = np.where(brain, 1.0 - total, 0.0).astype(np.float32)
    return {"t1": t1, "gm": gm * brain, "wm": wm * brain, "csf": csf, "brain": brain}


def world_coordinates(grid: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    g = GRIDS[grid]
    ii, jj, kk = np.meshgrid(*(np.arange(s) for s in g.shape), indexing="ij")
    aff = g.affine_array
    x = aff[0, 0] * ii + aff[0, 3]
    y = aff[1, 1] * jj + aff[1, 3]
    z = aff[2, 2] * kk + aff[2, 3]
    return x.astype(np.float32), y.astype(np.float32), z.astype(np.float32)


def _ellipsoid(x, y, z, centre, radii) -> np.ndarray:
    cx, cy, cz = centre
    rx, ry, rz = radii
    return ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 + ((z - cz) / rz) ** 2 <= 1.0


def _smooth_fields(x, y, z, n: int, seed: int) -> np.ndarray:
    """Low-frequency fields (products of cosines over the head), unit peak amplitude."""
    rng = np.random.default_rng(seed)
    fields = []
    for _ in range(n):
        kx, ky, kz = rng.uniform(0.5, 2.0, 3)
        px, py, pz = rng.uniform(0, 2 * np.pi, 3)
        f = (
            np.cos(kx * np.pi * x / 90 + px)
            * np.cos(ky * np.pi * y / 110 + py)
            * np.cos(kz * np.pi * z / 90 + pz)
        )
        fields.append(f.astype(np.float32))
    return np.stack(fields)


def _component_maps(x, y, z, brain, gm, n: int, seed: int) -> np.ndarray:
    """Resting-state-like spatial maps: 2-3 signed Gaussian blobs each, weighted to grey matter."""
    rng = np.random.default_rng(seed)
    inside = np.argwhere(brain)
    maps = []
    for _ in range(n):
        m = np.zeros(brain.shape, dtype=np.float32)
        for b in range(rng.integers(2, 4)):
            i, j, k = inside[rng.integers(len(inside))]
            cx, cy, cz = x[i, j, k], y[i, j, k], z[i, j, k]
            width = rng.uniform(10, 18)
            sign = 1.0 if b == 0 else rng.choice([-0.6, 0.6])
            m += sign * np.exp(-((x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2) / (2 * width**2))
            m += sign * np.exp(-((x + cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2) / (2 * width**2))
        maps.append(m * (0.3 + 0.7 * gm))
    return np.stack(maps)


def _downsample(vol: np.ndarray) -> np.ndarray:
    """FSL 1 mm -> 2 mm: [1, 2, 1] smoothing per axis, then every second voxel from 0."""
    k = np.array([0.25, 0.5, 0.25], dtype=np.float32)
    out = vol.astype(np.float32)
    for axis in range(3):
        out = ndimage.convolve1d(out, k, axis=axis, mode="constant")
    return np.ascontiguousarray(out[::2, ::2, ::2][:91, :109, :91])


@functools.lru_cache(maxsize=2)
def anatomy(grid: str, n_fields: int = 6, n_components: int = 25, seed: int = 7) -> Anatomy:
    """All maps the synthetic contrasts need, on the ``1mm`` or ``2mm`` FSL grid."""
    t = templates_1mm()
    base = {k: t[k] for k in ("gm", "wm", "csf")}
    if grid == "2mm":
        base = {k: _downsample(v) for k, v in base.items()}
        brain = _downsample(t["brain"].astype(np.float32)) > 0.5
    else:
        brain = t["brain"]
    gm, wm, csf = base["gm"], base["wm"], base["csf"]
    x, y, z = world_coordinates(grid)
    vox = GRIDS[grid].voxel_mm

    # ventricles: CSF in a box around the lateral ventricles; distance to them in mm
    ventricles = (csf > 0.6) & _ellipsoid(x, y, z, (0, -10, 12), (28, 40, 22)) & brain
    dist_vent = ndimage.distance_transform_edt(~ventricles) * vox
    # distance to the outside of the brain, for cortex vs deep structures
    depth = ndimage.distance_transform_edt(brain) * vox
    cortical = np.clip(gm * (depth < 12), 0, 1)
    deep = (
        _ellipsoid(x, y, z, (24, 2, 0), (8, 14, 8))
        | _ellipsoid(x, y, z, (-24, 2, 0), (8, 14, 8))
        | _ellipsoid(x, y, z, (13, 12, 10), (5, 10, 8))
        | _ellipsoid(x, y, z, (-13, 12, 10), (5, 10, 8))
    ) & (gm > 0.2)
    wm_core = wm > 0.8
    wm_depth = ndimage.distance_transform_edt(wm_core) * vox
    ridge = wm_depth >= ndimage.maximum_filter(wm_depth, size=3) - 0.6 * vox
    skeleton = wm_core & ridge & (wm_depth >= 1.0 * vox)
    periventricular = np.clip(wm * np.exp(-dist_vent / 6.0), 0, 1)
    frontal = np.clip(0.5 + y / 120.0, 0, 1)

    fields = _smooth_fields(x, y, z, n_fields, seed)
    # resting-state component maps exist only at 2 mm, like UK Biobank's dual-regression maps
    comps = _component_maps(x, y, z, brain, gm, n_components, seed + 1) if grid == "2mm" else []

    mask = brain
    index = np.flatnonzero(mask.ravel())

    def vec(a):
        return np.ascontiguousarray(a.reshape(-1)[index], dtype=np.float32)

    maps = {
        "gm": vec(gm),
        "wm": vec(wm),
        "csf": vec(csf),
        "dist_vent": vec(dist_vent),
        "cortical": vec(cortical),
        "deep": vec(deep.astype(np.float32)),
        "skeleton": vec(skeleton.astype(np.float32)),
        "skeleton_depth": vec(np.clip(wm_depth / 6.0, 0, 1)),
        "periventricular": vec(periventricular),
        "frontal": vec(frontal),
        "fields": np.stack([vec(f) for f in fields]),
        "components": np.stack([vec(c) for c in comps]) if len(comps) else None,
    }
    return Anatomy(grid, GRIDS[grid].shape, mask, index, maps)
