"""A trained network's files, and reading networks back.

Per replicate: the weights of the network kept (safetensors) with its metadata embedded, the
same metadata as JSON (model, training settings as given and as resolved, input contract, data,
result: best epoch, restarts and why, whether it is still stuck; versions, host, device), and
its per-epoch metrics (:data:`METRIC_COLUMNS`, every attempt).
"""

from __future__ import annotations

import hashlib
import logging
import platform
import socket
import sys
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import torch

from agemapper import __version__
from agemapper.errors import InputDataError
from agemapper.io import write_json, write_table
from agemapper.networks.models import build_model, count_parameters
from agemapper.networks.replicates import METRIC_COLUMNS, Replicate, cpu_state
from agemapper.networks.serialization import check_model_file, load_tensors, save_tensors
from agemapper.networks.speed import resolve_device

log = logging.getLogger("agemapper.networks.training")


def metadata(trainer, rep: Replicate, contract: dict) -> dict:
    kept = rep.kept()
    return {
        "format": "agemapper-model/1",
        "replicate": rep.index,
        "seed": rep.seed,
        "model": trainer.model_spec,
        "training": trainer.training,
        "settings": trainer.settings,
        "input": {**contract, "shape": list(trainer.train.shape)},
        "data": {
            "training_subjects": len(trainer.train),
            "validation_subjects": len(trainer.val),
            "fingerprint": trainer.fingerprint,
        },
        "result": {
            "best_epoch": rep.best_epoch,
            "best_val_loss": rep.best_loss,
            "best_val_mae": kept["val_mae"] if kept else None,
            "best_val_sd": kept["val_sd"] if kept else None,
            "epochs_trained": rep.epoch,
            "mean_age_baseline_val_mae": trainer.baseline_mae,
            "attempt": rep.attempt,
            "restarts": rep.restarts,  # each: attempt, seed, epoch, reason
            "stuck": rep.stuck,  # why the kept network is still stuck (null: it is not)
        },
        "parameters": count_parameters(rep.model),
        "versions": versions(),
        "host": socket.gethostname(),
        "device": str(trainer.device),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def write(trainer, weights: list, metadata_files: list, metrics: list, contract: dict) -> None:
    """Each replicate's weights (with metadata), metadata JSON and metrics table."""
    for rep, w, m, t in zip(trainer.reps, weights, metadata_files, metrics, strict=True):
        meta = metadata(trainer, rep, contract)
        save_tensors(w, rep.best_state or cpu_state(rep.model), meta)
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


def load_model(weights, device: str = "cpu") -> tuple[torch.nn.Module, dict]:
    """Rebuild a trained network from its safetensors weights and embedded metadata."""
    tensors, meta = load_tensors(weights)
    check_model_file(tensors, meta, weights)
    model = build_model(meta["model"], meta["input"]["shape"])
    try:
        model.load_state_dict(tensors)
    except RuntimeError as exc:  # missing, unexpected or mis-shaped tensors
        detail = " ".join(str(exc).split())
        raise InputDataError(
            f"does not fit the network its metadata describes ({detail[:300]})", path=weights
        ) from exc
    model.to(resolve_device(device)).eval()
    return model, meta


def initial_networks(networks: list, shape) -> tuple[list[dict], str]:
    """The networks to fine-tune, each a model file of ours (checked against the training grid)
    or a state dict, and a digest of their weights (a checkpoint never resumes onto others)."""
    states = []
    digest = hashlib.sha256()
    for item in networks:
        if isinstance(item, dict):
            tensors = item
        else:
            tensors, meta = load_tensors(item)
            if meta.get("format") != "agemapper-model/1":
                raise InputDataError("not an AgeMapper model file (no metadata)", path=item)
            grid = list(meta.get("input", {}).get("shape", []))
            if grid != list(shape):
                raise InputDataError(
                    f"a network for the grid {grid} cannot be fine-tuned on {list(shape)}",
                    path=item,
                )
            log.info("fine-tuning from %s (%s)", item, meta["input"].get("contrast", "?"))
        for key in sorted(tensors):
            digest.update(key.encode())
            digest.update(tensors[key].detach().cpu().contiguous().numpy().tobytes())
        states.append(tensors)
    return states, digest.hexdigest()[:16]
