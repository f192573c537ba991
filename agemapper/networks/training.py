"""Training the replicate networks of one contrast and sex, resumably.

The replicates (3 in the study) share one data stream (the same shuffled batches are read
once) but have their own initialisation, augmentation draws, optimiser, scheduler, early
stopping and best checkpoint. Everything needed to continue is written to one checkpoint file
after every epoch, and after the current batch when SIGTERM arrives (SLURM sends it at the time
limit): a rerun resumes where the job stopped and, on the CPU, ends with the same weights as an
uninterrupted run.
"""

from __future__ import annotations

import logging
import math
import os
import platform
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from agemapper import __version__
from agemapper.io import write_json, write_table
from agemapper.networks.batches import BatchSource, augment
from agemapper.networks.kernels import use_shifted_first_conv
from agemapper.networks.models import build_model, count_parameters, loss_function
from agemapper.networks.serialization import (
    check_model_file,
    fingerprint,
    flatten_state,
    load_tensors,
    save_tensors,
    unflatten_state,
)
from agemapper.progress import Progress
from agemapper.seeds import derive_seed

log = logging.getLogger(__name__)

METRIC_COLUMNS = [
    "epoch",
    "train_loss",
    "train_mae",
    "val_loss",
    "val_mae",
    "lr",
    "seconds",
    "best",
]


class Interrupted(RuntimeError):
    """Training stopped on a signal after saving its checkpoint; rerun to resume."""


# ----------------------------------------------------------------------------- state


@dataclass
class Replicate:
    index: int
    seed: int
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.ReduceLROnPlateau
    generator: torch.Generator
    forward: torch.nn.Module | None = None  # the model, or its torch.compile'd wrapper
    best_loss: float = math.inf
    best_epoch: int = 0
    best_state: dict = field(default_factory=dict)
    stopped: bool = False
    history: list = field(default_factory=list)
    # running sums over the current epoch
    sum_loss: float = 0.0
    sum_abs: float = 0.0
    seen: int = 0


def resolve_device(name: str) -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``; other names pass through."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def fast_path(device: torch.device, training: dict, runtime: dict) -> dict:
    """What the trainer does for speed on ``device``; everything but prefetch is CUDA-only.

    ``training.precision``: ``auto`` (bf16 autocast on CUDA, fp32 elsewhere), ``bf16`` or
    ``fp32``. Runtime: ``channels_last`` (default on CUDA), ``compile`` (torch.compile, off by
    default), ``cudnn_benchmark`` (default on), ``prefetch`` (batches read ahead, default 2),
    ``first_conv`` (``cudnn``, or ``shifted``: :mod:`agemapper.kernels`, any device).
    """
    cuda = device.type == "cuda"
    precision = training.get("precision", "auto")
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


def _cpu_state(model: torch.nn.Module) -> dict:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


