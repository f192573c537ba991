import json

import numpy as np
import pandas as pd
import pytest
import torch

from agemapper.errors import InputDataError
from agemapper.networks.batches import augment
from agemapper.networks.serialization import load_tensors
from agemapper.networks.stopping import stuck_reason
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


# ----------------------------------------------------------------------------- replicates


def test_independent_replicates_read_the_data_once_each_in_their_own_order(tmp_path, caches):
    train, val, _ = caches
    seen = {}
    cfg = {**TRAINING, "epochs": 2}
    t = Trainer(train, val, MODEL, cfg, [1, 2, 3], ("T1", "f"), tmp_path / "k", device="cpu")
    reads = []
    batches = t.train.batches

    def counting(indices, grid=True):
        for index in indices:
            reads.append(len(index))
            yield from batches(iter([index]), grid)

    t.train.batches = counting
    step = t._step

    def record(rep, x, y):
        seen.setdefault((rep.index, rep.epoch), []).append(y.clone())
        step(rep, x, y)

    t._step = record
    t.run()
    ages = t.train.ages
    orders = {}
    for (index, epoch), ys in seen.items():
        got = torch.cat(ys)
        assert sorted(got.tolist()) == sorted(ages.tolist())  # every subject once an epoch
        orders[(index, epoch)] = got
    assert not torch.equal(orders[(1, 0)], orders[(2, 0)])  # own batch order
    assert not torch.equal(orders[(1, 0)], orders[(1, 1)])  # a new one every epoch
    assert max(reads) <= 3 * 4 and sum(reads) < 3 * 16 * 2  # the union of the batches, once
    shared = Trainer(train, val, MODEL, {**cfg, "batch_order": "shared"}, [1, 2], ("T1", "f"),
                     tmp_path / "s", device="cpu")  # fmt: skip
    shared._draw_orders(shared.reps, 16)
    assert torch.equal(shared.reps[0].perm, shared.reps[1].perm)


def test_stuck_replicates_restart_with_new_seeds_and_say_why(tmp_path, caches, caplog):
    train, val, contract = caches
    w, m, t = _outputs(tmp_path, n=1)
    cfg = {
        **TRAINING,
        "epochs": 3,
        "learning_rate": 0.0,  # never learns: predicts PyTorch's initial ~0 years
        "restart_stuck": {"after_epochs": 2, "max_restarts": 2},
    }
    with caplog.at_level("WARNING", logger="agemapper.networks.training"):
        trainer = train_replicates(
            train, val, MODEL, cfg, contract, ("T1", "f"), w, m, t, tmp_path / "k.safetensors",
            {"device": "cpu"},
        )  # fmt: skip
    metrics = pd.read_csv(t[0], sep="\t").fillna({"restarted": ""})
    assert list(metrics.attempt) == [1, 1, 2, 2, 3, 3, 3]
    assert list(metrics.epoch) == [1, 2, 1, 2, 1, 2, 3]
    restarted = metrics[metrics.restarted != ""]
    assert list(restarted.index) == [1, 3]
    assert restarted.restarted.str.startswith("flat: validation predictions vary by").all()
    meta = json.loads(m[0].read_text())
    result = meta["result"]
    assert [r["attempt"] for r in result["restarts"]] == [1, 2]
    assert len({r["seed"] for r in result["restarts"]} | {meta["seed"]}) == 3
    assert result["attempt"] == 3 and result["stuck"].startswith("flat")
    assert caplog.text.count("restarting it with seed") == 2
    assert caplog.text.count("has no restart left") == 1
    assert trainer.reps[0].attempt == 3


def test_stuck_means_flat_or_no_better_than_the_mean_age():
    cfg = {"after_epochs": 3, "spread_ratio": 0.05, "baseline_ratio": 1.0}
    row = {"epoch": 2, "val_mae": 5.0, "val_sd": 4.0}
    assert stuck_reason(2, row, 6.0, 8.0, cfg) is None  # too early to judge
    assert stuck_reason(3, row, 6.0, 8.0, cfg) is None
    assert stuck_reason(3, {**row, "val_sd": 0.3}, 6.0, 8.0, cfg).startswith("flat")
    assert stuck_reason(3, {**row, "val_sd": float("nan")}, 6.0, 8.0, cfg).startswith("flat")
    reason = stuck_reason(3, {**row, "val_mae": 6.0}, 6.0, 8.0, cfg)
    assert reason.startswith("no better than the mean age: validation MAE 6.00 y at epoch 2")
    assert stuck_reason(3, row, 6.0, 8.0, {**cfg, "baseline_ratio": 0.8}).startswith("no better")


