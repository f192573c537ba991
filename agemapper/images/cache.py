"""The preprocessed-volume cache: what training and prediction read, compact and fast.

UK Biobank images are brain-extracted, so most of the AgeMapper box is zero background (about
60% for T1/T2/SWI, 98% for a TBSS skeleton). A cache stores, per volume, its non-zero mask as
packed bits (1 bit per voxel) and only the non-zero voxels, in C order, as float16 (the default:
4.4 MB instead of 9.8 MB dense for a 1 mm T1 volume at 160x192x160) or float32. The mask is
lossless; float16 values round each voxel to a relative 2^-11 (0.05%), float32 keeps the
original's float32 input exactly (``preprocess.cache_dtype``; docs/fidelity.md measures what the
rounding does to predictions). A cache decodes with one bit-unpack and one masked scatter, on the
CPU (numpy) or on the GPU (the packed bytes are what crosses PCIe).

File layout (``AGEMAPPERCACHE01``), little-endian:

- bytes 0-15: the magic string; bytes 16-23: uint64 offset of the JSON index;
- one record per written volume, 64-byte aligned: ``ceil(V / 8)`` mask bytes
  (``numpy.packbits``, most significant bit first), then ``count`` values (float16 or float32);
- the JSON index: ``{"shape": [x, y, z], "dtype": "float16", "records": [[offset, count] | null]}``
  (``dtype`` ``float16`` or ``float32``)
  with one entry per cache row (``null`` for a row never written, e.g. a subject QC skipped).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from agemapper.errors import InputDataError
from agemapper.io import atomic_path

MAGIC = b"AGEMAPPERCACHE01"
HEADER = len(MAGIC) + 8
ALIGN = 64
VALUE_DTYPES = {"float16": np.dtype("<f2"), "float32": np.dtype("<f4")}


class Record(NamedTuple):
    """One volume as a cache stores it: shape, packed non-zero mask, non-zero values."""

    shape: tuple[int, ...]
    mask: np.ndarray  # uint8, ceil(V / 8) bytes, numpy.packbits order
    values: np.ndarray  # float16 or float32, the non-zero voxels in C order


def encode(volume: np.ndarray, dtype: str = "float16") -> Record:
    """The cache record of one volume: its voxels in ``dtype`` (float16: round to nearest
    even), the mask of the non-zero ones and their values, in C order.

    The same bytes as casting with numpy and selecting ``v != 0``, at library speed: a float32
    volume is cast by torch (vectorised), and one in NIfTI's Fortran order (what a crop of a
    decoded file is) is brought to C order as float16 in two cache-friendly transposes instead
    of numpy's element-by-element strided cast (about 8 ms instead of 40 ms for a 1 mm crop).
    NaN is non-zero and kept, so QC downstream still sees it; -0.0 is zero.
    """
    v = np.asarray(volume)
    if dtype == "float32":  # the original's input type: no rounding to speed up
        flat = np.ascontiguousarray(v, dtype=VALUE_DTYPES[dtype]).reshape(-1)
        mask = flat != 0  # NaN is non-zero and kept; -0.0 is zero
        return Record(tuple(v.shape), np.packbits(mask), flat[mask])
    fast = v.dtype == np.float32 and v.flags.writeable and min(v.strides, default=1) > 0
    if fast and v.ndim == 3 and v.flags.f_contiguous and not v.flags.c_contiguous:
        half = _reverse_axes(torch.from_numpy(v.T).half().numpy())  # v.T: C-ordered (z, y, x)
    elif fast and v.flags.c_contiguous:
        half = torch.from_numpy(v).half().numpy()
    else:  # another type or layout: numpy's own cast (float64 -> float16 in one rounding)
        half = np.ascontiguousarray(v, dtype=VALUE_DTYPES["float16"])
    flat = half.reshape(-1)
    mask = (flat.view(np.uint16) & 0x7FFF) != 0  # every bit but the sign: -0.0 is zero
    values = flat[mask]
    if v.dtype == np.float32 and ((values.view(np.uint16) & 0x7FFF) > 0x7C00).any():
        # NaN: the hardware cast quiets a signalling NaN's payload, numpy keeps it; numpy's
        # bytes it is (NaN never reaches a cache from preprocessing, which refuses it)
        return encode(np.ascontiguousarray(v, dtype=VALUE_DTYPES["float16"]))
    return Record(tuple(half.shape), np.packbits(mask), values)


def _reverse_axes(a: np.ndarray) -> np.ndarray:
    """``a`` (C-contiguous, shape (z, y, x)) as a C-contiguous (x, y, z) array: one 2D
    transpose (z, y*x) -> (y*x, z), then whole rows of z swapped between (y, x) and (x, y)."""
    z, y, x = a.shape
    yxz = np.ascontiguousarray(a.reshape(z, y * x).T).reshape(y, x, z)
    return np.ascontiguousarray(yxz.transpose(1, 0, 2))


class CacheWriter:
    """Write volumes into a new cache, atomically (nothing appears until :meth:`close`).

    With ``partial`` (a checkpoint path outside the outputs), the cache is written there and a
    journal beside it (``partial`` + ``.journal``, one JSON line per record, after the record)
    says what is on disk; a writer opened again on the same partial with the same
    ``fingerprint`` resumes: records the journal lists (and ``keep`` accepts) are kept, the
    file is truncated after the last of them, :attr:`done` maps their rows to the ``extra``
    each was written with. :meth:`close` renames the partial into place and removes the
    journal. Without ``partial`` the cache is written under a temporary name next to ``path``.
    ``dtype`` is the value type, ``float16`` or ``float32``.
    """

    def __init__(self, path, rows: int, shape: Sequence[int], partial=None, fingerprint=None,
                 keep=None, dtype: str = "float16"):  # fmt: skip
        if dtype not in VALUE_DTYPES:
            raise ValueError(f"cache dtype {dtype!r}; expected one of {sorted(VALUE_DTYPES)}")
        self.dtype_name = dtype
        self.dtype = VALUE_DTYPES[dtype]
        self.path = Path(path)
        self.shape = tuple(int(s) for s in shape)
        self.voxels = math.prod(self.shape)
        self.mask_bytes = (self.voxels + 7) // 8
        self.records: list = [None] * int(rows)
        self.done: dict[int, dict] = {}
        self.stored_bytes = 0
        self._atomic = None
        self._journal = None
        if partial is None:
            self._atomic = atomic_path(self.path, suffix=".cache")
            self._tmp = self._atomic.__enter__()
            self._fh = open(self._tmp, "wb")  # noqa: SIM115 (closed in close/abort)
            self._fh.write(MAGIC + (0).to_bytes(8, "little"))
            self._pos = HEADER
            return
        self._tmp = Path(partial)
        self._tmp.parent.mkdir(parents=True, exist_ok=True)
        journal = Path(f"{self._tmp}.journal")
        head = {"fingerprint": fingerprint, "rows": int(rows), "shape": list(self.shape),
                "dtype": dtype}  # fmt: skip
        kept = self._resume(journal, head, keep) if self._tmp.exists() else []
        if not kept:
            self._tmp.unlink(missing_ok=True)
            self._fh = open(self._tmp, "wb")  # noqa: SIM115
            self._fh.write(MAGIC + (0).to_bytes(8, "little"))
            self._pos = HEADER
        else:
            self._fh = open(self._tmp, "r+b")  # noqa: SIM115
            self._pos = (
                kept[-1]["offset"] + self.mask_bytes + self.dtype.itemsize * kept[-1]["count"]
            )
            self._fh.truncate(self._pos)
            self._fh.seek(self._pos)
        for rec in kept:
            self.records[rec["row"]] = [rec["offset"], rec["count"]]
            self.done[rec["row"]] = rec.get("extra") or {}
            self.stored_bytes += self.mask_bytes + self.dtype.itemsize * rec["count"]
        self._journal = open(journal, "w")  # noqa: SIM115
        self._journal.write(json.dumps(head) + "\n")
        for rec in kept:
            self._journal.write(json.dumps(rec) + "\n")
        self._journal.flush()

    def _resume(self, journal: Path, head: dict, keep) -> list[dict]:
        """The journal's complete records, in order, up to the first one not on disk or kept."""
        try:
            lines = journal.read_text().splitlines()
            if not lines or json.loads(lines[0]) != head:
                return []
        except (OSError, ValueError):
            return []
        size = self._tmp.stat().st_size
        kept = []
        for line in lines[1:]:
            try:
                rec = json.loads(line)
            except ValueError:  # a line cut by a kill
                break
            end = rec["offset"] + self.mask_bytes + self.dtype.itemsize * rec["count"]
            if end > size or (keep is not None and not keep(rec["row"], rec.get("extra") or {})):
                break
            kept.append(rec)
        return kept

    def write(self, row: int, volume: np.ndarray, extra: dict | None = None) -> int:
        """Store ``volume`` (shape ``self.shape``) as cache row ``row``; return its bytes."""
        shape = np.shape(volume)
        if shape != self.shape:
            raise ValueError(f"volume of shape {shape} for a cache of shape {self.shape}")
        return self.write_record(row, encode(volume, self.dtype_name), extra)

    def write_record(self, row: int, record: Record, extra: dict | None = None) -> int:
        """Store a volume :func:`encode` made (e.g. in a worker thread) as row ``row``."""
        if record.shape != self.shape:
            raise ValueError(f"volume of shape {record.shape} for a cache of shape {self.shape}")
        if record.values.dtype != self.dtype:
            raise ValueError(f"{record.values.dtype} values for a {self.dtype_name} cache")
        pad = -self._pos % ALIGN
        self._fh.write(b"\0" * pad)
        self._pos += pad
        count = int(record.values.size)
        self.records[row] = [self._pos, count]
        self._fh.write(record.mask.data)
        self._fh.write(record.values.data)
        size = self.mask_bytes + record.values.nbytes
        if self._journal is not None:  # the record first, then the line that vouches for it
            self._fh.flush()
            rec = {"row": row, "offset": self._pos, "count": count, "extra": extra}
            self._journal.write(json.dumps(rec) + "\n")
            self._journal.flush()
        self._pos += size
        self.stored_bytes += size
        return size

    def close(self) -> None:
        index = {"shape": list(self.shape), "dtype": self.dtype_name, "records": self.records}
        self._fh.write(json.dumps(index).encode())
        self._fh.seek(len(MAGIC))
        self._fh.write(self._pos.to_bytes(8, "little"))
        self._fh.close()
        if self._atomic is not None:
            self._atomic.__exit__(None, None, None)
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self._tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(self._tmp, self.path)
        self._journal.close()
        Path(self._journal.name).unlink(missing_ok=True)

    def abort(self, exc: BaseException) -> None:
        """Stop: a temporary file is removed; a partial and its journal stay, to resume."""
        self._fh.close()
        if self._atomic is not None:
            self._atomic.__exit__(type(exc), exc, exc.__traceback__)
        else:
            self._journal.close()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc is None:
            self.close()
        else:
            self.abort(exc)
        return False


