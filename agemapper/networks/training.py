"""Training the replicate networks of one contrast and sex, resumably: the epoch loop.

The parts, each in its own module:

- :mod:`~agemapper.networks.settings`: the original's training settings, a config's choices;
- :mod:`~agemapper.networks.replicates`: the replicates packed into one trainer (independent
  runs sharing the decoded data), and their restart when stuck;
- :mod:`~agemapper.networks.optim`: the optimiser and scheduler tables;
- :mod:`~agemapper.networks.stopping`: early stopping (the original's rule), stuck detection;
- :mod:`~agemapper.networks.speed`: device and speed settings;
- :mod:`~agemapper.networks.checkpoint`: the resumable state;
- :mod:`~agemapper.networks.outputs`: a trained network's files, and reading networks back.

An epoch here is one epoch of every replicate still training: each step reads the union of
their batches once and trains each on its own samples; after the epoch each replicate is
validated (one pass over the validation data for all), its scheduler and early stopping are
stepped, and a stuck one is restarted with a new seed (a bounded number of times). A replicate
restarted later than the others simply trains for more rounds.
"""

from __future__ import annotations

import logging
import math
import signal
import time
from pathlib import Path

import numpy as np
import torch

from agemapper.errors import InputDataError
from agemapper.images.cache import to_grid
from agemapper.networks import checkpoint, outputs
from agemapper.networks.batches import BatchSource, augment
from agemapper.networks.models import count_parameters, loss_function
from agemapper.networks.outputs import initial_networks, load_model
from agemapper.networks.replicates import (
    METRIC_COLUMNS,
    Packing,
    Replicate,
    close_epoch,
    epoch_line,
)
from agemapper.networks.serialization import fingerprint
from agemapper.networks.settings import resolve
from agemapper.networks.speed import Speed, default_threads, fast_path, resolve_device
from agemapper.networks.stopping import stuck_reason
from agemapper.progress import Progress
from agemapper.seeds import derive_seed

__all__ = [
    "METRIC_COLUMNS",
    "Interrupted",
    "Trainer",
    "default_threads",
    "fast_path",
    "load_model",
    "resolve_device",
    "train_replicates",
]

log = logging.getLogger(__name__)


