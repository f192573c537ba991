"""Training settings: the original AgeMapper's values, and a config's choices resolved over them.

``ORIGINAL`` is how github.com/AndreiRoibu/AgeMapper trained (``settings.ini``, ``run.py``,
``solver.py``, ``utils/data_utils.py``, ``utils/early_stopping.py``); its setting names are in
the comments. A config's ``training:`` subtree overrides these values key by key (nested
dictionaries one level deep), so a key left out trains as the original did. Where this project
offers something else, it is an option here; ``docs/fidelity.md`` lists them with measurements.
"""

from __future__ import annotations

import copy

from agemapper.errors import ConfigError

ORIGINAL: dict = {
    "epochs": 250,  # number_of_epochs
    "batch_size": 12,  # training_batch_size = validation_batch_size = 12
    "learning_rate": 5e-3,  # learning_rate
    "loss": "mse",  # loss_function = 'mse'
    "optimizer": "adam",  # optimiser = 'adam' (run.py: adam | adamW)
    "betas": [0.9, 0.999],  # optimizer_beta
    "eps": 1e-8,  # optimizer_epsilon
    "weight_decay": 0.0,  # optimizer_weigth_decay
    "scheduler": {
        # learning_rate_validation_scheduler = True, learning_rate_cyclical = False
        "name": "plateau",
        "factor": 0.5,  # learning_rate_scheduler_gamma (plateau factor, StepLR gamma)
        "patience": 15,  # learning_rate_scheduler_patience
        "threshold": 1e-7,  # learning_rate_scheduler_threshold
        "threshold_mode": "abs",  # solver.py: ReduceLROnPlateau(threshold_mode='abs')
        "min_lr": 1e-6,  # learning_rate_scheduler_min_value (plateau min_lr, CyclicLR base_lr)
        "step_size": 250,  # learning_rate_scheduler_step_size (StepLR)
        "max_lr": 3e-5,  # learning_rate_scheduler_max_value (CyclicLR)
        "step_size_up": 13200,  # learning_rate_scheduler_step_number (CyclicLR)
    },
    "early_stopping_patience": 40,  # early_stopping_patience
    "early_stopping_min_delta": 0.0,  # early_stopping_min_delta
    "early_stopping_min_patience": 0,  # early_stopping_min_patience
    # shift_transformation = True: np.random.randint(-2, 3, 3) voxels of the grid the volume is
    # read at (2 mm contrasts before the network's x2 upsampling); mirror_transformation = False
    "augmentation": {"max_shift": 2, "mirror": False, "shift_grid": "stored"},
    # three independent runs (run.py once per replicate): own shuffle, own augmentation draws
    "batch_order": "independent",
    # PyTorch's default initialisation of every layer, the output bias included
    "output_bias": "default",
    # the validation loss driving the scheduler and early stopping: np.mean of batch losses
    "validation_loss": "batches",
    # FloatTensor throughout (no autocast), in training and validation
    "precision": "fp32",
    "validation_precision": "fp32",
    # the original never restarted a network; stuck ones are still detected and logged
    "restart_stuck": {
        "after_epochs": 10,
        "max_restarts": 0,
        "spread_ratio": 0.05,
        "baseline_ratio": 1.0,
    },
    # use_pre_trained = False (True: torch.load of saved_models/<experiment>.pth.tar)
    "initial_weights": None,
    "seed": 0,
}

CHOICES = {
    "augmentation.shift_grid": ("stored", "training"),
    "batch_order": ("independent", "shared"),
    "output_bias": ("default", "mean_age"),
    "validation_loss": ("batches", "subjects"),
    "precision": ("fp32", "bf16", "auto"),
    "validation_precision": ("fp32", "same"),
    "scheduler.threshold_mode": ("abs", "rel"),
}


def resolve(training: dict | None) -> dict:
    """The original's settings overridden by ``training`` (unknown keys pass through)."""
    out = copy.deepcopy(ORIGINAL)
    for key, value in (training or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = copy.deepcopy(value)
    check(out)
    return out


def check(settings: dict) -> None:
    """Refuse a value that names no option (the optimiser and scheduler tables included)."""
    from agemapper.networks.optim import OPTIMIZERS, SCHEDULERS

    choices = {
        **CHOICES,
        "optimizer": tuple(OPTIMIZERS),
        "scheduler.name": tuple(SCHEDULERS),
    }
    for dotted, allowed in choices.items():
        node = settings
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.get(p) or {}
        if leaf in node and node[leaf] not in allowed:
            raise ConfigError(
                f"training.{dotted}: {node[leaf]!r} is not one of {', '.join(map(str, allowed))}"
            )
