"""The trainer's resumable state in one safetensors file (never a pickle).

Written after every epoch, and after the current batch when SIGTERM arrives (SLURM sends it at
the time limit): the epoch and batch reached, every random generator (batch orders,
augmentation, torch's global one), and per replicate its attempt, network, optimiser,
scheduler, early stopping, best network, history and restarts. A rerun with the same settings
and data (the fingerprint) continues where the job stopped and, on the CPU, ends with the same
weights as an uninterrupted run; other settings start afresh. A checkpoint that cannot be read
is set aside (renamed ``.corrupt-<time>``, never deleted) and training starts from scratch.
"""

from __future__ import annotations

import logging
import os
import socket
from datetime import datetime, timezone
from pathlib import Path

import torch

from agemapper.errors import InputDataError
from agemapper.networks.optim import scheduler_state
from agemapper.networks.serialization import (
    flatten_state,
    load_tensors,
    save_tensors,
    unflatten_state,
)
from agemapper.networks.stopping import EarlyStopping

log = logging.getLogger("agemapper.networks.training")


def save(trainer) -> None:
    tensors: dict[str, torch.Tensor] = {}
    meta: dict = {
        "fingerprint": trainer.fingerprint,
        "epoch": trainer.epoch,
        "batch_start": trainer.batch_start,
        "epoch_seconds": trainer.epoch_seconds,
        # provenance for the resuming job's log (the scheduler replaces the old job's log)
        "saved": {
            "on": "end of epoch" if trainer._signal is None else f"signal {trainer._signal}",
            "slurm_job": os.environ.get("SLURM_JOB_ID"),
            "host": socket.gethostname(),
        },
    }
    tensors["shuffle_rng"] = trainer.shuffle.get_state()
    tensors["torch_rng"] = torch.get_rng_state()
    if trainer.perm is not None:
        tensors["perm"] = trainer.perm
    for rep in trainer.reps:
        p = f"rep{rep.index}"
        flatten_state(f"{p}/model", rep.model.state_dict(), tensors, meta)
        flatten_state(f"{p}/optim", rep.optimizer.state_dict(), tensors, meta)
        flatten_state(f"{p}/best", rep.best_state, tensors, meta)
        tensors[f"{p}/rng"] = rep.augment_rng.get_state()
        tensors[f"{p}/order_rng"] = rep.order_rng.get_state()
        if rep.perm is not None and rep.perm is not trainer.perm:
            tensors[f"{p}/perm"] = rep.perm
        meta[f"{p}/scheduler"] = scheduler_state(rep.scheduler)
        meta[f"{p}/status"] = {
            "attempt": rep.attempt,
            "epoch": rep.epoch,
            "best_loss": rep.best_loss,
            "best_epoch": rep.best_epoch,
            "stopped": rep.stopped,
            "stuck": rep.stuck,
            "early": rep.early.state(),
            "history": rep.history,
            "restarts": rep.restarts,
            "sums": [rep.sum_loss, rep.sum_abs, rep.seen],
        }
    save_tensors(trainer.checkpoint_path, tensors, meta)


def set_aside(path: Path, why: str, describe: str) -> Path:
    """Rename a checkpoint that cannot be resumed from to ``<name>.corrupt-<UTC time>`` (kept
    for a person to look at, never deleted) and say so."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    path.rename(aside)
    log.warning(
        "%s: checkpoint %s cannot be resumed from (%s); set aside as %s, training starts afresh",
        describe,
        path,
        why,
        aside.name,
    )
    return aside


def restore(trainer) -> bool:
    """Continue from the trainer's checkpoint if there is one made with its settings.

    A checkpoint that cannot be read (truncated, not a safetensors file, not a training
    checkpoint, or missing parts) is set aside and training starts from scratch.
    """
    path = Path(trainer.checkpoint_path)
    if not path.exists():
        return False
    try:
        tensors, meta = load_tensors(path)
    except InputDataError as exc:
        set_aside(path, exc.problem, trainer.describe)
        return False
    if not meta.get("fingerprint"):
        set_aside(path, "not a training checkpoint: no fingerprint", trainer.describe)
        return False
    if meta.get("fingerprint") != trainer.fingerprint:
        log.warning(
            "%s: checkpoint %s was made with other settings or data; starting afresh",
            trainer.describe,
            path,
        )
        return False
    try:
        _apply(trainer, tensors, meta)
    except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as exc:
        detail = " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
        set_aside(path, f"incomplete or inconsistent: {detail}", trainer.describe)
        trainer.reset()
        return False
    saved = meta.get("saved") or {}
    job = f" in SLURM job {saved['slurm_job']}" if saved.get("slurm_job") else ""
    log.info(
        "%s: resumed from %s at epoch %d, batch %d (saved on %s%s on %s)",
        trainer.describe,
        path,
        trainer.epoch + 1,
        trainer.batch_start,
        saved.get("on", "?"),
        job,
        saved.get("host", "?"),
    )
    return True


def _apply(trainer, tensors: dict, meta: dict) -> None:
    trainer.epoch = int(meta["epoch"])
    trainer.batch_start = int(meta["batch_start"])
    trainer.epoch_seconds = float(meta.get("epoch_seconds", 0.0))
    trainer.shuffle.set_state(tensors["shuffle_rng"])
    trainer.perm = tensors.get("perm")
    for position, rep in enumerate(list(trainer.reps)):
        p = f"rep{rep.index}"
        status = meta[f"{p}/status"]
        if int(status["attempt"]) != rep.attempt:  # restarted before the checkpoint
            rep = trainer.packing.build(rep.index, position, int(status["attempt"]))
            trainer.reps[position] = rep
        rep.model.load_state_dict(unflatten_state(f"{p}/model", tensors, meta))
        optim = unflatten_state(f"{p}/optim", tensors, meta)
        optim.setdefault("state", {})
        rep.optimizer.load_state_dict(optim)
        rep.best_state = unflatten_state(f"{p}/best", tensors, meta)
        rep.augment_rng.set_state(tensors[f"{p}/rng"])
        rep.order_rng.set_state(tensors[f"{p}/order_rng"])
        rep.perm = tensors.get(f"{p}/perm")
        rep.scheduler.load_state_dict(meta[f"{p}/scheduler"])
        rep.epoch = int(status["epoch"])
        rep.best_loss = float(status["best_loss"])
        rep.best_epoch = int(status["best_epoch"])
        rep.stopped = bool(status["stopped"])
        rep.stuck = status["stuck"]
        rep.early = EarlyStopping(**status["early"])
        rep.history = list(status["history"])
        rep.restarts = list(status["restarts"])
        rep.sum_loss, rep.sum_abs, rep.seen = status["sums"]
    # after any rebuild above: model construction reseeds torch's global generator
    torch.set_rng_state(tensors["torch_rng"])
