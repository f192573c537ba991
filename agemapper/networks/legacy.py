"""Networks of the original AgeMapper code and of Peng et al.'s SFCN release, in and out.

Parameter names, by the code that wrote them (DataParallel adds ``module.`` in front):

- ``agemapper-original``: the original's AgeMapper, ``Feature_Extractor.Convolution_{i}.{0,1}.*``
  (convolution without bias, batch norm) and ``FullyConnected.FullyConnected_{3,2,1}.*`` (the
  9600->96, 96->32 and 32->1 linear layers). Its flattened size is hard-coded (64 x 5 x 6 x 5),
  so it always sees the 160x192x160 crop; 2 mm networks upsample their input x2 inside the
  network, and our caches hold that upsampled grid, so the weights apply as they are.
- ``sfcn-original``: the original's SFCN, ``Feature_Extractor.Convolution_{i}.*`` and
  ``Classifier.Convolution_{n}.*``; its convolutions have no bias (zero here).
- ``sfcn-peng``: Peng et al. 2021 (``run_20190719_00_epoch_best_mae.p``, a DataParallel state
  dict), ``feature_extractor.conv_{i}.{0,1}.*`` and ``classifier.conv_{n}.*``: the SFCN of
  :mod:`agemapper.networks.models` parameter for parameter, 40 bins over 42-82 years.

Widths are read from the weights, so a narrow network of the original code imports as well as
the study's. Files are read by :func:`agemapper.networks.foreign.read_foreign` (state dicts,
training checkpoints, whole-model pickles; nothing pickled ever runs).

Export writes our AgeMapper networks in the original's names (``torch.save(state_dict)``, what
its solver writes and its evaluation loads with ``AgeMapper(resolution)``), and SFCN networks
in Peng et al.'s; a JSON sidecar keeps what the weights cannot say (grid, input contract,
statistics of the training inputs), so that export -> import gives the same network.

What Peng et al.'s preprocessing does differently from this workflow's (their code:
``data / data.mean()`` over the whole 182x218x182 volume, then the centred crop
[11:171, 13:205, 11:171]; ours: the AgeMapper box [10:170, 12:204, 0:160], divided by the
mean of that crop): the box is 1, 1 and 11 voxels away, and for a volume whose non-zero voxels
all lie inside both crops, their intensities are ours x (182*218*182)/(160*192*160) = x1.469 at
a scale factor of 1. The weights import exactly; predictions on this workflow's inputs are not
those of their paper (see ``PENG_NOTE``).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from agemapper.errors import InputDataError
from agemapper.images.grids import FULL_TRAINING_SHAPE, get_grid
from agemapper.networks.foreign import ForeignFile, read_foreign
from agemapper.networks.models import SFCN, AgeMapper, build_model
from agemapper.networks.serialization import MODEL_FORMAT, save_tensors

NAMINGS = ("agemapper-original", "sfcn-original", "sfcn-peng")
PENG_BINS = (42.0, 82.0)
PENG_NOTE = (
    "Peng et al.'s preprocessing differs from this workflow's: the whole-volume mean "
    "(x1.469 of our crop-mean normalisation for a brain inside the crop) and a centred crop "
    "[11:171, 13:205, 11:171] (ours [10:170, 12:204, 0:160]); predictions on our inputs are "
    "not those of their paper"
)

_AM_CONV = re.compile(r"^Feature_Extractor\.Convolution_(\d+)\.([01])\.(.+)$")
_AM_FC = re.compile(r"^FullyConnected\.FullyConnected_([123])\.(weight|bias)$")
_SO_CLS = re.compile(r"^Classifier\.Convolution_(\d+)\.(weight|bias)$")
_PENG_CONV = re.compile(r"^feature_extractor\.conv_(\d+)\.([01])\.(.+)$")
_PENG_CLS = re.compile(r"^classifier\.conv_(\d+)\.(weight|bias)$")


@dataclass
class Imported:
    """An original network rebuilt as ours, and what it was read from."""

    model: torch.nn.Module
    spec: dict  # the ``model:`` spec build_model rebuilds it from
    shape: tuple[int, int, int]
    naming: str
    file: ForeignFile
    notes: list[str] = field(default_factory=list)


def detect_naming(state: dict) -> str:
    keys = [k.removeprefix("module.") for k in state]
    if any(k.startswith("FullyConnected.") for k in keys):
        return "agemapper-original"
    if any(k.startswith("Classifier.") for k in keys):
        return "sfcn-original"
    if any(k.startswith(("feature_extractor.", "classifier.")) for k in keys):
        return "sfcn-peng"
    raise InputDataError(
        f"parameter names of no known network (first: {keys[0]!r}); expected the original "
        "AgeMapper's (Feature_Extractor..., FullyConnected...), its SFCN's (Classifier...) or "
        "Peng et al.'s SFCN (feature_extractor..., classifier...)"
        if keys
        else "holds no parameters"
    )


def _blocks(state: dict, pattern: re.Pattern) -> list[int]:
    """Output channels of each convolution block, in order (from the conv weights)."""
    widths = {}
    for key, value in state.items():
        if (m := pattern.match(key)) and m[2] == "0" and m[3] == "weight":
            widths[int(m[1])] = int(value.shape[0])
    if sorted(widths) != list(range(len(widths))) or not widths:
        raise InputDataError(f"convolution blocks {sorted(widths)} are not numbered 0..n-1")
    return [widths[i] for i in range(len(widths))]


def _unexpected(key: str, naming: str) -> InputDataError:
    return InputDataError(f"unexpected parameter {key!r} for the {naming} network")


def _agemapper_spec(state: dict, shape) -> dict:
    channels = _blocks(state, _AM_CONV)
    fc = {}
    for key, value in state.items():
        if (m := _AM_FC.match(key)) and m[2] == "weight":
            fc[int(m[1])] = tuple(value.shape)
    if sorted(fc) != [1, 2, 3]:
        raise InputDataError(f"fully connected layers {sorted(fc)}, expected 1, 2 and 3")
    n_flat = channels[-1] * math.prod(s >> len(channels) for s in shape)
    if fc[3][1] != n_flat:
        raise InputDataError(
            f"its first fully connected layer takes {fc[3][1]} inputs; on the "
            f"{'x'.join(map(str, shape))} grid it would get {n_flat}"
        )
    return {
        "architecture": "agemapper",
        "channels": channels,
        "fully_connected": [fc[3][0], fc[2][0]],
        "dropout": 0.0,
    }


def _sfcn_spec(state: dict, conv: re.Pattern, classifier: re.Pattern, bin_range) -> dict:
    channels = _blocks(state, conv)
    bins = [v.shape[0] for k, v in state.items() if (m := classifier.match(k)) and m[2] == "weight"]
    if len(bins) != 1:
        raise InputDataError("expected one classifier convolution")
    lo, hi = (float(b) for b in bin_range)
    if bins[0] != round(hi - lo):
        raise InputDataError(
            f"its classifier has {bins[0]} age bins; the bin range {lo:g}-{hi:g} years at 1 "
            f"year gives {round(hi - lo)} (give the range it was trained with: --bin-range)"
        )
    return {
        "architecture": "sfcn",
        "channels": channels,
        "bin_range": [lo, hi],
        "bin_step": 1.0,
        "dropout": 0.5,
    }


def map_original_names(state: dict, model: torch.nn.Module, naming: str | None = None) -> dict:
    """Rename an original state dict to this package's module names (for ``model``)."""
    state = {k.removeprefix("module."): v for k, v in state.items()}
    naming = naming or detect_naming(state)
    out = {}
    if naming == "agemapper-original":
        linear = [n for n, m in model.head.named_children() if isinstance(m, torch.nn.Linear)]
        for key, value in state.items():
            if m := _AM_CONV.match(key):
                out[f"features.{m[1]}.{m[2]}.{m[3]}"] = value
            elif m := _AM_FC.match(key):
                out[f"head.{linear[3 - int(m[1])]}.{m[2]}"] = value
            else:
                raise _unexpected(key, naming)
        return out
    conv, cls = (_AM_CONV, _SO_CLS) if naming == "sfcn-original" else (_PENG_CONV, _PENG_CLS)
    classifier = [n for n, m in model.classifier.named_children() if isinstance(m, torch.nn.Conv3d)]
    for key, value in state.items():
        if m := conv.match(key):
            out[f"features.{m[1]}.{m[2]}.{m[3]}"] = value
        elif m := cls.match(key):
            out[f"classifier.{classifier[0]}.{m[2]}"] = value
        else:
            raise _unexpected(key, naming)
    if naming == "sfcn-original":  # its convolutions have no bias: ours are zero
        for name, param in model.state_dict().items():
            if name.endswith(".0.bias") and name.startswith("features.") and name not in out:
                out[name] = torch.zeros_like(param)
    out["bin_centers"] = model.bin_centers.clone()
    return out