def test_a_learning_replicate_is_never_restarted(tmp_path):
    train, contract = make_cache(tmp_path, "train", 48, seed=1)
    val, _ = make_cache(tmp_path, "val", 16, seed=2)
    w, m, t = _outputs(tmp_path, n=1)
    cfg = {**TRAINING, "epochs": 6, "learning_rate": 0.003, "output_bias": "mean_age",
           "restart_stuck": {"after_epochs": 3, "max_restarts": 2}}  # fmt: skip
    train_replicates(train, val, MODEL, cfg, contract, ("T1", "m"), w, m, t, tmp_path / "c",
                     {"device": "cpu"})  # fmt: skip
    metrics = pd.read_csv(t[0], sep="\t")
    assert (metrics.attempt == 1).all() and metrics.restarted.isna().all()
    assert json.loads(m[0].read_text())["result"]["stuck"] is None
    assert metrics.val_sd.iloc[-1] > 1.0


def test_resume_after_a_restart_gives_the_same_networks(tmp_path, caches):
    torch.use_deterministic_algorithms(True)
    train, val, _ = caches
    cfg = {**TRAINING, "epochs": 2, "restart_stuck": {"after_epochs": 1, "max_restarts": 1,
                                                      "baseline_ratio": 0.01}}  # fmt: skip

    def trainer(path):
        return Trainer(train, val, MODEL, cfg, [1, 2], ("T1", "f"), path, device="cpu", threads=1)

    straight = trainer(tmp_path / "a")
    straight.run()
    ckpt = tmp_path / "b"
    first = trainer(ckpt)
    calls = {"n": 0}
    original = first._train_batch

    def stop_in_round_two(batch, picks):  # after the restart at the end of epoch 1
        original(batch, picks)
        calls["n"] += 1
        if calls["n"] == 6:
            first._on_signal(15, None)

    first._train_batch = stop_in_round_two
    with pytest.raises(Interrupted):
        first.run()
    resumed = trainer(ckpt)
    assert resumed.try_resume() and [r.attempt for r in resumed.reps] == [2, 2]
    resumed.run()
    for a, b in zip(straight.reps, resumed.reps, strict=True):
        assert (a.attempt, a.seed) == (b.attempt, b.seed)
        for k, v in a.model.state_dict().items():
            assert torch.equal(v, b.model.state_dict()[k]), k
        timeless = [[{k: v for k, v in h.items() if k != "seconds"} for h in r.history]
                    for r in (a, b)]  # fmt: skip
        assert timeless[0] == timeless[1]


def test_fine_tuning_starts_from_the_given_networks(tmp_path, caches):
    train, val, contract = caches
    w, m, t = _outputs(tmp_path, n=2, tag="base")
    train_replicates(train, val, MODEL, {**TRAINING, "epochs": 1}, contract, ("T1", "f"), w, m,
                     t, tmp_path / "k1", {"device": "cpu"})  # fmt: skip
    w2, m2, t2 = _outputs(tmp_path, n=2, tag="tuned")
    cfg = {**TRAINING, "epochs": 1, "learning_rate": 0.0}
    tuned = {**MODEL, "dropout": [0.0, 0.2, 0.0]}  # another dropout layout takes the weights too
    train_replicates(train, val, tuned, cfg, contract, ("T1", "f"), w2, m2, t2, tmp_path / "k2",
                     {"device": "cpu"}, initial_weights=w)  # fmt: skip
    for base, new in zip(w, w2, strict=True):
        a, _ = load_tensors(base)
        b, _ = load_tensors(new)
        assert torch.equal(a["features.0.0.weight"], b["features.0.0.weight"])
        assert torch.equal(a["head.5.weight"], b["head.6.weight"])  # the output layer
    small, _ = make_cache(tmp_path, "small", 8, shape=(32, 32, 40), seed=3)
    with pytest.raises(InputDataError, match="cannot be fine-tuned on"):
        Trainer(small, small, MODEL, cfg, [1, 2], ("T1", "f"), tmp_path / "k3", device="cpu",
                initial_weights=w)  # fmt: skip