class Interrupted(RuntimeError):
    """Training stopped on a signal after saving its checkpoint; rerun to resume."""


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
        initial_weights: list | None = None,
    ):
        self.model_spec = dict(model_spec)
        self.training = dict(training)
        self.settings = resolve(training)
        self.replicate_ids = list(replicates)
        self.checkpoint_path = Path(checkpoint)
        self.describe = describe or str(seed_parts)
        self.device = torch.device(resolve_device(device))
        if threads:
            torch.set_num_threads(int(threads))
        self.fast = Speed(self.device, self.settings, speed)
        self.speed = self.fast.flags
        prefetch = self.speed["prefetch"]
        self.train_path = Path(train_cache)
        self.train = BatchSource(train_cache, self.device, preload_bytes, prefetch)
        self.val = BatchSource(validation_cache, self.device, preload_bytes, prefetch)
        if self.train.shape != self.val.shape:
            raise ValueError(f"train grid {self.train.shape} != validation {self.val.shape}")
        # shift on the stored grid (2 mm before upsampling, as the original) or the training grid
        self.stored_grid = self.settings["augmentation"]["shift_grid"] == "stored"
        base = int(self.settings["seed"])
        self.seed_parts = tuple(seed_parts)
        self.shuffle = torch.Generator().manual_seed(derive_seed(base, *seed_parts, "shuffle"))
        self._fresh_shuffle = self.shuffle.get_state()  # for a restart from scratch
        mean_age = float(self.train.ages.mean())
        val_ages = self.val.ages.double()
        self.baseline_mae = float((val_ages - mean_age).abs().mean())
        self.age_sd = float(val_ages.std(unbiased=False))
        initial_states = digest = None
        if initial_weights is not None:
            if len(initial_weights) != len(self.replicate_ids):
                raise ValueError(f"{len(initial_weights)} initial networks for {len(replicates)}")
            initial_states, digest = initial_networks(initial_weights, self.train.shape)
        self.packing = Packing(
            self.model_spec,
            self.settings,
            self.train.shape,
            mean_age,
            self.fast,
            seed_parts,
            initial_states,
        )
        self.reps = [self.packing.build(r, i) for i, r in enumerate(self.replicate_ids)]
        self.loss_fn = loss_function(
            self.reps[0].model, self.settings["loss"], self.settings.get("sigma", 1.0)
        )
        self.fingerprint = fingerprint(
            self.model_spec,
            {k: v for k, v in self.settings.items() if k not in ("epochs",)},
            self.replicate_ids,
            seed_parts,
            self.train.manifest[["subject", "age"]].to_numpy().tolist(),
            self.val.manifest[["subject", "age"]].to_numpy().tolist(),
            list(self.train.shape),
            digest,
        )
        self.epoch = 0  # epochs (of every replicate still training) completed
        self.batch_start = 0  # next batch within the current epoch
        self.perm: torch.Tensor | None = None  # this epoch's order (shared batch order)
        self.epoch_seconds = 0.0
        self.progress: Progress | None = None  # the epoch log line, set by run()
        self._signal = None

    # -- checkpointing (agemapper.networks.checkpoint)

    def save_checkpoint(self) -> None:
        checkpoint.save(self)

    def try_resume(self) -> bool:
        return checkpoint.restore(self)

    def reset(self) -> None:
        """Back to the state of a new Trainer (a checkpoint that could not be restored)."""
        self.epoch = self.batch_start = 0
        self.perm = None
        self.epoch_seconds = 0.0
        self.shuffle.set_state(self._fresh_shuffle)
        self.reps = [self.packing.build(r, i) for i, r in enumerate(self.replicate_ids)]

    def _on_signal(self, signum, frame):  # noqa: ARG002
        self._signal = signum
        log.warning("%s: received signal %d; checkpointing after this batch", self.describe, signum)

    # -- one step

    def _active(self) -> list[Replicate]:
        return [r for r in self.reps if not r.stopped]

    def _draw_orders(self, reps: list[Replicate], n: int) -> None:
        if self.settings["batch_order"] == "shared":
            if self.perm is None:
                self.perm = torch.randperm(n, generator=self.shuffle)
            for rep in reps:
                rep.perm = self.perm
        else:
            for rep in reps:
                if rep.perm is None:
                    rep.perm = torch.randperm(n, generator=rep.order_rng)

    @staticmethod
    def _plan(reps: list[Replicate], start: int, size: int):
        """The samples to read for one step (each replicate's batch, once) and, per replicate,
        where its batch lies in them (None: the whole read)."""
        picks = [rep.perm[start : start + size] for rep in reps]
        if all(torch.equal(p, picks[0]) for p in picks[1:]):
            return picks[0], [(rep, None) for rep in reps]
        union, inverse = torch.unique(torch.cat(picks), return_inverse=True)
        return union, list(zip(reps, inverse.split([len(p) for p in picks]), strict=True))

    def _train_batch(self, batch, picks) -> None:
        """One optimisation step of each replicate in ``picks`` on its part of ``batch``."""
        x, y = batch
        for rep, local in picks:
            if local is None:
                self._step(rep, x, y)
            else:
                self._step(rep, x[local.to(x.device)], y[local.to(y.device)])

    def network_input(self, rep: Replicate, x: torch.Tensor) -> torch.Tensor:
        """The augmented training input of ``rep`` from a batch as read: shifted on the stored
        grid and then upsampled to the training grid (``shift_grid: stored``, the original's
        order), or shifted on the training grid (``training``)."""
        aug = self.settings["augmentation"]
        x = augment(x, rep.augment_rng, int(aug["max_shift"]), bool(aug["mirror"]))
        return to_grid(x, self.train.shape) if self.stored_grid else x

    def _step(self, rep: Replicate, x: torch.Tensor, y: torch.Tensor) -> None:
        x = self.network_input(rep, x)
        rep.model.train()
        rep.optimizer.zero_grad(set_to_none=True)
        with self.fast.autocast():
            out = rep.forward(self.fast.layout(x))
            loss = self.loss_fn(out.float(), y)
        loss.backward()
        rep.optimizer.step()
        if rep.steps == "batch":
            rep.scheduler.step()
        with torch.no_grad():
            age = rep.model.to_age(out.detach().float())
        n = len(y)
        value = loss.item()
        if not math.isfinite(value):
            self._non_finite(rep, value)
        rep.sum_loss += value * n
        rep.sum_abs += float((age - y).abs().sum())
        rep.seen += n

    def _non_finite(self, rep: Replicate, value: float) -> None:
        """Stop on a NaN/inf training loss: nothing it would go on to learn is a network."""
        contrast, sex = (list(self.seed_parts) + ["?", "?"])[:2]
        attempt = f" (attempt {rep.attempt})" if rep.attempt > 1 else ""
        raise InputDataError(
            f"sex {sex}, replicate {rep.index}{attempt}: the training loss became {value} in "
            f"epoch {rep.epoch + 1}, so no network is written; likely the learning rate "
            f"(training.learning_rate {self.settings['learning_rate']}) is too high for this "
            "data, or the cache holds extreme intensities (check the preprocessing's "
            "intensity QC and scale factor)",
            contrast=contrast,
            path=self.train_path,
        )

    # -- validation

    @torch.no_grad()
    def validate(self, reps: list[Replicate], source: BatchSource | None = None) -> list[dict]:
        """Loss, MAE and prediction spread of each replicate, in one pass over the data.

        The loss is the mean of the per-batch losses (``validation_loss: batches``, the
        original's ``np.mean(losses)``) or of the per-subject losses (``subjects``).
        """
        source = source or self.val
        bs = int(self.settings["batch_size"])
        n = len(source)
        indices = (torch.arange(s, min(s + bs, n)) for s in range(0, n, bs))
        for rep in reps:
            rep.model.eval()
        losses = [[] for _ in reps]
        predictions = [[] for _ in reps]
        sizes = []
        for x, y in source.batches(indices):
            sizes.append(len(y))
            for j, rep in enumerate(reps):
                with self.fast.autocast(validation=True):
                    out = rep.forward(self.fast.layout(x)).float()
                losses[j].append(float(self.loss_fn(out, y)))
                predictions[j].append(rep.model.to_age(out).double().cpu())
        ages = source.ages.double()
        by_batch = self.settings["validation_loss"] == "batches"
        results = []
        for j in range(len(reps)):
            pred = torch.cat(predictions[j])
            loss = np.mean(losses[j]) if by_batch else np.average(losses[j], weights=sizes)
            results.append(
                {
                    "loss": float(loss),
                    "mae": float((pred - ages).abs().mean()),
                    "sd": float(pred.std(unbiased=False)),
                    "batches": len(sizes),
                }
            )
        return results

    # -- the end of an epoch

    def _end_epoch(self, reps: list[Replicate], seconds: float) -> None:
        cfg = self.settings["restart_stuck"]
        lines = []
        for rep, v in zip(reps, self.validate(reps), strict=True):
            row = close_epoch(rep, v, seconds)
            lines.append(epoch_line(rep, row))
            reason = stuck_reason(rep.epoch, rep.kept(), self.baseline_mae, self.age_sd, cfg)
            if reason and len(rep.restarts) < int(cfg["max_restarts"]):
                self._restart(rep, row, reason)
                lines[-1] += " (stuck: restarted)"
                continue
            if reason and rep.stuck is None:
                log.warning(
                    "%s: replicate %d is stuck (%s) and has no restart left (%d of %d used)",
                    self.describe,
                    rep.index,
                    reason,
                    len(rep.restarts),
                    cfg["max_restarts"],
                )
            rep.stuck = reason
            rep.stopped = rep.early.stop or rep.epoch >= int(self.settings["epochs"])
            if rep.early.stop:
                lines[-1] += " (stopped early)"
        self.epoch_seconds = 0.0
        remaining = max((int(self.settings["epochs"]) - r.epoch for r in self._active()), default=0)
        if self.progress is None:  # outside run()
            self.progress = Progress(
                self.describe, self.epoch + remaining, "epoch", log=log, every=1
            )
        self.progress.total = self.epoch + remaining  # a restart adds epochs
        self.progress.update(self.epoch, f"last {seconds:.1f} s | " + " | ".join(lines))

    def _restart(self, rep: Replicate, row: dict, reason: str) -> None:
        row["restarted"] = reason
        position = next(i for i, r in enumerate(self.reps) if r is rep)
        new = self.packing.restart(rep, reason, position)
        self.reps[position] = new
        log.warning(
            "%s: replicate %d is stuck after epoch %d of attempt %d (%s); restarting it with "
            "seed %d (restart %d of at most %d)",
            self.describe,
            rep.index,
            rep.epoch,
            rep.attempt,
            reason,
            new.seed,
            len(new.restarts),
            self.settings["restart_stuck"]["max_restarts"],
        )

    # -- the loop

    def run(self) -> None:
        """Train until every replicate stops early or reaches the epoch limit."""
        self.try_resume()
        # early stopping may end sooner (the ETA is a bound), a restart later
        self.progress = Progress(
            self.describe,
            int(self.settings["epochs"]),
            "epoch",
            log=log,
            every=1,
            done=self.epoch,
            upper_bound=True,
        )
        n = len(self.train)
        log.info(
            "%s: %d training / %d validation subjects, grid %s (stored %s), %d replicates x %d "
            "parameters, device %s (%s), batch order %s, mean-age baseline MAE %.2f y",
            self.describe,
            n,
            len(self.val),
            self.train.shape,
            self.train.stored_shape,
            len(self.reps),
            count_parameters(self.reps[0].model),
            self.device,
            ", ".join(f"{k} {v}" for k, v in self.speed.items()),
            self.settings["batch_order"],
            self.baseline_mae,
        )
        previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
        for s in previous:
            signal.signal(s, self._on_signal)
        try:
            while self._active():
                self._run_epoch(n)
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    def _run_epoch(self, n: int) -> None:
        bs = int(self.settings["batch_size"])
        reps = self._active()
        self._draw_orders(reps, n)
        started = time.monotonic()
        # BatchNorm needs two samples: a last batch of one is left out
        starts = [s for s in range(self.batch_start, n, bs) if min(bs, n - s) >= 2]
        plans = [self._plan(reps, s, bs) for s in starts]
        reads = self.train.batches((p[0] for p in plans), grid=not self.stored_grid)
        for start, (_, picks), batch in zip(starts, plans, reads, strict=True):
            self._train_batch(batch, picks)
            self.batch_start = start + bs
            if self._signal is not None:
                self.epoch_seconds += time.monotonic() - started
                self.save_checkpoint()
                raise Interrupted(
                    f"{self.describe}: stopped by signal {self._signal} in epoch "
                    f"{self.epoch + 1}; checkpoint {self.checkpoint_path} saved, rerun to resume"
                )
        self.epoch += 1
        self.batch_start = 0
        self.perm = None
        self._end_epoch(reps, self.epoch_seconds + time.monotonic() - started)
        self.save_checkpoint()

    # -- outputs (agemapper.networks.outputs)

    def write_outputs(self, weights: list, metadata: list, metrics: list, contract: dict):
        outputs.write(self, weights, metadata, metrics, contract)


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
    initial_weights: list | None = None,
) -> Trainer:
    """Train one network per entry of ``weights`` and write weights, metadata and metrics.

    ``initial_weights``: one network per replicate to fine-tune from, a model file of ours (e.g.
    trained on another cohort, or an original network imported with
    :mod:`agemapper.networks.legacy`) or a state dict; None trains from scratch.
    """
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
        initial_weights=list(initial_weights) if initial_weights else None,
    )
    trainer.run()
    trainer.write_outputs(weights, metadata, metrics, contract)
    if not runtime.get("keep_checkpoint", False):
        Path(checkpoint).unlink(missing_ok=True)
    return trainer