def rebuild(
    found: ForeignFile, shape=FULL_TRAINING_SHAPE, bin_range=PENG_BINS, spec=None
) -> Imported:
    """Our network holding the weights of ``found`` (widths read from the weights, or
    ``spec`` as an exported sidecar gives it)."""
    state = {k.removeprefix("module."): v for k, v in found.state.items()}
    try:
        naming = detect_naming(state)
        if spec is None:
            if naming == "agemapper-original":
                spec = _agemapper_spec(state, shape)
            elif naming == "sfcn-original":
                spec = _sfcn_spec(state, _AM_CONV, _SO_CLS, bin_range)
            else:
                spec = _sfcn_spec(state, _PENG_CONV, _PENG_CLS, bin_range)
        model = build_model(spec, shape)
        mapped = map_original_names(state, model, naming)
    except InputDataError as exc:
        raise InputDataError(exc.problem, path=found.path) from exc
    missing, unexpected = model.load_state_dict(mapped, strict=False)
    if missing or unexpected:
        raise InputDataError(
            f"does not fit the {spec['architecture']} network: missing {missing[:4]}, "
            f"unexpected {unexpected[:4]}",
            path=found.path,
        )
    bad = [k for k, v in mapped.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise InputDataError(f"tensor {bad[0]} holds NaN or Inf values", path=found.path)
    notes = [PENG_NOTE] if naming == "sfcn-peng" else []
    return Imported(model.eval(), spec, tuple(int(s) for s in shape), naming, found, notes)


def load_original(path, shape=FULL_TRAINING_SHAPE, bin_range=PENG_BINS) -> torch.nn.Module:
    """The network of an original file (state dict, checkpoint or whole model), as ours."""
    return rebuild(read_foreign(path), shape, bin_range).model


def read_sidecar(path) -> dict | None:
    """The JSON an export wrote beside a file (``NAME.json`` for ``NAME.pth.tar``), if any."""
    sidecar = Path(path).parent / f"{release_stem(Path(path).name)}.json"
    if not sidecar.is_file():
        return None
    try:
        meta = json.loads(sidecar.read_text())
    except ValueError as exc:
        raise InputDataError(f"not JSON ({exc})", path=sidecar) from exc
    return meta if isinstance(meta, dict) and meta.get("format") == MODEL_FORMAT else None


WEIGHT_SUFFIXES = (".pth.tar", ".path.tar", ".pth", ".pt", ".p", ".tar", ".pkl", ".bin")


def release_stem(name: str) -> str:
    """``T1_nonlinear_female_1.pth.tar`` -> ``T1_nonlinear_female_1``."""
    for suffix in WEIGHT_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def model_metadata(imported: Imported, contract: dict, replicate: int, source: dict) -> dict:
    """Our model metadata for an imported network: the input contract it needs (the contrast
    table's row, the grid and its affine; no statistics of the training inputs unless an
    export's sidecar carried them) and where it came from."""
    grid = get_grid(contract["resolution"])
    input_ = {
        "source_grid": {"name": grid.name, "shape": list(grid.shape), "crop": grid.crop},
        "affine": [list(row) for row in grid.affine],
        **contract,
        "shape": list(imported.shape),
    }
    return {
        "format": MODEL_FORMAT,
        "replicate": int(replicate),
        "model": imported.spec,
        "input": input_,
        "source": source,
    }


def describe_source(imported: Imported) -> dict:
    found = imported.file
    return {
        "file": str(found.path.resolve()),
        "sha256": found.sha256,
        "bytes": found.path.stat().st_size,
        "format": found.format,
        "naming": imported.naming,
        **({"details": found.details} if found.details else {}),
        **({"notes": imported.notes} if imported.notes else {}),
    }


def convert(
    path,
    out,
    contract: dict,
    sex: str = "",
    replicate: int = 1,
    bin_range=PENG_BINS,
) -> dict:
    """Write an original network as our safetensors model, with its input contract.

    An export's sidecar (``NAME.json`` beside the file) supplies the grid, the model spec
    and the stored input block (statistics of the training inputs included).
    """
    found = read_foreign(path)
    sidecar = read_sidecar(path)
    if sidecar:
        imported = rebuild(found, sidecar["input"]["shape"], bin_range, sidecar["model"])
        contract = {**contract, **sidecar["input"]}
    else:
        imported = rebuild(found, FULL_TRAINING_SHAPE, bin_range)
    source = {**describe_source(imported), "sex": sex, "contrast": contract["contrast"]}
    if sidecar:
        source["sidecar"] = str(Path(path).parent / f"{release_stem(Path(path).name)}.json")
    meta = model_metadata(imported, contract, replicate, source)
    if sidecar:  # keep what the exporting run recorded (training, statistics, versions)
        meta = {**sidecar, **meta, "input": {**sidecar["input"], **meta["input"]}}
    save_tensors(out, imported.model.state_dict(), meta)
    return meta


# ----------------------------------------------------------------------------- export


def original_state_dict(model: torch.nn.Module) -> tuple[dict, str]:
    """Our network's weights under the names the original code (AgeMapper) or Peng et al.'s
    (SFCN) loads; raises when the original class could not hold them."""
    state = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    if isinstance(model, AgeMapper):
        linear = [n for n, m in model.head.named_children() if isinstance(m, torch.nn.Linear)]
        if len(linear) != 3:
            raise InputDataError(
                f"{len(linear) - 1} hidden fully connected layers: the original AgeMapper has "
                "exactly two (FullyConnected_3 and _2)"
            )
        names = dict(zip(linear, ("3", "2", "1"), strict=True))
        for key, value in state.items():
            part = key.split(".")
            if part[0] == "features":
                out[f"Feature_Extractor.Convolution_{part[1]}.{'.'.join(part[2:])}"] = value
            else:
                out[f"FullyConnected.FullyConnected_{names[part[1]]}.{part[2]}"] = value
        return out, "agemapper-original"
    if isinstance(model, SFCN):
        classifier = next(
            n for n, m in model.classifier.named_children() if isinstance(m, torch.nn.Conv3d)
        )
        last = len(model.features)
        for key, value in state.items():
            part = key.split(".")
            if part[0] == "features":
                out[f"feature_extractor.conv_{part[1]}.{'.'.join(part[2:])}"] = value
            elif part[0] == "classifier" and part[1] == classifier:
                out[f"classifier.conv_{last}.{part[2]}"] = value
        return out, "sfcn-peng"
    raise InputDataError(f"cannot export a {type(model).__name__} network")


def loadable_by_original(spec: dict, shape) -> str:
    """Why the original code (AgeMapper) or Peng et al.'s (SFCN) could not load an exported
    network (``""`` when it can): both hard-code the 160x192x160 grid (5x6x5 after pooling),
    the original AgeMapper also its fully connected widths."""
    full = "x".join(map(str, FULL_TRAINING_SHAPE))
    grid = "x".join(map(str, shape))
    if tuple(shape) != tuple(FULL_TRAINING_SHAPE):
        return (
            f"the original classes build the {full} grid; this network's {grid} grid loads "
            "only here (import-original reads the sidecar)"
        )
    if spec.get("architecture") == "agemapper" and list(spec.get("fully_connected")) != [96, 32]:
        return (
            f"the original AgeMapper has fully connected widths [96, 32], this network "
            f"{spec.get('fully_connected')}; it loads only here (import-original reads the sidecar)"
        )
    return ""


def export(model: torch.nn.Module, meta: dict, out) -> dict:
    """Write ``model`` as the original code saves a network, plus the JSON sidecar."""
    from agemapper.io import atomic_path, write_json

    state, naming = original_state_dict(model)
    out = Path(out)
    with atomic_path(out, suffix=".tar") as tmp:
        torch.save(state, tmp)
    sidecar = {**meta, "exported": {"naming": naming, "file": out.name}}
    write_json(out.parent / f"{release_stem(out.name)}.json", sidecar)
    return sidecar


if __name__ == "__main__":  # pragma: no cover  (its command moved; never succeed silently)
    raise SystemExit(
        "python -m agemapper.networks.legacy is now the command "
        "'agemapper import-original' (see agemapper import-original --help)"
    )
