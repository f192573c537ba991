"""Importing networks of the original AgeMapper release (``.pth.tar`` state dicts).

The release's AgeMapper module names its parameters ``Feature_Extractor.Convolution_{i}.{0,1}.*``
(convolution, batch norm) and ``FullyConnected.FullyConnected_{3,2,1}.*`` (the 9600->96, 96->32
and 32->1 linear layers), possibly prefixed ``module.`` (DataParallel). Ours are
``features.{i}.{0,1}.*`` and the linear layers of ``head`` in order. The file is read with
``torch.load(weights_only=True)``: no pickled code can run. 2 mm networks of the release upsample
their input x2 inside the network; our caches hold that upsampled grid, so the weights apply as
they are.

Command line (``python -m agemapper.networks.legacy`` takes the same arguments)::

    agemapper import-original ORIGINAL.pth.tar OUT/model.safetensors --contrast T1_nonlinear \\
        [--contrasts-table config/contrasts.tsv --sex female --replicate 1]
"""

from __future__ import annotations

import argparse
import re

import torch

from agemapper.errors import InputDataError
from agemapper.images.grids import FULL_TRAINING_SHAPE
from agemapper.networks.models import AgeMapper
from agemapper.networks.serialization import load_torch_weights, save_tensors

_CONV = re.compile(r"^Feature_Extractor\.Convolution_(\d+)\.([01])\.(.+)$")
_FC = re.compile(r"^FullyConnected\.FullyConnected_([123])\.(weight|bias)$")


def map_original_names(state: dict, model: AgeMapper) -> dict:
    """Rename an original AgeMapper state dict to this package's module names."""
    linear = [name for name, m in model.head.named_children() if isinstance(m, torch.nn.Linear)]
    out = {}
    for key, value in state.items():
        key = key.removeprefix("module.")
        if m := _CONV.match(key):
            out[f"features.{m[1]}.{m[2]}.{m[3]}"] = value
        elif m := _FC.match(key):
            out[f"head.{linear[3 - int(m[1])]}.{m[2]}"] = value
        else:
            raise InputDataError(f"unexpected parameter {key!r} for the AgeMapper network")
    return out


def load_original(path, channels=(32, 64, 64, 64, 64), shape=FULL_TRAINING_SHAPE) -> AgeMapper:
    """An AgeMapper network holding the weights of an original release file."""
    model = AgeMapper(shape, channels)
    state = map_original_names(load_torch_weights(path), model)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise InputDataError(
            f"does not fit the AgeMapper network: missing {missing[:4]}, unexpected "
            f"{unexpected[:4]}",
            path=path,
        )
    return model


def convert(path, out, contract: dict, sex: str = "", replicate: int = 1) -> dict:
    """Write an original network as our safetensors model, with its input contract."""
    model = load_original(path)
    meta = {
        "format": "agemapper-model/1",
        "replicate": replicate,
        "model": {
            "architecture": "agemapper",
            "channels": [32, 64, 64, 64, 64],
            "fully_connected": [96, 32],
        },
        "input": {**contract, "shape": list(FULL_TRAINING_SHAPE)},
        "source": {"original_release_file": str(path), "sex": sex},
    }
    save_tensors(out, model.state_dict(), meta)
    return meta


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("original", help="a network of the original release (.pth.tar)")
    parser.add_argument("out", help="the model to write (.safetensors)")
    parser.add_argument("--contrast", required=True, help="its contrast, e.g. T1_nonlinear")
    parser.add_argument(
        "--contrasts-table",
        default=None,
        help="contrast table (default: config/contrasts.tsv of the repository the package is in)",
    )
    parser.add_argument("--sex", default="", help="female or male (recorded in the metadata)")
    parser.add_argument("--replicate", type=int, default=1)


def run(args: argparse.Namespace) -> dict:
    from agemapper.images.contrasts import read_contrasts, select

    contract = select(read_contrasts(args.contrasts_table), [args.contrast])[0].as_dict()
    return convert(args.original, args.out, contract, args.sex, args.replicate)


def main(argv=None) -> None:
    """``python -m agemapper.networks.legacy``; the same as ``agemapper import-original``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    run(parser.parse_args(argv))


if __name__ == "__main__":  # pragma: no cover
    main()
