"""Batches for training and prediction: cache -> device, prefetched; augmentation on the device.

A cache small enough (``preload_bytes``) is decoded once and held on the device. A larger one
is streamed: a background thread reads the next batches' packed records (mask bits + non-zero
voxels, :mod:`agemapper.cache`) into pinned memory while the device computes; on a GPU the
packed bytes are copied and decoded there (bit unpack + masked scatter), so the CPU never
decodes a volume and PCIe carries ~45% of the dense bytes. 2 mm caches stored at 2 mm are
upsampled on the device (``grid=False`` gives the stored grid: the trainer shifts 2 mm volumes
there, as the original did, before upsampling). The batch order is the caller's, so results do
not depend on it.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from agemapper.images.cache import decode_numpy, decode_torch, to_grid
from agemapper.images.preprocess import cache_paths, open_cache


class BatchSource:
    """Batches ``(x, age)`` of one cache: ``x`` is ``(k, 1, *shape)`` float32 on ``device``.

    Sample ``i`` is the i-th manifest entry (cache row ``manifest.row[i]``); ``shape`` is the
    training grid (the sidecar's ``shape``), which may be finer than the stored grid.
    """

    def __init__(self, cache, device: torch.device, preload_bytes: float = 4e9, prefetch: int = 2):
        self.cache, self.manifest = open_cache(cache)
        self.rows = self.manifest["row"].to_numpy()
        self.device = torch.device(device)
        self.stored_shape = tuple(self.cache.volume_shape)
        info = cache_paths(cache)["info"]
        shape = json.loads(info.read_text()).get("shape") if info.exists() else None
        self.shape = tuple(shape) if shape else self.stored_shape
        self.ages = torch.tensor(self.manifest["age"].to_numpy(), dtype=torch.float32)
        self.prefetch = max(0, int(prefetch))
        self.preloaded = None
        if len(self) and self.cache.dense_bytes * len(self) <= preload_bytes:
            parts = [self.rows[s : s + 64] for s in range(0, len(self), 64)]
            self.preloaded = torch.cat([self._decoded(self._read(p)) for p in parts])

    def __len__(self) -> int:
        return len(self.rows)

    # -- the two halves of a streamed batch: host side (any thread), device side

    def _read(self, rows: np.ndarray):
        masks, values, _ = self.cache.packed(rows)
        if self.device.type == "cpu":
            return torch.from_numpy(decode_numpy(masks, values, self.stored_shape))
        masks, values = torch.from_numpy(masks), torch.from_numpy(values)
        if self.device.type == "cuda":
            masks, values = masks.pin_memory(), values.pin_memory()
        return masks, values

    def _decoded(self, read) -> torch.Tensor:
        """Volumes ``(k, *stored_shape)`` on the device, in the cache's value type."""
        if isinstance(read, torch.Tensor):
            return read.to(self.device)
        masks, values = (t.to(self.device, non_blocking=True) for t in read)
        return decode_torch(masks, values, self.stored_shape)

    def _finish(self, volumes: torch.Tensor, index: torch.Tensor, grid: bool = True):
        x = volumes.float().unsqueeze(1)
        if grid:
            x = to_grid(x, self.shape)
        return x, self.ages[index].to(self.device)

    # -- public

    def get(self, index: torch.Tensor, grid: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Samples ``index`` on the training grid, or (``grid=False``) on the stored grid."""
        if self.preloaded is not None:
            return self._finish(self.preloaded[index.to(self.device)], index, grid)
        return self._finish(self._decoded(self._read(self.rows[index.numpy()])), index, grid)

    def batches(self, indices: Iterable[torch.Tensor], grid: bool = True) -> Iterator[tuple]:
        """``get`` for each index batch in order, reading up to ``prefetch`` batches ahead."""
        if self.preloaded is not None or self.prefetch == 0:
            for index in indices:
                yield self.get(index, grid)
            return
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch")
        pending: deque = deque()
        try:
            it = iter(indices)
            for index in it:
                pending.append((index, pool.submit(self._read, self.rows[index.numpy()])))
                if len(pending) > self.prefetch:
                    yield self._next(pending, grid)
            while pending:
                yield self._next(pending, grid)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _next(self, pending: deque, grid: bool):
        index, future = pending.popleft()
        return self._finish(self._decoded(future.result()), index, grid)


def draw_augmentation(n: int, generator: torch.Generator, max_shift: int):
    """The random draws of :func:`augment` for ``n`` samples: integer shifts ``(n, 3)`` in
    [-max_shift, max_shift] and mirror coin flips ``(n,)``, in this order from ``generator``."""
    shifts = torch.randint(-max_shift, max_shift + 1, (n, 3), generator=generator)
    flips = torch.rand(n, generator=generator) < 0.5
    return shifts, flips


def apply_augmentation(x: torch.Tensor, shifts: torch.Tensor, flips: torch.Tensor | None):
    """The original's per-sample augmentation as one gather on ``x``'s device.

    For each sample of ``x`` ``(n, 1, X, Y, Z)``, in the original's order
    (``utils/data_utils.py``, ``DynamicDataMapper.__getitem__``): a left-right flip (axis 0)
    where ``flips`` says so, then ``np.roll`` by ``shifts`` along each axis, then the z slices
    that wrapped around are zeroed when the z shift is negative.
    """
    n = x.shape[0]
    dev = x.device
    s = shifts.to(dev)
    sx, sy, sz = x.shape[2:]
    ix = (torch.arange(sx, device=dev) - s[:, 0:1]) % sx  # rolled by dx: out[i] = in[i - dx]
    if flips is not None:
        ix = torch.where(flips.to(dev)[:, None], sx - 1 - ix, ix)  # ... of the flipped volume
    iy = (torch.arange(sy, device=dev) - s[:, 1:2]) % sy
    iz = (torch.arange(sz, device=dev) - s[:, 2:3]) % sz
    b = torch.arange(n, device=dev)[:, None, None, None]
    out = x[:, 0][b, ix[:, :, None, None], iy[:, None, :, None], iz[:, None, None, :]]
    wrapped = torch.arange(sz, device=dev)[None, :] >= sz + s[:, 2:3].clamp(max=0)  # (n, z)
    out.masked_fill_(wrapped[:, None, None, :], 0)
    return out.unsqueeze(1)


def augment(x: torch.Tensor, generator: torch.Generator, max_shift: int, mirror: bool):
    """Random integer shifts in [-max_shift, max_shift] voxels of ``x``'s grid per axis and
    sample, after (``mirror``) a left-right flip of half the samples: the original's
    augmentation (:func:`apply_augmentation`). The draws come from ``generator`` (CPU) in a
    fixed order, so runs repeat on any device.
    """
    if max_shift <= 0 and not mirror:
        return x
    shifts, flips = draw_augmentation(x.shape[0], generator, max_shift)
    return apply_augmentation(x, shifts, flips if mirror else None)
