"""Optimisers and learning-rate schedules, one table each: a new one is one entry.

An optimiser entry builds ``torch.optim`` from the parameters and the resolved training
settings (:mod:`agemapper.networks.settings`). A schedule entry builds the scheduler from the
optimiser and ``training.scheduler``, and says when the trainer steps it:

- ``validation_loss``: once per epoch, with the epoch's validation loss;
- ``epoch``: once per epoch;
- ``batch``: after every training batch and every validation batch, as the original stepped
  its CyclicLR (``solver.py`` steps it inside the batch loop of both phases).

The original's choices (``run.py``, ``solver.py``): Adam or AdamW with betas, eps and weight
decay; ReduceLROnPlateau on the validation loss (``threshold_mode='abs'``), StepLR, or CyclicLR
(``cycle_momentum=False``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.optim import lr_scheduler


def _adam_arguments(t: dict) -> dict:
    return {
        "lr": float(t["learning_rate"]),
        "betas": tuple(float(b) for b in t["betas"]),
        "eps": float(t["eps"]),
        "weight_decay": float(t["weight_decay"]),
    }


OPTIMIZERS: dict[str, Callable] = {
    "adam": lambda params, t: torch.optim.Adam(params, **_adam_arguments(t)),
    "adamw": lambda params, t: torch.optim.AdamW(params, **_adam_arguments(t)),
}


@dataclass(frozen=True)
class Schedule:
    build: Callable  # (optimizer, scheduler settings) -> scheduler
    steps: str  # "validation_loss" | "epoch" | "batch"


SCHEDULERS: dict[str, Schedule] = {
    "plateau": Schedule(
        lambda opt, s: lr_scheduler.ReduceLROnPlateau(
            opt,
            mode="min",
            factor=float(s["factor"]),
            patience=int(s["patience"]),
            threshold=float(s["threshold"]),
            threshold_mode=s["threshold_mode"],
            min_lr=float(s["min_lr"]),
        ),
        "validation_loss",
    ),
    "step": Schedule(
        lambda opt, s: lr_scheduler.StepLR(
            opt, step_size=int(s["step_size"]), gamma=float(s["factor"])
        ),
        "epoch",
    ),
    "cyclic": Schedule(
        lambda opt, s: lr_scheduler.CyclicLR(
            opt,
            base_lr=float(s["min_lr"]),
            max_lr=float(s["max_lr"]),
            step_size_up=int(s["step_size_up"]),
            cycle_momentum=False,
        ),
        "batch",
    ),
}


def build_optimizer(parameters, settings: dict) -> torch.optim.Optimizer:
    return OPTIMIZERS[settings["optimizer"]](parameters, settings)


def build_schedule(optimizer, settings: dict):
    """The scheduler of ``settings["scheduler"]`` and when to step it."""
    s = settings["scheduler"]
    entry = SCHEDULERS[s["name"]]
    return entry.build(optimizer, s), entry.steps


def scheduler_state(scheduler) -> dict:
    """The scheduler's state as plain JSON-able data (for the checkpoint's metadata)."""
    return {k: v for k, v in scheduler.state_dict().items() if not callable(v)}