class VolumeCache:
    """Read access to a cache: ``cache[rows]`` gives dense volumes ``(k, x, y, z)`` in the
    cache's value type (``dtype``: float16 or float32)."""

    def __init__(self, path):
        self.path = Path(path)
        try:
            self._buf = np.memmap(self.path, dtype=np.uint8, mode="r")
            if bytes(self._buf[: len(MAGIC)]) != MAGIC:
                raise ValueError("not an AgeMapper cache (bad magic)")
            at = int.from_bytes(bytes(self._buf[len(MAGIC) : HEADER]), "little")
            index = json.loads(bytes(self._buf[at:]).decode())
            if index.get("dtype", "float16") not in VALUE_DTYPES:
                raise ValueError(f"unknown value type {index.get('dtype')!r}")
        except (OSError, ValueError) as exc:
            raise InputDataError(f"unreadable cache ({exc})", path=self.path) from exc
        self.volume_shape = tuple(index["shape"])
        self.voxels = math.prod(self.volume_shape)
        self.mask_bytes = (self.voxels + 7) // 8
        records = index["records"]
        self.offsets = np.array([r[0] if r else -1 for r in records], dtype=np.int64)
        self.counts = np.array([r[1] if r else 0 for r in records], dtype=np.int64)
        self.shape = (len(records), *self.volume_shape)
        self.dtype = VALUE_DTYPES[index.get("dtype", "float16")]

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def dense_bytes(self) -> int:
        """Bytes of one volume decoded (in the cache's value type)."""
        return self.voxels * self.dtype.itemsize

    def stored_bytes(self, rows=None) -> np.ndarray:
        rows = np.arange(len(self)) if rows is None else np.asarray(rows)
        return self.mask_bytes + self.dtype.itemsize * self.counts[rows]

    def _check(self, rows: np.ndarray) -> None:
        missing = rows[self.offsets[rows] < 0]
        if missing.size:
            raise InputDataError(f"rows {missing.tolist()} were never written", path=self.path)

    def packed(self, rows) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Masks ``(k, ceil(V/8))`` uint8, the rows' values concatenated (``dtype``), counts."""
        rows = np.atleast_1d(np.asarray(rows, dtype=np.int64))
        self._check(rows)
        counts = self.counts[rows]
        masks = np.empty((len(rows), self.mask_bytes), dtype=np.uint8)
        values = np.empty(int(counts.sum()), dtype=self.dtype)
        size = self.dtype.itemsize
        at = 0
        for i, (offset, count) in enumerate(zip(self.offsets[rows], counts, strict=True)):
            masks[i] = self._buf[offset : offset + self.mask_bytes]
            start = offset + self.mask_bytes
            values[at : at + count] = self._buf[start : start + size * count].view(self.dtype)
            at += count
        return masks, values, counts

    def __getitem__(self, rows) -> np.ndarray:
        scalar = np.ndim(rows) == 0
        masks, values, _ = self.packed(rows)
        out = decode_numpy(masks, values, self.volume_shape)
        return out[0] if scalar else out


