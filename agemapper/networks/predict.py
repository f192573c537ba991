"""Predicting brain age with trained replicates, and their per-subject mean."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from agemapper.errors import ConfigError
from agemapper.networks.batches import BatchSource
from agemapper.networks.training import load_model
from agemapper.progress import Progress

log = logging.getLogger(__name__)

# Fields of a model's input contract that a cache must match exactly.
CONTRACT_KEYS = ("contrast", "resolution", "data_file", "volume", "normalise", "scale_factor")


def check_contract(meta: dict, info: dict, weights) -> None:
    """Refuse a network whose input contract differs from the cache it is asked to read:
    the contrast's file and scaling, the grid, and (stored with networks since they carry
    them) the source grid and its affine."""
    from agemapper.images.grids import get_grid

    expected = meta.get("input", {})
    contrast = info.get("contrast", {})
    actual = {
        **contrast,
        "shape": list(info.get("shape", [])),
        "source_grid": info.get("source_grid"),
    }
    actual["affine"] = get_grid(contrast["resolution"]).affine if "resolution" in contrast else None
    problems = [
        f"{k}: model {expected.get(k)!r} vs data {actual.get(k)!r}"
        for k in (*CONTRACT_KEYS, "shape", "source_grid", "affine")
        if k in expected and _norm(expected.get(k)) != _norm(actual.get(k))
    ]
    if problems:
        raise ConfigError(f"model {weights} does not match its input: " + "; ".join(problems))


def _norm(v):
    if isinstance(v, float):
        return round(v, 9)
    if isinstance(v, (tuple, list)):
        return [_norm(x) for x in v]
    if isinstance(v, dict):
        return {k: _norm(x) for k, x in v.items()}
    return v


@torch.no_grad()
def predict_cache(models, source: BatchSource, batch_size: int = 12, label="") -> np.ndarray:
    """Predicted ages, one column per model, for every subject in the source's manifest."""
    n = len(source)
    out = np.zeros((n, len(models)), dtype=np.float64)
    starts = range(0, n, batch_size)
    indices = (torch.arange(s, min(s + batch_size, n)) for s in starts)
    progress = Progress(label or "prediction", n, "subject", log=log)
    for start, (x, _) in zip(starts, source.batches(indices), strict=True):
        for j, model in enumerate(models):
            out[start : start + len(x), j] = model.to_age(model(x)).double().cpu().numpy()
        progress.update(start + len(x))
    return out


def predict(weights: list, caches: list, infos: list, device: str = "cpu") -> pd.DataFrame:
    """Predict every cache with every replicate; add the replicate mean as ``predicted``."""
    import json

    loaded = [load_model(w, device) for w in weights]
    models = [m for m, _ in loaded]
    frames = []
    for cache, info_path in zip(caches, infos, strict=True):
        with open(info_path) as fh:
            info = json.load(fh)
        for w, (_, meta) in zip(weights, loaded, strict=True):
            check_contract(meta, info, w)
        source = BatchSource(cache, torch.device(device), preload_bytes=0)
        preds = predict_cache(models, source, label=Path(cache).name)
        bad = ~np.isfinite(preds)
        if bad.any():
            from agemapper.errors import InputDataError

            row, rep = (int(v[0]) for v in np.nonzero(bad))
            raise InputDataError(
                f"replicate {rep + 1} predicted {preds[row, rep]} for {int(bad.any(1).sum())} "
                f"subject(s) (first: subject {source.manifest.subject.iloc[row]}): a network "
                "whose training diverged, or input it was not trained for",
                path=weights[rep],
            )
        table = source.manifest[["subject", "sex", "split", "half", "age"]].copy()
        for j in range(preds.shape[1]):
            table[f"replicate_{j + 1}"] = preds[:, j]
        table["predicted"] = preds.mean(axis=1)
        frames.append(table)
        log.info("%s: %d subjects predicted", cache, len(table))
    return pd.concat(frames, ignore_index=True)
