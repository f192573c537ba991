"""Reading PyTorch files written by other code, without ever running code from them.

A ``.pth``/``.pth.tar``/``.p`` file is a pickle, and unpickling can call any function the file
names. Every read here goes through ``torch.load(weights_only=True)``, whose unpickler builds
only tensors, plain containers and the globals it is told are safe; nothing is ever loaded with
``weights_only=False``. What the original AgeMapper code (and Peng et al.'s SFCN release) wrote:

- ``state_dict``: ``torch.save(model.state_dict())`` (the solver's final network), with or
  without DataParallel's ``module.`` prefix. Plain tensors: read as they are.
- ``checkpoint``: the solver's ``best_checkpoint.path.tar`` / ``checkpoint_epoch_N.path.tar``: a
  dict with ``state_dict``, optimiser and scheduler state, the epoch, and losses that are NumPy
  float64 scalars. Read with exactly the NumPy scalar and dtype globals allowed
  (:data:`NUMPY_GLOBALS`, via ``torch.serialization.safe_globals``).
- ``whole_model``: ``torch.save(model)``, a pickle of the network object, which names its
  classes (``AgeMapper.AgeMapper``, ``torch.nn.modules.conv.Conv3d``, DataParallel, ...).
  Those classes are replaced by inert stand-ins (:class:`ModuleRecord`) that only keep the
  state the pickle gives them: parameters, buffers and submodules. No class of the file is
  imported and no method of it runs; the stand-ins are allowed by name for this one load, and
  only for names that look like module classes outside the standard library
  (:func:`_stand_in_allowed`). Anything else the file calls (``os.system``, ``eval``,
  ``subprocess.Popen``, ...) is refused before loading.

TorchScript archives (``torch.jit.save``) hold code, not a pickle of tensors: they are refused
with the way to convert them.
"""

from __future__ import annotations

import _compat_pickle
import hashlib
import pickletools
import sys
import zipfile
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from agemapper.errors import InputDataError

FORMATS = ("state_dict", "checkpoint", "whole_model")

# The NumPy globals a checkpoint's float64 losses need, by the names NumPy 2 and NumPy 1 pickle
# them under (numpy._core was numpy.core before NumPy 2), and the dtype classes whose instances
# the unpickler may fill in (BUILD). Nothing else of NumPy is allowed.
_SCALAR = np._core.multiarray.scalar
NUMPY_GLOBALS = [
    (_SCALAR, "numpy._core.multiarray.scalar"),
    (_SCALAR, "numpy.core.multiarray.scalar"),
    (np.dtype, "numpy.dtype"),
    *(
        (cls, f"numpy.dtypes.{cls.__name__}")
        for cls in (
            np.dtypes.Float64DType,
            np.dtypes.Float32DType,
            np.dtypes.Float16DType,
            np.dtypes.Int64DType,
            np.dtypes.Int32DType,
            np.dtypes.BoolDType,
        )
    ),
]

CONVERT_HINT = (
    "convert it to a state dict where its own code runs and the file is trusted: "
    "python -c \"import torch; m = torch.load('FILE', weights_only=False); "
    "torch.save(getattr(m, 'module', m).state_dict(), 'FILE.state_dict.pth')\""
)


class ModuleRecord:
    """Stand-in for a network class named in a whole-model pickle: it keeps what the pickle
    sets on it (``__dict__``: parameters, buffers, submodules, plain attributes) and nothing
    else. Instances are created without calling anything of the original class."""

    qualname = "?"

    def __init__(self, *args, **kwargs):  # a REDUCE of the class: record, run nothing
        self.__dict__["_args"] = args

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) == 2:  # (dict, slots)
            state = {**(state[0] or {}), **(state[1] or {})}
        if isinstance(state, dict):
            self.__dict__.update(state)


def _stand_in(full_name: str) -> type:
    module, _, name = full_name.rpartition(".")
    cls = type(name, (ModuleRecord,), {"__module__": module, "qualname": full_name})
    return cls


def _stand_in_allowed(full_name: str) -> bool:
    """A class a whole-model pickle may name: torch's module classes (``torch.nn.*``), or a
    class (CapWords) of a module outside the standard library, NumPy and torch (the network's
    own code, e.g. ``AgeMapper.AgeMapper``). Functions and everything in the standard library
    (``os.system``, ``builtins.eval``, ``subprocess.Popen``) are refused."""
    module, _, name = full_name.rpartition(".")
    top = module.split(".")[0]
    if not module or not name.isidentifier() or not name[:1].isupper():
        return False
    if module.startswith("torch.nn."):
        return True
    stdlib = getattr(sys, "stdlib_module_names", ())
    return top not in stdlib and top not in ("builtins", "torch", "numpy", "__builtin__")


@dataclass
class ForeignFile:
    """What a foreign file held: its tensors by (unprefixed-as-stored) name, and about it."""

    path: Path
    format: str
    state: dict[str, torch.Tensor]
    sha256: str
    details: dict = field(default_factory=dict)


def sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _pickle_globals(path: Path) -> set[str]:
    """Every GLOBAL a torch file's pickles name, found by reading the opcodes (nothing runs).

    Zip files (torch >= 1.6): the ``data.pkl`` record; legacy files: the first pickles of the
    stream (magic, protocol, system info, the object). Protocol 2 (torch's) names globals
    with GLOBAL; STACK_GLOBAL's strings are taken from the two strings pushed before it.
    """
    found: set[str] = set()

    def add(module: str, name: str) -> None:
        # Python 2 names (protocol 2: __builtin__.set), mapped as the unpickler maps them
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        found.add(f"{_compat_pickle.IMPORT_MAPPING.get(module, module)}.{name}")

    def scan(stream) -> None:
        strings: list[str] = []
        for op, arg, _ in pickletools.genops(stream):
            if op.name == "GLOBAL":
                add(*str(arg).split(" ", 1))
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                add(strings[-2], strings[-1])
            if isinstance(arg, str):
                strings.append(arg)

    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
            for name in names:
                with archive.open(name) as fh:
                    scan(fh)
    else:
        with open(path, "rb") as fh:
            for _ in range(4):
                try:
                    scan(fh)
                except Exception:  # the raw storage bytes after the pickles
                    break
    return found


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(n.endswith("/code/") or "/code/" in n for n in archive.namelist())


def _load(path: Path, allowed: list) -> object:
    with torch.serialization.safe_globals(allowed):
        return torch.load(str(path), map_location="cpu", weights_only=True)


def read_foreign(path) -> ForeignFile:
    """Read a state dict, a training checkpoint or a whole-model pickle, safely.

    Raises :class:`InputDataError` naming the file for anything else: a pickle that calls a
    function (its command never runs), a TorchScript archive, a dict without tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise InputDataError("file is missing", path=path)
    if _is_torchscript(path):
        raise InputDataError(
            "a TorchScript archive (torch.jit.save): it holds code, which is never run here; "
            + CONVERT_HINT,
            path=path,
        )
    try:
        names = _pickle_globals(path)
    except Exception as exc:  # noqa: BLE001  (not a pickle at all)
        raise InputDataError(f"not a PyTorch file ({exc})", path=path) from exc
    numpy_names = {name for _, name in NUMPY_GLOBALS}
    known = set(torch._weights_only_unpickler._get_allowed_globals())  # torch's own allowlist
    unknown = sorted(names - known - numpy_names)
    refused = [n for n in unknown if not _stand_in_allowed(n)]
    if refused:
        raise InputDataError(
            f"refused: the file calls {', '.join(refused[:3])}, which is not a tensor, a "
            "container or a network class; nothing of it was run",
            path=path,
        )
    stand_ins = [(_stand_in(n), n) for n in unknown]
    try:
        obj = _load(path, [*NUMPY_GLOBALS, *stand_ins])
    except Exception as exc:  # UnpicklingError and friends: refused, never run
        detail = " ".join(str(exc).split())[:300]
        raise InputDataError(f"refused: not a plain tensor file ({detail})", path=path) from exc
    digest = sha256(path)
    if isinstance(obj, ModuleRecord):
        state, details = _module_state(obj), {"classes": sorted(unknown)}
        return _checked(ForeignFile(path, "whole_model", state, digest, details))
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        details = {
            k: _plain(obj[k])
            for k in ("epoch", "arch", "valid_epoch", "best_score_early_stop", "previous_loss")
            if k in obj
        }
        details["keys"] = sorted(str(k) for k in obj)
        return _checked(ForeignFile(path, "checkpoint", dict(obj["state_dict"]), digest, details))
    if isinstance(obj, dict) and any(isinstance(v, ModuleRecord) for v in obj.values()):
        key = next(k for k, v in obj.items() if isinstance(v, ModuleRecord))
        state = _module_state(obj[key])
        details = {"key": str(key), "classes": sorted(unknown)}
        return _checked(ForeignFile(path, "whole_model", state, digest, details))
    if isinstance(obj, dict):
        return _checked(ForeignFile(path, "state_dict", dict(obj), digest, {}))
    raise InputDataError(
        f"holds a {type(obj).__name__}, not a network, a state dict or a checkpoint", path=path
    )


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    return value if isinstance(value, (int, float, str, bool, type(None))) else str(value)


def _checked(found: ForeignFile) -> ForeignFile:
    bad = [k for k, v in found.state.items() if not isinstance(v, torch.Tensor)]
    if not found.state or bad:
        raise InputDataError(
            "does not hold a state dict of tensors"
            + (f" (e.g. {bad[0]!r} is not a tensor)" if bad else " (no tensors)")
            + ("; " + CONVERT_HINT if found.format == "whole_model" else ""),
            path=found.path,
        )
    found.state = {str(k): v.detach() for k, v in found.state.items()}
    return found


def _module_state(record: ModuleRecord, prefix: str = "") -> dict[str, torch.Tensor]:
    """The state dict ``record`` would have had as an ``nn.Module``: its parameters and
    persistent buffers, then its submodules', named by their path."""
    out: dict[str, torch.Tensor] = OrderedDict()
    attrs = record.__dict__
    skip = set(attrs.get("_non_persistent_buffers_set") or ())
    for kind in ("_parameters", "_buffers"):
        for name, value in (attrs.get(kind) or {}).items():
            if value is not None and name not in skip:
                out[prefix + name] = value
    for name, child in (attrs.get("_modules") or {}).items():
        if isinstance(child, ModuleRecord):
            out.update(_module_state(child, f"{prefix}{name}."))
    return out