class Trainer:
    """Train ``replicates`` networks on one contrast/sex cache pair."""

    def __init__(
        self,
        train_cache,
        validation_cache,
        model_spec: dict,
        training: dict,
        replicates: list[int],
        seed_parts: tuple,
        checkpoint,
        device: str = "auto",
        threads: int | None = None,
        preload_bytes: float = 4e9,
        describe: str = "",
        speed: dict | None = None,
    ):
        self.model_spec = dict(model_spec)
        self.training = dict(training)
        self.replicate_ids = list(replicates)
        self.checkpoint_path = Path(checkpoint)
        self.describe = describe or str(seed_parts)
        self.device = torch.device(resolve_device(device))
        if threads:
            torch.set_num_threads(int(threads))
        self.speed = fast_path(self.device, self.training, speed or {})
        prefetch = self.speed["prefetch"]
        self.train = BatchSource(train_cache, self.device, preload_bytes, prefetch)
        self.val = BatchSource(validation_cache, self.device, preload_bytes, prefetch)
        if self.train.shape != self.val.shape:
            raise ValueError(f"train grid {self.train.shape} != validation {self.val.shape}")
        base = int(self.training.get("seed", 0))
        self.shuffle = torch.Generator().manual_seed(derive_seed(base, *seed_parts, "shuffle"))
        self.reps = [self._make_replicate(r, derive_seed(base, *seed_parts, r)) for r in replicates]
        self.loss_fn = loss_function(
            self.reps[0].model, self.training.get("loss", "mse"), self.training.get("sigma", 1.0)
        )
        self.fingerprint = fingerprint(
            self.model_spec,
            {k: v for k, v in self.training.items() if k not in ("epochs",)},
            self.replicate_ids,
            seed_parts,
            self.train.manifest[["subject", "age"]].to_numpy().tolist(),
            self.val.manifest[["subject", "age"]].to_numpy().tolist(),
            list(self.train.shape),
        )
        self.epoch = 0  # epochs completed
        self.batch_start = 0  # next batch within the current epoch
        self.perm: torch.Tensor | None = None
        self.epoch_seconds = 0.0
        self.progress: Progress | None = None  # the epoch log line, set by run()
        self._signal = None

    # -- construction

    def _make_replicate(self, index: int, seed: int) -> Replicate:
        torch.manual_seed(seed)
        model = build_model(self.model_spec, self.train.shape)
        if hasattr(model, "init_output"):
            model.init_output(float(self.train.ages.mean()))
        model.to(self.device)
        if self.speed["first_conv"] == "shifted":
            use_shifted_first_conv(model)
        if self.speed["channels_last"]:
            model.to(memory_format=torch.channels_last_3d)
        opt = torch.optim.Adam(
            model.parameters(),
            lr=float(self.training.get("learning_rate", 5e-3)),
            betas=tuple(self.training.get("betas", (0.9, 0.999))),
            eps=float(self.training.get("eps", 1e-8)),
            weight_decay=float(self.training.get("weight_decay", 0.0)),
        )
        sch = self.training.get("scheduler", {})
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt,
            mode="min",
            factor=float(sch.get("factor", 0.5)),
            patience=int(sch.get("patience", 15)),
            threshold=float(sch.get("threshold", 1e-7)),
            min_lr=float(sch.get("min_lr", 1e-6)),
        )
        gen = torch.Generator().manual_seed(seed + 1)
        step = torch.compile(model) if self.speed["compile"] else model
        return Replicate(index, seed, model, opt, scheduler, gen, forward=step)

    # -- checkpointing

    def save_checkpoint(self) -> None:
        tensors: dict[str, torch.Tensor] = {}
        meta: dict = {
            "fingerprint": self.fingerprint,
            "epoch": self.epoch,
            "batch_start": self.batch_start,
            "epoch_seconds": self.epoch_seconds,
            # provenance for the resuming job's log (the scheduler replaces the old job's log)
            "saved": {
                "on": "end of epoch" if self._signal is None else f"signal {self._signal}",
                "slurm_job": os.environ.get("SLURM_JOB_ID"),
                "host": socket.gethostname(),
            },
        }
        tensors["shuffle_rng"] = self.shuffle.get_state()
        tensors["torch_rng"] = torch.get_rng_state()
        if self.perm is not None:
            tensors["perm"] = self.perm
        for rep in self.reps:
            p = f"rep{rep.index}"
            flatten_state(f"{p}/model", rep.model.state_dict(), tensors, meta)
            flatten_state(f"{p}/optim", rep.optimizer.state_dict(), tensors, meta)
            flatten_state(f"{p}/best", rep.best_state, tensors, meta)
            tensors[f"{p}/rng"] = rep.generator.get_state()
            meta[f"{p}/scheduler"] = rep.scheduler.state_dict()
            meta[f"{p}/status"] = {
                "best_loss": rep.best_loss,
                "best_epoch": rep.best_epoch,
                "stopped": rep.stopped,
                "history": rep.history,
                "sums": [rep.sum_loss, rep.sum_abs, rep.seen],
            }
        save_tensors(self.checkpoint_path, tensors, meta)

    def try_resume(self) -> bool:
        if not self.checkpoint_path.exists():
            return False
        tensors, meta = load_tensors(self.checkpoint_path)
        if meta.get("fingerprint") != self.fingerprint:
            log.warning(
                "%s: checkpoint %s was made with other settings or data; starting afresh",
                self.describe,
                self.checkpoint_path,
            )
            return False
        self.epoch = int(meta["epoch"])
        self.batch_start = int(meta["batch_start"])
        self.epoch_seconds = float(meta.get("epoch_seconds", 0.0))
        self.shuffle.set_state(tensors["shuffle_rng"])
        torch.set_rng_state(tensors["torch_rng"])
        self.perm = tensors.get("perm")
        for rep in self.reps:
            p = f"rep{rep.index}"
            rep.model.load_state_dict(unflatten_state(f"{p}/model", tensors, meta))
            optim = unflatten_state(f"{p}/optim", tensors, meta)
            optim.setdefault("state", {})
            rep.optimizer.load_state_dict(optim)
            rep.best_state = unflatten_state(f"{p}/best", tensors, meta)
            rep.generator.set_state(tensors[f"{p}/rng"])
            rep.scheduler.load_state_dict(meta[f"{p}/scheduler"])
            status = meta[f"{p}/status"]
            rep.best_loss = float(status["best_loss"])
            rep.best_epoch = int(status["best_epoch"])
            rep.stopped = bool(status["stopped"])
            rep.history = list(status["history"])
            rep.sum_loss, rep.sum_abs, rep.seen = status["sums"]
        saved = meta.get("saved") or {}
        job = f" in SLURM job {saved['slurm_job']}" if saved.get("slurm_job") else ""
        log.info(
            "%s: resumed from %s at epoch %d, batch %d (saved on %s%s on %s)",
            self.describe,
            self.checkpoint_path,
            self.epoch + 1,
            self.batch_start,
            saved.get("on", "?"),
            job,
            saved.get("host", "?"),
        )
        return True

    # -- signals

    def _on_signal(self, signum, frame):  # noqa: ARG002
        self._signal = signum
        log.warning("%s: received signal %d; checkpointing after this batch", self.describe, signum)

    # -- loops

    def _autocast(self):
        return torch.autocast(self.device.type, torch.bfloat16, enabled=self.speed["bf16"])

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        if self.speed["channels_last"]:
            return x.contiguous(memory_format=torch.channels_last_3d)
        return x

    def _train_batch(self, x: torch.Tensor, y: torch.Tensor) -> None:
        aug = self.training.get("augmentation", {})
        for rep in self.reps:
            if rep.stopped:
                continue
            xa = augment(x, rep.generator, int(aug.get("max_shift", 2)), bool(aug.get("mirror")))
            rep.model.train()
            rep.optimizer.zero_grad(set_to_none=True)
            with self._autocast():
                out = rep.forward(self._layout(xa))
                loss = self.loss_fn(out.float(), y)
            loss.backward()
            rep.optimizer.step()
            with torch.no_grad():
                age = rep.model.to_age(out.detach().float())
            n = len(y)
            rep.sum_loss += loss.item() * n
            rep.sum_abs += float((age - y).abs().sum())
            rep.seen += n

    @torch.no_grad()
    def evaluate(self, rep: Replicate, source: BatchSource) -> tuple[float, float]:
        rep.model.eval()
        bs = int(self.training.get("batch_size", 12))
        indices = (torch.arange(s, min(s + bs, len(source))) for s in range(0, len(source), bs))
        total_loss = total_abs = 0.0
        for x, y in source.batches(indices):
            with self._autocast():
                out = rep.forward(self._layout(x)).float()
            total_loss += float(self.loss_fn(out, y)) * len(y)
            total_abs += float((rep.model.to_age(out) - y).abs().sum())
        return total_loss / len(source), total_abs / len(source)

    def _end_epoch(self, seconds: float) -> None:
        patience = int(self.training.get("early_stopping_patience", 40))
        max_epochs = int(self.training.get("epochs", 250))
        lines = []
        for rep in self.reps:
            if rep.stopped:
                continue
            val_loss, val_mae = self.evaluate(rep, self.val)
            rep.scheduler.step(val_loss)
            improved = val_loss < rep.best_loss
            if improved:
                rep.best_loss, rep.best_epoch = val_loss, self.epoch
                rep.best_state = _cpu_state(rep.model)
            rep.history.append(
                {
                    "epoch": self.epoch,
                    "train_loss": rep.sum_loss / max(rep.seen, 1),
                    "train_mae": rep.sum_abs / max(rep.seen, 1),
                    "val_loss": val_loss,
                    "val_mae": val_mae,
                    "lr": rep.optimizer.param_groups[0]["lr"],
                    "seconds": seconds,
                    "best": improved,
                }
            )
            rep.sum_loss = rep.sum_abs = 0.0
            rep.seen = 0
            if self.epoch - rep.best_epoch >= patience:
                rep.stopped = True
            h = rep.history[-1]
            lines.append(
                f"rep{rep.index} loss {h['train_loss']:.3f} mae {h['train_mae']:.2f} | "
                f"val loss {val_loss:.3f} mae {val_mae:.2f}{' *' if improved else ''} "
                f"lr {h['lr']:.1e}{' (stopped early)' if rep.stopped else ''}"
            )
        self.epoch_seconds = 0.0
        if self.progress is None:  # outside run()
            self.progress = Progress(self.describe, max_epochs, "epoch", log=log, every=1)
        self.progress.update(self.epoch, f"last {seconds:.1f} s | " + " | ".join(lines))

    def run(self) -> None:
        """Train until every replicate stops early or reaches the epoch limit."""
        self.try_resume()
        max_epochs = int(self.training.get("epochs", 250))
        # early stopping may end sooner: the ETA is a bound
        self.progress = Progress(
            self.describe, max_epochs, "epoch", log=log, every=1, done=self.epoch, upper_bound=True
        )
        bs = int(self.training.get("batch_size", 12))
        n = len(self.train)
        log.info(
            "%s: %d training / %d validation subjects, grid %s (stored %s), %d replicates x %d "
            "parameters, device %s (%s)",
            self.describe,
            n,
            len(self.val),
            self.train.shape,
            self.train.stored_shape,
            len(self.reps),
            count_parameters(self.reps[0].model),
            self.device,
            ", ".join(f"{k} {v}" for k, v in self.speed.items()),
        )
        previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
        for s in previous:
            signal.signal(s, self._on_signal)
        try:
            while self.epoch < max_epochs and not all(r.stopped for r in self.reps):
                if self.perm is None or self.batch_start == 0:
                    self.perm = torch.randperm(n, generator=self.shuffle)
                started = time.monotonic()
                # BatchNorm needs two samples: a last batch of one is left out
                starts = [s for s in range(self.batch_start, n, bs) if min(bs, n - s) >= 2]
                indices = (self.perm[s : s + bs] for s in starts)
                for start, (x, y) in zip(starts, self.train.batches(indices), strict=True):
                    self._train_batch(x, y)
                    self.batch_start = start + bs
                    if self._signal is not None:
                        self.epoch_seconds += time.monotonic() - started
                        self.save_checkpoint()
                        raise Interrupted(
                            f"{self.describe}: stopped by signal {self._signal} in epoch "
                            f"{self.epoch + 1}; checkpoint {self.checkpoint_path} saved, rerun "
                            "to resume"
                        )
                self.epoch += 1
                self.batch_start = 0
                self.perm = None
                self._end_epoch(self.epoch_seconds + time.monotonic() - started)
                self.save_checkpoint()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    # -- outputs

    def metadata(self, rep: Replicate, contract: dict) -> dict:
        return {
            "format": "agemapper-model/1",
            "replicate": rep.index,
            "seed": rep.seed,
            "model": self.model_spec,
            "training": self.training,
            "input": {**contract, "shape": list(self.train.shape)},
            "data": {
                "training_subjects": len(self.train),
                "validation_subjects": len(self.val),
                "fingerprint": self.fingerprint,
            },
            "result": {
                "best_epoch": rep.best_epoch,
                "best_val_loss": rep.best_loss,
                "best_val_mae": next(
                    (h["val_mae"] for h in rep.history if h["epoch"] == rep.best_epoch), None
                ),
                "epochs_trained": self.epoch,
            },
            "parameters": count_parameters(rep.model),
            "versions": versions(),
            "host": socket.gethostname(),
            "device": str(self.device),
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }

    def write_outputs(self, weights: list, metadata: list, metrics: list, contract: dict):
        for rep, w, m, t in zip(self.reps, weights, metadata, metrics, strict=True):
            meta = self.metadata(rep, contract)
            save_tensors(w, rep.best_state or _cpu_state(rep.model), meta)
            write_json(m, meta)
            write_table(t, pd.DataFrame(rep.history, columns=METRIC_COLUMNS))


