import numpy as np
import pandas as pd
import pytest
import torch

from agemapper.networks.batches import augment
from agemapper.networks.serialization import load_tensors
from agemapper.networks.training import Interrupted, Trainer, load_model, train_replicates
from conftest import make_cache

MODEL = {"architecture": "agemapper", "channels": [4, 8, 8, 8, 8], "fully_connected": [16, 8]}
TRAINING = {
    "epochs": 3,
    "batch_size": 4,
    "learning_rate": 0.01,
    "loss": "mse",
    "seed": 3,
    "scheduler": {"factor": 0.5, "patience": 1},
    "early_stopping_patience": 10,
    "augmentation": {"max_shift": 1},
}


@pytest.fixture
def caches(tmp_path):
    train, contract = make_cache(tmp_path, "train", 16, seed=1)
    val, _ = make_cache(tmp_path, "val", 8, seed=2)
    return train, val, contract


def _outputs(tmp_path, n=2, tag="out"):
    d = tmp_path / tag
    return (
        [d / f"r{i}/model.safetensors" for i in range(n)],
        [d / f"r{i}/metadata.json" for i in range(n)],
        [d / f"r{i}/metrics.tsv" for i in range(n)],
    )


def test_training_writes_weights_metadata_metrics(tmp_path, caches):
    train, val, contract = caches
    w, m, t = _outputs(tmp_path)
    train_replicates(
        train,
        val,
        MODEL,
        TRAINING,
        contract,
        ("T1", "female"),
        w,
        m,
        t,
        tmp_path / "ckpt.safetensors",
        {"device": "cpu"},
    )
    metrics = pd.read_csv(t[0], sep="\t")
    assert list(metrics.epoch) == [1, 2, 3]
    assert metrics.val_mae.notna().all() and metrics.lr.iloc[0] == 0.01
    model, meta = load_model(w[0])
    assert meta["input"]["contrast"] == "T1_nonlinear" and meta["input"]["shape"] == [32, 32, 32]
    assert meta["result"]["best_epoch"] == int(metrics.val_loss.idxmin()) + 1
    assert meta["versions"]["torch"] == torch.__version__
    # replicates differ (own seeds), the checkpoint is gone after success
    w0, _ = load_tensors(w[0])
    w1, _ = load_tensors(w[1])
    assert not torch.equal(w0["features.0.0.weight"], w1["features.0.0.weight"])
    assert not (tmp_path / "ckpt.safetensors").exists()


def test_training_learns_an_easy_signal(tmp_path):
    train, contract = make_cache(tmp_path, "train", 48, seed=1)
    val, _ = make_cache(tmp_path, "val", 16, seed=2)
    w, m, t = _outputs(tmp_path, n=1)
    cfg = {**TRAINING, "epochs": 12, "learning_rate": 0.003}
    train_replicates(
        train,
        val,
        MODEL,
        cfg,
        contract,
        ("T1", "male"),
        w,
        m,
        t,
        tmp_path / "ckpt.safetensors",
        {"device": "cpu"},
    )
    metrics = pd.read_csv(t[0], sep="\t")
    ages = pd.read_csv(tmp_path / "val.tsv", sep="\t").age
    baseline = (ages - ages.mean()).abs().mean()
    assert metrics.val_mae.min() < 0.6 * baseline


def _trainer(caches, ckpt, epochs=3):
    train, val, _ = caches
    cfg = {**TRAINING, "epochs": epochs}
    return Trainer(train, val, MODEL, cfg, [1, 2], ("T1", "female"), ckpt, device="cpu", threads=1)


def _weights(trainer):
    return [{k: v.clone() for k, v in r.model.state_dict().items()} for r in trainer.reps]


