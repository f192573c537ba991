"""Training as the original AgeMapper trained: each option against the original's formula.

The original's code is github.com/AndreiRoibu/AgeMapper (settings.ini, run.py, solver.py,
utils/data_utils.py, utils/early_stopping.py); the references below transcribe it.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from agemapper.errors import ConfigError
from agemapper.networks.batches import draw_augmentation
from agemapper.networks.models import AgeMapper, build_model, load_weights
from agemapper.networks.optim import OPTIMIZERS, SCHEDULERS, build_schedule
from agemapper.networks.settings import CHOICES, ORIGINAL, resolve
from agemapper.networks.speed import Speed
from agemapper.networks.stopping import EarlyStopping
from agemapper.networks.training import Trainer
from conftest import REPO, make_cache

MODEL = {"architecture": "agemapper", "channels": [2, 4, 4, 4, 4], "fully_connected": [8, 4]}

# settings.ini of the original release, [TRAINING] and [NETWORK] (its names)
SETTINGS_INI = {
    "training_batch_size": 12,
    "learning_rate": 5e-3,
    "optimizer_beta": (0.9, 0.999),
    "optimizer_epsilon": 1e-8,
    "optimizer_weigth_decay": 0,
    "number_of_epochs": 250,
    "learning_rate_scheduler_step_size": 250,
    "learning_rate_scheduler_gamma": 0.5,
    "learning_rate_validation_scheduler": True,
    "learning_rate_cyclical": False,
    "learning_rate_scheduler_patience": 15,
    "learning_rate_scheduler_threshold": 1e-7,
    "learning_rate_scheduler_min_value": 1e-6,
    "learning_rate_scheduler_max_value": 3e-5,
    "learning_rate_scheduler_step_number": 13200,
    "early_stopping_min_patience": 0,
    "early_stopping_patience": 40,
    "early_stopping_min_delta": 0,
    "optimiser": "adam",
    "loss_function": "mse",
    "dropout_rate_1": 0,
    "dropout_rate_2": 0,
    "dropout_rate_3": 0,
    "shift_transformation": True,
    "mirror_transformation": False,
}


def _ukb() -> dict:
    return yaml.safe_load((REPO / "config/ukb.yaml").read_text())


def test_study_config_trains_as_the_original():
    cfg = _ukb()
    t, o = resolve(cfg["training"]), SETTINGS_INI
    assert t["batch_size"] == o["training_batch_size"] and t["epochs"] == o["number_of_epochs"]
    assert t["learning_rate"] == o["learning_rate"] and t["loss"] == o["loss_function"]
    assert t["optimizer"] == o["optimiser"] and tuple(t["betas"]) == o["optimizer_beta"]
    assert t["eps"] == o["optimizer_epsilon"] and t["weight_decay"] == o["optimizer_weigth_decay"]
    s = t["scheduler"]
    assert s["name"] == "plateau"  # learning_rate_validation_scheduler, not cyclical
    assert s["factor"] == o["learning_rate_scheduler_gamma"]
    assert s["patience"] == o["learning_rate_scheduler_patience"]
    assert s["threshold"] == o["learning_rate_scheduler_threshold"]
    assert s["threshold_mode"] == "abs"  # solver.py
    assert s["min_lr"] == o["learning_rate_scheduler_min_value"]
    assert s["step_size"] == o["learning_rate_scheduler_step_size"]
    assert s["max_lr"] == o["learning_rate_scheduler_max_value"]
    assert s["step_size_up"] == o["learning_rate_scheduler_step_number"]
    assert t["early_stopping_patience"] == o["early_stopping_patience"]
    assert t["early_stopping_min_delta"] == o["early_stopping_min_delta"]
    assert t["early_stopping_min_patience"] == o["early_stopping_min_patience"]
    assert t["augmentation"] == {"max_shift": 2, "mirror": False, "shift_grid": "stored"}
    assert t["batch_order"] == "independent"  # one run.py per network
    assert t["output_bias"] == "default" and t["validation_loss"] == "batches"
    assert t["precision"] == t["validation_precision"] == "fp32"
    assert t["initial_weights"] is None  # use_pre_trained = False
    assert cfg["model"]["dropout"] == [o[f"dropout_rate_{i}"] for i in (1, 2, 3)]
    assert cfg["model"]["channels"] == [32, 64, 64, 64, 64]


def test_schema_documents_the_original_as_default():
    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    props = schema["properties"]["training"]["properties"]
    for key, value in ORIGINAL.items():
        if isinstance(value, dict):
            for sub, v in value.items():
                assert props[key]["properties"][sub]["default"] == v, f"{key}.{sub}"
        elif key != "betas" and "default" in props[key]:
            assert props[key]["default"] == value, key
    for dotted, allowed in CHOICES.items():
        node = props
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node[p]["properties"]
        assert set(node[leaf]["enum"]) == set(allowed), dotted


def test_unknown_optimizer_or_scheduler_is_refused():
    with pytest.raises(ConfigError, match="adamw"):
        resolve({"optimizer": "sgd"})
    with pytest.raises(ConfigError, match="plateau"):
        resolve({"scheduler": {"name": "cosine"}})
    assert set(OPTIMIZERS) == {"adam", "adamw"} and set(SCHEDULERS) == {"plateau", "step", "cyclic"}


# ----------------------------------------------------------------------------- item 1: shifts


def _two_mm_caches(tmp_path):
    """Caches stored on a coarse grid (like 2 mm, 16x18x16) for a training grid twice as fine."""
    out = []
    for name, n, seed in (("train", 6, 1), ("val", 4, 2)):
        cache, _ = make_cache(tmp_path, name, n, shape=(16, 18, 16), seed=seed)
        info = tmp_path / f"{name}.json"
        meta = json.loads(info.read_text())
        info.write_text(json.dumps({**meta, "shape": [32, 36, 32]}))
        out.append(cache)
    return out


def _original_2mm_input(volume: np.ndarray, shifts, flip: bool) -> torch.Tensor:
    """data_utils.py on the 2 mm crop (flip, roll, zero), then AgeMapper.forward's
    nn.Upsample(scale_factor=2, mode='trilinear', align_corners=True)."""
    X_volume = np.flip(volume, 0) if flip else volume
    x_shift, y_shift, z_shift = (int(s) for s in shifts)
    X_volume = np.roll(X_volume, x_shift, axis=0)
    X_volume = np.roll(X_volume, y_shift, axis=1)
    X_volume = np.roll(X_volume, z_shift, axis=2)
    if z_shift < 0:
        X_volume[:, :, z_shift:] = 0
    up = nn.Upsample(scale_factor=2, mode="trilinear", align_corners=True)
    return up(torch.from_numpy(np.ascontiguousarray(X_volume))[None, None])[0]


@pytest.mark.parametrize("mirror", [False, True])
def test_two_mm_contrasts_shift_in_two_mm_voxels_before_upsampling(tmp_path, mirror):
    train, val = _two_mm_caches(tmp_path)
    cfg = {"epochs": 1, "batch_size": 4, "augmentation": {"max_shift": 2, "mirror": mirror}}
    t = Trainer(train, val, MODEL, cfg, [1], ("f",), tmp_path / "c", device="cpu")
    assert t.stored_grid and t.train.shape == (32, 36, 32) and t.train.stored_shape == (16, 18, 16)
    x, _ = t.train.get(torch.arange(6), grid=False)
    rep = t.reps[0]
    draws = torch.Generator()
    draws.set_state(rep.augment_rng.get_state())
    shifts, flips = draw_augmentation(6, draws, 2)
    got = t.network_input(rep, x)
    assert got.shape == (6, 1, 32, 36, 32)
    for i in range(6):
        ref = _original_2mm_input(x[i, 0].numpy(), shifts[i], mirror and bool(flips[i]))
        torch.testing.assert_close(got[i], ref, rtol=0, atol=1e-6)
    assert shifts.abs().max() == 2  # up to 2 voxels of the 2 mm grid: 4 mm


def test_shift_on_the_training_grid_is_an_option(tmp_path):
    train, val = _two_mm_caches(tmp_path)
    cfg = {"epochs": 1, "augmentation": {"max_shift": 2, "shift_grid": "training"}}
    t = Trainer(train, val, MODEL, cfg, [1], ("f",), tmp_path / "c", device="cpu")
    x, _ = t.train.get(torch.arange(6), grid=True)  # upsampled first
    rep = t.reps[0]
    draws = torch.Generator()
    draws.set_state(rep.augment_rng.get_state())
    shifts, _ = draw_augmentation(6, draws, 2)
    got = t.network_input(rep, x)
    for i in range(6):
        dx, dy, dz = (int(s) for s in shifts[i])
        ref = torch.roll(x[i, 0], (dx, dy, dz), dims=(0, 1, 2))
        if dz < 0:
            ref[:, :, dz:] = 0
        assert torch.equal(got[i, 0], ref)


# ----------------------------------------------------------------------------- item 2: scheduler


def test_plateau_scheduler_is_the_originals():
    """solver.py: ReduceLROnPlateau(factor=gamma, patience, threshold, threshold_mode='abs',
    min_lr=min_value), stepped once per epoch with the mean validation loss."""
    losses = [10.0, 9.0, 9.0 - 5e-8, 9.0 - 9e-8, 9.0 - 2e-7, 9.0, 9.0, 9.0, 8.0, 8.0, 8.0]

    def lrs(scheduler, opt, losses=losses):
        out = []
        for loss in losses:
            scheduler.step(loss)
            out.append(opt.param_groups[0]["lr"])
        return out

    p = [nn.Parameter(torch.zeros(1))]
    opt = torch.optim.Adam(p, lr=5e-3)
    ours, steps = build_schedule(opt, {**ORIGINAL, "scheduler": {**ORIGINAL["scheduler"],
                                                                 "patience": 1}})  # fmt: skip
    assert steps == "validation_loss" and ours.threshold_mode == "abs"
    ref_opt = torch.optim.Adam([nn.Parameter(torch.zeros(1))], lr=5e-3)
    ref = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer=ref_opt, factor=0.5, patience=1, threshold=1e-7, threshold_mode="abs",
        min_lr=1e-6,
    )  # fmt: skip
    assert lrs(ours, opt) == lrs(ref, ref_opt)
    # 'rel' (this project's before) judges small improvements of a large loss otherwise
    slow = [10.0 - 0.05 * i for i in range(6)]
    rel_opt = torch.optim.Adam([nn.Parameter(torch.zeros(1))], lr=5e-3)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau
    rel = plateau(rel_opt, factor=0.5, patience=1, threshold=1e-2)  # threshold_mode 'rel'
    abs_opt = torch.optim.Adam([nn.Parameter(torch.zeros(1))], lr=5e-3)
    settings = {**ORIGINAL, "scheduler": {**ORIGINAL["scheduler"], "patience": 1,
                                          "threshold": 1e-2}}  # fmt: skip
    absolute, _ = build_schedule(abs_opt, settings)
    assert lrs(absolute, abs_opt, slow) == [5e-3] * 6
    assert lrs(rel, rel_opt, slow)[-1] < 5e-3


def test_step_and_cyclic_schedules_step_as_the_original(tmp_path):
    """StepLR once per epoch; CyclicLR after every training and validation batch."""
    train, _ = make_cache(tmp_path, "train", 10, shape=(32, 32, 32), seed=1)
    val, _ = make_cache(tmp_path, "val", 5, shape=(32, 32, 32), seed=2)
    base = {"epochs": 2, "batch_size": 4, "augmentation": {"max_shift": 0}}
    step = {**base, "scheduler": {"name": "step", "step_size": 1, "factor": 0.5}}
    t = Trainer(train, val, MODEL, step, [1], ("s",), tmp_path / "a", device="cpu")
    t.run()
    assert [h["lr"] for h in t.reps[0].history] == [2.5e-3, 1.25e-3]
    cyclic = {**base, "optimizer": "adamw", "scheduler": {"name": "cyclic", "step_size_up": 4}}
    t = Trainer(train, val, MODEL, cyclic, [1], ("c",), tmp_path / "b", device="cpu")
    assert isinstance(t.reps[0].optimizer, torch.optim.AdamW)
    t.run()
    # per epoch 3 training batches (4, 4, 2) and 2 validation batches (4, 1)
    assert t.reps[0].scheduler.last_epoch == 2 * (3 + 2)
    ref_opt = torch.optim.AdamW([nn.Parameter(torch.zeros(1))], lr=5e-3)
    ref = torch.optim.lr_scheduler.CyclicLR(ref_opt, base_lr=1e-6, max_lr=3e-5, step_size_up=4,
                                            cycle_momentum=False)  # fmt: skip
    lrs = []
    for _ in range(2):
        for _ in range(5):
            ref_opt.step()
            ref.step()
        lrs.append(ref_opt.param_groups[0]["lr"])
    assert [h["lr"] for h in t.reps[0].history] == pytest.approx(lrs)


# ----------------------------------------------------------------------------- item 3: bias


def test_output_bias_is_pytorchs_default_unless_asked(tmp_path):
    train, _ = make_cache(tmp_path, "train", 6, shape=(32, 32, 32), seed=1)
    val, _ = make_cache(tmp_path, "val", 4, shape=(32, 32, 32), seed=2)
    t = Trainer(train, val, MODEL, {"epochs": 1}, [1], ("b",), tmp_path / "a", device="cpu")
    torch.manual_seed(t.reps[0].seed)
    reference = AgeMapper((32, 32, 32), MODEL["channels"], MODEL["fully_connected"])
    for k, v in reference.state_dict().items():
        assert torch.equal(v, t.reps[0].model.state_dict()[k]), k
    mean = float(t.train.ages.mean())
    cfg = {"epochs": 1, "output_bias": "mean_age"}
    t = Trainer(train, val, MODEL, cfg, [1], ("b",), tmp_path / "b", device="cpu")
    assert float(t.reps[0].model.head[-1].bias.detach()) == pytest.approx(mean)


# ----------------------------------------------------------------------------- item 5


def test_validation_runs_in_fp32_whatever_the_training_precision():
    cpu = torch.device("cpu")
    bf16 = Speed(cpu, {"precision": "bf16"}, {})
    x = torch.randn(4, 4)
    with bf16.autocast():
        assert (x @ x).dtype == torch.bfloat16
    with bf16.autocast(validation=True):
        assert (x @ x).dtype == torch.float32
    same = Speed(cpu, {"precision": "bf16", "validation_precision": "same"}, {})
    with same.autocast(validation=True):
        assert (x @ x).dtype == torch.bfloat16


def test_validation_loss_is_the_mean_of_batch_losses(tmp_path):
    train, _ = make_cache(tmp_path, "train", 6, shape=(32, 32, 32), seed=1)
    val, _ = make_cache(tmp_path, "val", 7, shape=(32, 32, 32), seed=2)
    runs = {}
    for mode in ("batches", "subjects"):
        cfg = {"epochs": 1, "batch_size": 3, "validation_loss": mode}
        t = Trainer(train, val, MODEL, cfg, [1], ("v",), tmp_path / mode, device="cpu")
        runs[mode] = t.validate(t.reps[0:1])[0]
        model = t.reps[0].model.eval()
        x, y = t.val.get(torch.arange(7))
        with torch.no_grad():
            sq = (model(x) - y) ** 2
    parts = [sq[0:3].mean(), sq[3:6].mean(), sq[6:7].mean()]
    assert runs["batches"]["loss"] == pytest.approx(float(np.mean(parts)), rel=1e-6)
    assert runs["subjects"]["loss"] == pytest.approx(float(sq.mean()), rel=1e-6)
    assert runs["batches"]["batches"] == 3


# ----------------------------------------------------------------------------- item 6


def test_dropout_rates_per_layer_sit_where_the_originals_did():
    model = build_model({**MODEL, "dropout": [0.1, 0.0, 0.3]}, (32, 32, 32))
    layers = [type(m).__name__ for m in model.head]
    assert layers == ["Flatten", "Dropout", "Linear", "ReLU", "Linear", "ReLU", "Dropout", "Linear"]
    assert [m.p for m in model.head if isinstance(m, nn.Dropout)] == [0.1, 0.3]
    plain = build_model(MODEL, (32, 32, 32))
    load_weights(plain, model.state_dict())  # weights move between dropout layouts
    for a, b in zip(
        (m for m in model.head if isinstance(m, nn.Linear)),
        (m for m in plain.head if isinstance(m, nn.Linear)),
        strict=True,
    ):
        assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)
    with pytest.raises(ValueError, match="3 dropout rates for 4"):
        build_model({**MODEL, "fully_connected": [8, 4, 2], "dropout": [0.1, 0, 0]}, (32,) * 3)
    with pytest.raises(ValueError, match="another shape"):
        wider = build_model({**MODEL, "fully_connected": [9, 4]}, (32,) * 3)
        load_weights(wider, plain.state_dict())


class _OriginalEarlyStopping:
    """utils/early_stopping.py, verbatim in logic."""

    def __init__(self, patience=5, min_delta=0.0, best_score=None, counter=0):
        self.patience, self.counter, self.best_score = patience, counter, best_score
        self.early_stop, self.min_delta = False, min_delta

    def __call__(self, validation_loss, counter_overwrite=False):
        score = validation_loss
        if counter_overwrite:
            self.counter = 0
            self.best_score = None
        if self.best_score is None:
            self.best_score = score
        elif np.greater_equal(self.min_delta, self.best_score - score):
            self.counter += 1
            if self.counter >= self.patience:
                self.early_stop = True
        else:
            self.best_score = score
            self.counter = 0
        return self.early_stop, self.best_score, self.counter


def _original_solver(losses, patience, min_delta, min_patience):
    """solver.py's epoch loop: (epoch it stops at, the valid epochs it saved as best)."""
    es = _OriginalEarlyStopping(patience=patience, min_delta=min_delta)
    valid = []
    for epoch, loss in enumerate(losses, start=1):
        overwrite = epoch <= min_patience
        early_stop, _, counter = es(loss, counter_overwrite=overwrite)
        if epoch <= min_patience:
            early_stop, counter = False, 0
        if counter == 0:
            valid.append(epoch)
        if early_stop:
            return epoch, valid
    return len(losses), valid


@pytest.mark.parametrize("seed", range(6))
def test_early_stopping_is_the_originals(seed):
    rng = np.random.default_rng(seed)
    for patience, min_delta, min_patience in [(3, 0.0, 0), (2, 0.05, 0), (4, 0.0, 5), (1, 0.1, 2)]:
        losses = np.round(10 * np.exp(-0.05 * np.arange(40)) + rng.normal(0, 0.2, 40), 2)
        losses[10:14] = losses[9]  # ties count as no improvement
        ours = EarlyStopping(patience, min_delta, min_patience)
        kept, stop = [], len(losses)
        for epoch, loss in enumerate(losses, start=1):
            if ours.update(epoch, float(loss)):
                kept.append(epoch)
            if ours.stop:
                stop = epoch
                break
        assert (stop, kept) == _original_solver(losses, patience, min_delta, min_patience)
