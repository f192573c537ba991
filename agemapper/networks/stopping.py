"""When a replicate stops, which epoch it keeps, and when it is stuck and starts again.

:class:`EarlyStopping` is the original's rule (``utils/early_stopping.py`` as ``solver.py``
drives it): an epoch improves when its validation loss is lower than the best so far by more
than ``min_delta``; ``patience`` epochs in a row without improvement stop the network; the
network kept is the last one that improved. During the first ``min_patience`` epochs nothing
stops and every epoch is kept (the counter and the best loss are reset each epoch).

:func:`stuck_reason` is ours (the original has nothing like it): on small data a network can
collapse to a constant prediction and stay there. From epoch ``after_epochs`` of an attempt on,
the kept epoch is judged: its validation predictions have almost no spread (standard deviation
below ``spread_ratio`` x that of the validation ages), or its validation MAE is not below
``baseline_ratio`` x the MAE of predicting the training mean age for everyone.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass


@dataclass
class EarlyStopping:
    patience: int
    min_delta: float = 0.0
    min_patience: int = 0
    best: float | None = None
    counter: int = 0
    stop: bool = False

    def update(self, epoch: int, loss: float) -> bool:
        """Feed epoch ``epoch``'s (1-based) validation loss; True if this epoch is the one to
        keep (the original's ``counter_early_stop == 0``)."""
        warm = epoch <= self.min_patience
        if warm:  # counter_overwrite: the counter and best score start over
            self.counter, self.best = 0, None
        if not math.isfinite(loss):  # ours: a NaN loss never counts as an improvement
            self.counter += 1
        elif self.best is None:
            self.best = loss
        elif self.min_delta >= self.best - loss:  # np.greater_equal(min_delta, best - score)
            self.counter += 1
        else:
            self.best, self.counter = loss, 0
        if warm:
            self.counter = 0
        self.stop = self.stop or self.counter >= self.patience
        return self.counter == 0

    def state(self) -> dict:
        return asdict(self)


def stuck_reason(epoch: int, kept: dict | None, baseline_mae: float, age_sd: float, cfg: dict):
    """Why the attempt that kept epoch ``kept`` (a history row) is stuck at ``epoch``, or None."""
    if kept is None or epoch < int(cfg["after_epochs"]):
        return None
    spread = float(cfg["spread_ratio"]) * age_sd
    if not kept["val_sd"] >= spread:  # NaN predictions are stuck too
        return (
            f"flat: validation predictions vary by {kept['val_sd']:.3g} y (sd), below "
            f"{cfg['spread_ratio']} x the {age_sd:.2f} y of the ages"
        )
    bound = float(cfg["baseline_ratio"]) * baseline_mae
    if not kept["val_mae"] < bound:
        return (
            f"no better than the mean age: validation MAE {kept['val_mae']:.2f} y at epoch "
            f"{kept['epoch']}, not below {cfg['baseline_ratio']} x the {baseline_mae:.2f} y of "
            "predicting the training mean age"
        )
    return None