def decode_numpy(masks: np.ndarray, values: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Dense volumes (in ``values.dtype``) from packed masks and concatenated values (CPU)."""
    voxels = math.prod(shape)
    mask = np.unpackbits(masks, axis=1, count=voxels).view(bool)
    out = np.zeros((len(masks), voxels), dtype=values.dtype)
    out[mask] = values
    return out.reshape(len(masks), *shape)


def decode_torch(masks: torch.Tensor, values: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Dense volumes ``(k, x, y, z)`` in ``values.dtype`` on ``masks.device`` (e.g. the GPU)."""
    voxels = math.prod(shape)
    shifts = torch.arange(7, -1, -1, dtype=torch.uint8, device=masks.device)  # MSB first
    mask = ((masks.unsqueeze(-1) >> shifts) & 1).bool().reshape(len(masks), -1)[:, :voxels]
    out = torch.zeros((len(masks), voxels), dtype=values.dtype, device=masks.device)
    out.masked_scatter_(mask, values)
    return out.reshape(len(masks), *shape)


def to_grid(x: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Batch ``(k, 1, x, y, z)`` resampled to ``shape``: trilinear, aligned corners (2 mm -> 1 mm
    as the original network did on the GPU); identity when the shapes already agree."""
    shape = tuple(int(s) for s in shape)
    if tuple(x.shape[2:]) == shape:
        return x
    return F.interpolate(x, size=shape, mode="trilinear", align_corners=True)
