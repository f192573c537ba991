"""Weights and training state in formats that cannot execute code.

Weights and checkpoints are safetensors files: raw tensors plus a JSON string of metadata.
Nothing is ever unpickled; where a foreign ``.pth`` must be read, :func:`load_torch_weights`
uses :mod:`agemapper.networks.foreign` (``torch.load(weights_only=True)``, which refuses
arbitrary objects).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from agemapper.errors import InputDataError
from agemapper.io import atomic_path

META_KEY = "agemapper"


def save_tensors(path, tensors: dict[str, torch.Tensor], metadata: dict) -> None:
    """Save tensors and JSON-able metadata to a safetensors file, atomically."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file(tensors, str(tmp), metadata={META_KEY: json.dumps(metadata, default=_jsonable)})


def load_tensors(path) -> tuple[dict[str, torch.Tensor], dict]:
    """Load a safetensors file written by :func:`save_tensors`."""
    path = Path(path)
    if not path.exists():
        raise InputDataError("file is missing", path=path)
    try:
        tensors = load_file(str(path))
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise InputDataError(f"not a readable safetensors file ({exc})", path=path) from exc
    return tensors, json.loads(meta.get(META_KEY, "{}"))


def read_metadata(path) -> dict:
    """The metadata of a safetensors file written by :func:`save_tensors`, without reading
    its tensors (the JSON header only: cheap for a planning step)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.exists():
        raise InputDataError("file is missing", path=path)
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
        return json.loads(meta.get(META_KEY, "{}"))
    except (SafetensorError, OSError, ValueError) as exc:
        raise InputDataError(f"not a readable safetensors file ({exc})", path=path) from exc


def load_torch_weights(path) -> dict[str, torch.Tensor]:
    """The tensors of a PyTorch ``.pth``/``.pth.tar`` state dict, training checkpoint or
    whole-model pickle, read without executing pickled code."""
    from agemapper.networks.foreign import read_foreign

    return read_foreign(path).state


MODEL_FORMAT = "agemapper-model/1"
# what a model file must say about its input before it may predict anything
CONTRACT_KEYS = ("contrast", "resolution", "data_file", "normalise", "scale_factor", "shape")


def check_model_file(tensors: dict[str, torch.Tensor], meta: dict, path) -> None:
    """Refuse a model file that is not ours, lacks its input contract, or holds weights of
    another type (float16 or integer weights would be cast silently and predict wrongly)."""
    if meta.get("format") != MODEL_FORMAT:
        raise InputDataError("not an AgeMapper model file (no model metadata)", path=path)
    contract = meta.get("input") or {}
    missing = [k for k in CONTRACT_KEYS if k not in contract]
    if missing or "model" not in meta:
        raise InputDataError(
            f"model file without its input contract (missing {missing or ['model']}): which "
            "contrast, file and scaling it expects is unknown; convert original networks with "
            "their --contrast",
            path=path,
        )
    for name, tensor in tensors.items():
        expected = torch.int64 if name.endswith("num_batches_tracked") else torch.float32
        if tensor.dtype != expected:
            raise InputDataError(
                f"tensor {name} is {str(tensor.dtype).removeprefix('torch.')}, "
                f"{str(expected).removeprefix('torch.')} expected",
                path=path,
            )
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise InputDataError(f"tensor {name} holds NaN or Inf values", path=path)


def _jsonable(obj):
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot store {type(obj).__name__} in metadata")


def fingerprint(*parts) -> str:
    """A stable hash of JSON-able parts (configs, subject lists)."""
    text = json.dumps(parts, sort_keys=True, default=_jsonable)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def flatten_state(prefix: str, state: dict, tensors: dict, meta: dict) -> None:
    """Split a (nested) state dict into tensors and JSON metadata under ``prefix``."""
    for key, value in state.items():
        name = f"{prefix}/{key}"
        if isinstance(value, torch.Tensor):
            tensors[name] = value
        elif isinstance(value, dict):
            flatten_state(name, value, tensors, meta)
        else:
            meta[name] = value


def unflatten_state(prefix: str, tensors: dict, meta: dict) -> dict:
    """Inverse of :func:`flatten_state` (integer-like keys become ints again)."""
    out: dict = {}
    plen = len(prefix) + 1
    items = [(k[plen:], v) for k, v in tensors.items() if k.startswith(prefix + "/")]
    items += [(k[plen:], v) for k, v in meta.items() if k.startswith(prefix + "/")]
    for key, value in items:
        node = out
        parts = key.split("/")
        for part in parts[:-1]:
            node = node.setdefault(_key(part), {})
        node[_key(parts[-1])] = value
    return out


def _key(part: str):
    return int(part) if part.isdigit() else part