def test_interrupted_training_resumes_to_identical_weights(tmp_path, caches, caplog, monkeypatch):
    torch.use_deterministic_algorithms(True)
    straight = _trainer(caches, tmp_path / "a.safetensors")
    straight.run()
    expected = _weights(straight)

    ckpt = tmp_path / "b.safetensors"
    first = _trainer(caches, ckpt)
    calls = {"n": 0}
    original = first._train_batch

    def stop_in_epoch_two(x, y):  # SIGTERM arrives during the 6th batch (epoch 2)
        original(x, y)
        calls["n"] += 1
        if calls["n"] == 6:
            first._on_signal(15, None)

    first._train_batch = stop_in_epoch_two
    monkeypatch.setenv("SLURM_JOB_ID", "4242")  # as in a SLURM job stopped at its time limit
    with pytest.raises(Interrupted, match="rerun to resume"):
        first.run()
    assert ckpt.exists()

    monkeypatch.setenv("SLURM_JOB_ID", "4243")
    resumed = _trainer(caches, ckpt)
    with caplog.at_level("INFO", logger="agemapper.networks.training"):
        resumed.run()
    assert "at epoch 2, batch" in caplog.text
    assert "(saved on signal 15 in SLURM job 4242 on " in caplog.text
    for a, b in zip(expected, _weights(resumed), strict=True):
        for k in a:
            assert torch.equal(a[k], b[k]), k
    assert [h["val_loss"] for h in straight.reps[0].history] == [
        h["val_loss"] for h in resumed.reps[0].history
    ]


def test_checkpoint_from_other_settings_is_not_resumed(tmp_path, caches):
    ckpt = tmp_path / "c.safetensors"
    t = _trainer(caches, ckpt, epochs=1)
    t.run()
    other = Trainer(
        caches[0],
        caches[1],
        MODEL,
        {**TRAINING, "learning_rate": 0.5},
        [1, 2],
        ("T1", "female"),
        ckpt,
        device="cpu",
    )
    assert other.try_resume() is False


def test_early_stopping(tmp_path, caches):
    train, val, contract = caches
    cfg = {**TRAINING, "epochs": 50, "learning_rate": 0.0, "early_stopping_patience": 2}
    w, m, t = _outputs(tmp_path, n=1)
    trainer = train_replicates(
        train,
        val,
        MODEL,
        cfg,
        contract,
        ("T1", "f"),
        w,
        m,
        t,
        tmp_path / "k.safetensors",
        {"device": "cpu"},
    )
    assert trainer.epoch < 10 and trainer.reps[0].stopped


def test_augmentation_shifts_and_zeroes_wrapped_z_slices():
    x = torch.ones(64, 1, 6, 6, 6)
    gen = torch.Generator().manual_seed(0)
    out = augment(x, gen, 2, False)
    assert out.shape == x.shape
    zero_planes = (out.sum(dim=(1, 2, 3)) == 0).sum(dim=1)  # z slices zeroed per sample
    assert set(zero_planes.tolist()) == {0, 1, 2}
    assert torch.equal(augment(x, gen, 0, False), x)
    np.testing.assert_array_equal(out[:, :, :, :, 0].min(dim=1).values.numpy() >= 0, True)


def test_sfcn_trains_with_soft_labels(tmp_path, caches):
    train, val, contract = caches
    w, m, t = _outputs(tmp_path, n=1)
    sfcn = {"architecture": "sfcn", "channels": [2, 4, 4, 4, 4, 4], "bin_range": [40, 90]}
    cfg = {**TRAINING, "epochs": 2, "loss": "kl"}
    train_replicates(
        train,
        val,
        sfcn,
        cfg,
        contract,
        ("T1", "f"),
        w,
        m,
        t,
        tmp_path / "k.safetensors",
        {"device": "cpu"},
    )
    model, meta = load_model(w[0])
    assert meta["model"]["architecture"] == "sfcn"
    ages = model.to_age(model(torch.zeros(2, 1, 32, 32, 32)))
    assert ((ages > 40) & (ages < 90)).all()
    assert pd.read_csv(t[0], sep="\t").val_mae.notna().all()