def versions() -> dict:
    import nibabel

    return {
        "agemapper": __version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": np.__version__,
        "nibabel": nibabel.__version__,
        "platform": platform.platform(),
    }


def train_replicates(
    train_cache,
    validation_cache,
    model_spec: dict,
    training: dict,
    contract: dict,
    seed_parts: tuple,
    weights: list,
    metadata: list,
    metrics: list,
    checkpoint,
    runtime: dict | None = None,
) -> Trainer:
    """Train one network per entry of ``weights`` and write weights, metadata and metrics."""
    runtime = runtime or {}
    replicates = list(range(1, len(weights) + 1))
    trainer = Trainer(
        train_cache,
        validation_cache,
        model_spec,
        training,
        replicates,
        seed_parts,
        checkpoint,
        device=runtime.get("device", "auto"),
        threads=runtime.get("threads"),
        preload_bytes=float(runtime.get("preload_gb", 4)) * 1e9,
        describe="/".join(str(p) for p in seed_parts),
        speed=runtime,
    )
    trainer.run()
    trainer.write_outputs(weights, metadata, metrics, contract)
    if not runtime.get("keep_checkpoint", False):
        Path(checkpoint).unlink(missing_ok=True)
    return trainer


def load_model(weights, device: str = "cpu") -> tuple[torch.nn.Module, dict]:
    """Rebuild a trained network from its safetensors weights and embedded metadata."""
    tensors, meta = load_tensors(weights)
    check_model_file(tensors, meta, weights)
    model = build_model(meta["model"], meta["input"]["shape"])
    try:
        model.load_state_dict(tensors)
    except RuntimeError as exc:  # missing, unexpected or mis-shaped tensors
        from agemapper.errors import InputDataError

        detail = " ".join(str(exc).split())
        raise InputDataError(
            f"does not fit the network its metadata describes ({detail[:300]})", path=weights
        ) from exc
    model.to(resolve_device(device)).eval()
    return model, meta


def default_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
