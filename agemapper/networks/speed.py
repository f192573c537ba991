"""Device and speed settings: what the trainer does to go fast, and only that.

Nothing here changes what is computed beyond floating-point rounding: bf16 autocast (CUDA, or
asked for), channels_last_3d memory layout, cuDNN autotuning, torch.compile and the shifted
first convolution (:mod:`agemapper.networks.kernels`). Validation runs in fp32 unless
``training.validation_precision: same``, so the scheduler, early stopping, the network kept and
the stuck check see fp32 losses, as in the original, whatever the training precision.
"""

from __future__ import annotations

import contextlib
import os

import torch

from agemapper.networks.kernels import use_shifted_first_conv


def resolve_device(name: str) -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``; other names pass through."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def default_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def fast_path(device: torch.device, training: dict, runtime: dict) -> dict:
    """What the trainer does for speed on ``device``; everything but prefetch is CUDA-only.

    ``training.precision``: ``fp32`` (the original, the default), ``bf16`` (autocast) or
    ``auto`` (bf16 on CUDA, fp32 elsewhere). Runtime: ``channels_last`` (default on CUDA),
    ``compile`` (torch.compile, off by default), ``cudnn_benchmark`` (default on), ``prefetch``
    (batches read ahead, default 2), ``first_conv`` (``cudnn``, or ``shifted``: any device).
    """
    cuda = device.type == "cuda"
    precision = training.get("precision", "fp32")
    speed = {
        "bf16": precision == "bf16" or (precision == "auto" and cuda),
        "channels_last": bool(runtime.get("channels_last", True)) and cuda,
        "compile": bool(runtime.get("compile", False)),
        "prefetch": int(runtime.get("prefetch", 2)),
        "first_conv": runtime.get("first_conv", "cudnn"),
    }
    if cuda:
        torch.backends.cudnn.benchmark = bool(runtime.get("cudnn_benchmark", True))
    return speed


class Speed:
    """The speed settings of one trainer: model preparation, autocast and input layout."""

    def __init__(self, device: torch.device, settings: dict, runtime: dict | None):
        self.device = device
        self.flags = fast_path(device, settings, runtime or {})
        self.validation_bf16 = (
            self.flags["bf16"] and settings.get("validation_precision", "fp32") == "same"
        )

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        """Move ``model`` to the device in the fast layout; return what to call forward on."""
        model.to(self.device)
        if self.flags["first_conv"] == "shifted":
            use_shifted_first_conv(model)
        if self.flags["channels_last"]:
            model.to(memory_format=torch.channels_last_3d)
        return torch.compile(model) if self.flags["compile"] else model

    def autocast(self, validation: bool = False):
        on = self.validation_bf16 if validation else self.flags["bf16"]
        if not on:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, torch.bfloat16)

    def layout(self, x: torch.Tensor) -> torch.Tensor:
        if self.flags["channels_last"]:
            return x.contiguous(memory_format=torch.channels_last_3d)
        return x
