import pytest

from agemapper.errors import ConfigError
from agemapper.networks.predict import check_contract, predict
from agemapper.networks.training import train_replicates
from conftest import make_cache

MODEL = {"architecture": "agemapper", "channels": [2, 4, 4, 4, 4], "fully_connected": [8]}
TRAINING = {"epochs": 1, "batch_size": 4, "learning_rate": 0.01, "loss": "mse"}


def test_predict_every_replicate_and_their_mean(tmp_path):
    train, contract = make_cache(tmp_path, "train", 8, seed=1)
    val, _ = make_cache(tmp_path, "val", 6, seed=2)
    test, _ = make_cache(tmp_path, "test", 5, seed=3)
    w = [tmp_path / f"r{i}.safetensors" for i in range(3)]
    m = [tmp_path / f"r{i}.json" for i in range(3)]
    t = [tmp_path / f"r{i}.tsv" for i in range(3)]
    train_replicates(
        train,
        val,
        MODEL,
        TRAINING,
        contract,
        ("T1", "f"),
        w,
        m,
        t,
        tmp_path / "k.safetensors",
        {"device": "cpu"},
    )
    table = predict(w, [val, test], [tmp_path / "val.json", tmp_path / "test.json"])
    assert len(table) == 11
    reps = table[["replicate_1", "replicate_2", "replicate_3"]]
    assert (table.predicted - reps.mean(axis=1)).abs().max() < 1e-9
    assert reps.std(axis=1).min() > 0  # three different networks


def test_contract_mismatch_is_refused():
    meta = {"input": {"contrast": "swi", "scale_factor": 76.58, "shape": [40, 48, 40]}}
    info = {"contrast": {"contrast": "swi", "scale_factor": 76.58}, "shape": [40, 48, 40]}
    check_contract(meta, info, "w")
    with pytest.raises(ConfigError, match="contrast: model 'swi' vs data 'T1_linear'"):
        check_contract(meta, {**info, "contrast": {"contrast": "T1_linear"}}, "w")
    with pytest.raises(ConfigError, match="shape"):
        check_contract(meta, {**info, "shape": [160, 192, 160]}, "w")


def test_a_network_trained_on_another_grid_or_affine_is_refused():
    from agemapper.images.grids import GRIDS

    grid = GRIDS["1mm"]
    source_grid = {"name": "1mm", "shape": list(grid.shape), "crop": [list(c) for c in grid.crop]}
    meta = {"input": {"contrast": "swi", "resolution": "1mm", "source_grid": source_grid,
                      "affine": [list(r) for r in grid.affine], "shape": [40, 48, 40]}}  # fmt: skip
    info = {"contrast": {"contrast": "swi", "resolution": "1mm"}, "shape": [40, 48, 40],
            "source_grid": {"name": "1mm", "shape": grid.shape, "crop": grid.crop}}  # fmt: skip
    check_contract(meta, info, "w")  # tuples in the sidecar, lists in the metadata: the same
    meta["input"]["affine"][0][3] = 91.0  # trained on images with another origin
    with pytest.raises(ConfigError, match="affine: model"):
        check_contract(meta, info, "w")


def test_non_finite_predictions_stop_naming_the_network(tmp_path, monkeypatch):
    import numpy as np

    from agemapper.errors import InputDataError
    from agemapper.networks import predict as P

    train, contract = make_cache(tmp_path, "train", 8, seed=1)
    val, _ = make_cache(tmp_path, "val", 6, seed=2)
    w = [tmp_path / f"r{i}.safetensors" for i in range(2)]
    out = [[tmp_path / f"r{i}.{e}" for i in range(2)] for e in ("json", "tsv")]
    train_replicates(train, val, MODEL, TRAINING, contract, ("T1", "f"), w, *out,
                     tmp_path / "k.safetensors", {"device": "cpu"})  # fmt: skip
    real = P.predict_cache

    def diverged(*args, **kwargs):  # replicate 2 as a diverged network predicts
        ages = real(*args, **kwargs)
        ages[2:, 1] = np.nan
        return ages

    monkeypatch.setattr(P, "predict_cache", diverged)
    with pytest.raises(InputDataError, match=r"replicate 2 predicted nan for 4 subject") as info:
        predict(w, [val], [tmp_path / "val.json"])
    assert str(w[1]) in str(info.value)
