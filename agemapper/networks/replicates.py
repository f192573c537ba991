"""The replicate networks of one contrast and sex, packed into one trainer.

Each replicate is an independent run, as the original's were (``run.py`` once per network): its
own seed, initialisation, optimiser, schedule, early stopping, augmentation draws and (with
``training.batch_order: independent``, the original) its own shuffled batch order. What they
share is the decoded data: every step reads the union of the replicates' batches once and
gives each its own samples (:meth:`agemapper.networks.training.Trainer._plan`).

A replicate found stuck (:func:`agemapper.networks.stopping.stuck_reason`) is rebuilt here with
a new seed (:meth:`Packing.restart`), its history and the reasons for its restarts kept.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from agemapper.networks.models import build_model, load_weights
from agemapper.networks.optim import build_optimizer, build_schedule
from agemapper.networks.speed import Speed
from agemapper.networks.stopping import EarlyStopping
from agemapper.seeds import derive_seed

METRIC_COLUMNS = [
    "epoch",  # of the replicate's attempt
    "train_loss",
    "train_mae",
    "val_loss",
    "val_mae",
    "lr",
    "seconds",
    "best",  # the network this attempt keeps (so far)
    "val_sd",  # standard deviation of the validation predictions (years)
    "attempt",  # 1, or 2, 3, ... after restarts
    "restarted",  # why the replicate was restarted after this epoch (empty: it was not)
]


@dataclass(eq=False)
class Replicate:
    index: int
    attempt: int  # 1, then 2, 3, ... after restarts
    seed: int  # this attempt's seed
    model: torch.nn.Module
    forward: torch.nn.Module  # the model, or its torch.compile'd wrapper
    optimizer: torch.optim.Optimizer
    scheduler: object
    steps: str  # when the scheduler steps: validation_loss | epoch | batch
    augment_rng: torch.Generator
    order_rng: torch.Generator
    early: EarlyStopping
    epoch: int = 0  # epochs completed in this attempt
    best_loss: float = math.inf
    best_epoch: int = 0
    best_state: dict = field(default_factory=dict)
    stopped: bool = False  # done: stopped early or at the epoch limit
    stuck: str | None = None  # why the kept network is stuck, once out of restarts
    perm: torch.Tensor | None = None  # this epoch's order (independent batch order)
    history: list = field(default_factory=list)  # every epoch of every attempt
    restarts: list = field(default_factory=list)  # {attempt, seed, epoch, reason}
    # running sums over the current epoch
    sum_loss: float = 0.0
    sum_abs: float = 0.0
    seen: int = 0

    def kept(self) -> dict | None:
        """The history row of the epoch this attempt keeps (its best), if any."""
        rows = [h for h in self.history if h["attempt"] == self.attempt]
        return next((h for h in rows if h["epoch"] == self.best_epoch), None)


def cpu_state(model: torch.nn.Module) -> dict:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


class Packing:
    """Builds (and rebuilds) the replicates of one trainer."""

    def __init__(
        self,
        model_spec: dict,
        settings: dict,
        shape,
        mean_age: float,
        speed: Speed,
        seed_parts: tuple,
        initial_states: list | None = None,
    ):
        self.model_spec = model_spec
        self.settings = settings
        self.shape = tuple(shape)
        self.mean_age = mean_age
        self.speed = speed
        self.seed_parts = tuple(seed_parts)
        self.initial_states = initial_states

    def seed(self, index: int, attempt: int) -> int:
        base = int(self.settings["seed"])
        if attempt == 1:
            return derive_seed(base, *self.seed_parts, index)
        return derive_seed(base, *self.seed_parts, index, f"attempt {attempt}")

    def build(self, index: int, position: int, attempt: int = 1) -> Replicate:
        """Replicate ``index``, ``position``-th of the trainer's (its initial weights)."""
        s = self.settings
        seed = self.seed(index, attempt)
        torch.manual_seed(seed)
        model = build_model(self.model_spec, self.shape)
        if self.initial_states is not None:  # fine-tuning: start from a trained network
            load_weights(model, self.initial_states[position])
        elif s["output_bias"] == "mean_age" and hasattr(model, "init_output"):
            model.init_output(self.mean_age)
        forward = self.speed.prepare(model)
        optimizer = build_optimizer(model.parameters(), s)
        scheduler, steps = build_schedule(optimizer, s)
        early = EarlyStopping(
            patience=int(s["early_stopping_patience"]),
            min_delta=float(s["early_stopping_min_delta"]),
            min_patience=int(s["early_stopping_min_patience"]),
        )
        return Replicate(
            index=index,
            attempt=attempt,
            seed=seed,
            model=model,
            forward=forward,
            optimizer=optimizer,
            scheduler=scheduler,
            steps=steps,
            augment_rng=torch.Generator().manual_seed(seed + 1),
            order_rng=torch.Generator().manual_seed(seed + 2),
            early=early,
        )

    def restart(self, rep: Replicate, reason: str, position: int) -> Replicate:
        """``rep`` again from scratch with the next attempt's seed; history and reasons kept."""
        new = self.build(rep.index, position, rep.attempt + 1)
        new.history = rep.history
        new.restarts = [
            *rep.restarts,
            {"attempt": rep.attempt, "seed": rep.seed, "epoch": rep.epoch, "reason": reason},
        ]
        return new


def close_epoch(rep: Replicate, validation: dict, seconds: float) -> dict:
    """The end of one epoch of ``rep``, given its validation result (loss, mae, sd, batches):
    its schedule and early stopping step, the network kept is updated, and its history row is
    appended and returned."""
    rep.epoch += 1
    if rep.steps == "validation_loss":
        rep.scheduler.step(validation["loss"])
    elif rep.steps == "epoch":
        rep.scheduler.step()
    else:  # "batch": the original also stepped its cyclic schedule on validation batches
        for _ in range(validation["batches"]):
            rep.scheduler.step()
    keep = rep.early.update(rep.epoch, validation["loss"])
    if keep:
        rep.best_loss, rep.best_epoch = validation["loss"], rep.epoch
        rep.best_state = cpu_state(rep.model)
    row = {
        "epoch": rep.epoch,
        "train_loss": rep.sum_loss / max(rep.seen, 1),
        "train_mae": rep.sum_abs / max(rep.seen, 1),
        "val_loss": validation["loss"],
        "val_mae": validation["mae"],
        "lr": rep.optimizer.param_groups[0]["lr"],
        "seconds": seconds,
        "best": keep,
        "val_sd": validation["sd"],
        "attempt": rep.attempt,
        "restarted": "",
    }
    rep.history.append(row)
    rep.sum_loss = rep.sum_abs = 0.0
    rep.seen = 0
    rep.perm = None
    return row


def epoch_line(rep: Replicate, row: dict) -> str:
    """One replicate's part of the epoch's log line."""
    return (
        f"rep{rep.index}{f' (attempt {rep.attempt})' if rep.attempt > 1 else ''} "
        f"loss {row['train_loss']:.3f} mae {row['train_mae']:.2f} | val loss "
        f"{row['val_loss']:.3f} mae {row['val_mae']:.2f} sd {row['val_sd']:.2f}"
        f"{' *' if row['best'] else ''} lr {row['lr']:.1e}"
    )