def test_float32_caches_train_and_keep_every_bit(tmp_path):
    from agemapper.images.cache import CacheWriter, VolumeCache
    from agemapper.networks.batches import BatchSource

    x = np.random.default_rng(0).standard_normal((3, 8, 8, 8)).astype(np.float32)
    x[:, :2] = 0
    for dtype, exact in (("float16", False), ("float32", True)):
        path = tmp_path / f"{dtype}.cache"
        with CacheWriter(path, 3, (8, 8, 8), dtype=dtype) as writer:
            for i in range(3):
                writer.write(i, x[i])
        cache = VolumeCache(path)
        assert cache.dtype == np.dtype(dtype)
        assert np.array_equal(cache[[0, 1, 2]], x) == exact
        np.testing.assert_allclose(cache[[0, 1, 2]], x, rtol=2**-11, atol=0)
        assert cache.dense_bytes == 512 * np.dtype(dtype).itemsize
    train, contract = make_cache(tmp_path, "t32", 8, seed=1)
    with CacheWriter(train, 8, (32, 32, 32), dtype="float32") as writer:  # same subjects
        for i, v in enumerate(np.random.default_rng(1).standard_normal((8, 32, 32, 32))):
            writer.write(i, v.astype(np.float32))
    source = BatchSource(train, torch.device("cpu"))
    assert source.preloaded.dtype == torch.float32


def test_a_non_finite_training_loss_stops_the_network_in_one_line(tmp_path, caches):
    """A learning rate far too high makes the loss overflow: the job stops, naming contrast,
    sex, replicate and epoch and the likely cause, and writes no network."""
    train, val, contract = caches
    w, m, t = _outputs(tmp_path, n=2)
    cfg = {**TRAINING, "learning_rate": 1e30, "optimizer": "adam"}
    with pytest.raises(InputDataError) as info:
        train_replicates(
            train, val, MODEL, cfg, contract, ("T1_nonlinear", "female"), w, m, t,
            tmp_path / "ckpt.safetensors", {"device": "cpu"},
        )  # fmt: skip
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("contrast T1_nonlinear, file ")
    assert "sex female, replicate 1: the training loss became" in message
    assert "in epoch 1" in message and "learning rate" in message
    assert not any(p.exists() for p in [*w, *m, *t])


def _fresh_weights(caches, tmp_path):
    torch.use_deterministic_algorithms(True)
    fresh = _trainer(caches, tmp_path / "fresh.safetensors", epochs=2)
    fresh.run()
    return _weights(fresh)


def _same(a, b):
    return all(torch.equal(x[k], y[k]) for x, y in zip(a, b, strict=True) for k in x)


@pytest.mark.parametrize(
    "damage", ["truncated", "not safetensors", "no fingerprint", "a part missing"]
)
def test_a_corrupt_checkpoint_is_set_aside_and_training_starts_afresh(
    tmp_path, caches, caplog, damage
):
    expected = _fresh_weights(caches, tmp_path)
    ckpt = tmp_path / "ckpt.safetensors"
    first = _trainer(caches, ckpt, epochs=1)
    first.run()  # a checkpoint after epoch 1 of 2
    data = ckpt.read_bytes()
    if damage == "truncated":
        ckpt.write_bytes(data[: len(data) // 2])
    elif damage == "not safetensors":
        ckpt.write_text("this is not a checkpoint\n")
    else:
        from agemapper.networks.serialization import save_tensors

        tensors, meta = load_tensors(ckpt)
        if damage == "no fingerprint":
            meta.pop("fingerprint")
        else:
            tensors.pop("rep2/order_rng")
        save_tensors(ckpt, tensors, meta)
    damaged = ckpt.read_bytes()
    again = _trainer(caches, ckpt, epochs=2)
    with caplog.at_level("WARNING", logger="agemapper.networks.training"):
        again.run()
    aside = list(tmp_path.glob("ckpt.safetensors.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == damaged  # kept, not deleted
    assert f"checkpoint {ckpt} cannot be resumed from" in caplog.text
    assert aside[0].name in caplog.text and "training starts afresh" in caplog.text
    assert [len(r.history) for r in again.reps] == [2, 2]
    assert _same(_weights(again), expected)  # from scratch, as if there had been no checkpoint


def test_a_finished_checkpoint_is_not_trained_again(tmp_path, caches, monkeypatch):
    ckpt = tmp_path / "ckpt.safetensors"
    done = _trainer(caches, ckpt, epochs=2)
    done.run()
    rerun = _trainer(caches, ckpt, epochs=2)

    def no_training(*args):
        raise AssertionError("a finished network was trained again")

    monkeypatch.setattr(rerun, "_train_batch", no_training)
    rerun.run()
    assert _same(_weights(rerun), _weights(done))
    assert [len(r.history) for r in rerun.reps] == [2, 2]
