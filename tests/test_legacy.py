"""Networks of the original AgeMapper code (and Peng et al.'s SFCN): every file format it
writes, imported without running pickled code, with predictions identical to its own network.

Files are written the way the original writes them, with its own network class
(tests/original/AgeMapper.py, vendored as a fixture, imported as the module ``AgeMapper`` as
its run.py does) and its save calls: ``torch.save(model.state_dict())`` (the solver's final
network), the solver's checkpoint dict (optimiser and ReduceLROnPlateau state, NumPy float64
losses), ``torch.save(model)`` (what its ``use_pre_trained`` loads), DataParallel variants.
The original's flattened size is hard-coded for the 160x192x160 crop, so the networks here
are that grid with 2 channels a block (fast on a CPU).
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import stat
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from agemapper.errors import InputDataError
from agemapper.images.grids import FULL_TRAINING_SHAPE
from agemapper.networks import legacy, pretrained
from agemapper.networks.foreign import read_foreign
from agemapper.networks.legacy import convert, load_original
from agemapper.networks.models import SFCN, AgeMapper
from agemapper.networks.serialization import load_tensors, save_tensors
from agemapper.networks.training import load_model
from conftest import REPO

sys.path.insert(0, str(Path(__file__).parent / "original"))
import AgeMapper as original  # noqa: E402  (the original's module, by its own name)

CHANNELS = [2, 2, 2, 2, 2]


def _original_state_dict(prefix=""):
    """Parameter names and shapes of the release's AgeMapper at full width (built here)."""
    g = torch.Generator().manual_seed(0)
    state, c_in = {}, 1
    for i, c in enumerate((32, 64, 64, 64, 64)):
        p = f"{prefix}Feature_Extractor.Convolution_{i}"
        state[f"{p}.0.weight"] = torch.randn(c, c_in, 3, 3, 3, generator=g)
        state[f"{p}.1.weight"] = torch.rand(c, generator=g)
        state[f"{p}.1.bias"] = torch.randn(c, generator=g)
        state[f"{p}.1.running_mean"] = torch.randn(c, generator=g)
        state[f"{p}.1.running_var"] = torch.rand(c, generator=g) + 0.5
        state[f"{p}.1.num_batches_tracked"] = torch.tensor(1234)
        c_in = c
    for name, (o, i) in {"3": (96, 9600), "2": (32, 96), "1": (1, 32)}.items():
        state[f"{prefix}FullyConnected.FullyConnected_{name}.weight"] = torch.randn(
            o, i, generator=g
        )
        state[f"{prefix}FullyConnected.FullyConnected_{name}.bias"] = torch.randn(o, generator=g)
    return state


def original_network(resolution="1mm", seed=0, channels=CHANNELS):
    """The original's AgeMapper (its own class), with non-trivial batch-norm statistics."""
    torch.manual_seed(seed)
    model = original.AgeMapper(resolution=resolution, channel_number=list(channels))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm3d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model.eval()


def solver_checkpoint(model, path, epoch=7):
    """What the original's Solver.save_checkpoint writes after an epoch: the state dict,
    Adam's and ReduceLROnPlateau's state, and losses as NumPy float64 scalars."""
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3, betas=(0.9, 0.999), eps=1e-8)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, factor=0.5, patience=15, threshold=1e-7, threshold_mode="abs", min_lr=1e-6
    )
    params = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer.zero_grad()
    sum(p.sum() for p in model.parameters()).backward()
    optimizer.step()
    losses = [12.5, 11.0]
    scheduler.step(np.mean(losses))
    model.load_state_dict(params)  # the weights the test compares against
    torch.save(
        {
            "epoch": epoch + 1,
            "start_iteration": 1234,
            "arch": "AA1-1",
            "state_dict": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "best_score_early_stop": -np.mean(losses),
            "counter_early_stop": 0,
            "previous_loss": np.mean(losses),
            "previous_age_deltas": np.mean([3.5, 3.25]),
            "early_stop": False,
            "valid_epoch": epoch,
        },
        path,
    )
    assert isinstance(np.mean(losses), np.float64)


@pytest.fixture(scope="module")
def volume():
    return torch.randn(1, 1, *FULL_TRAINING_SHAPE, generator=torch.Generator().manual_seed(1))


def _same_predictions(ours: nn.Module, theirs: nn.Module, x, x_theirs=None):
    with torch.no_grad():
        expected = theirs(x if x_theirs is None else x_theirs)
        got = ours(x)
    if isinstance(theirs, original.AgeMapper):
        expected = expected[:, 0]
    assert torch.equal(got, expected), (got, expected)


# ----------------------------------------------------------------------------- formats


def test_the_solvers_final_state_dict_predicts_as_the_original(tmp_path, volume):
    model = original_network()
    torch.save(model.state_dict(), tmp_path / "AA1-1.pth.tar")  # Solver: final network
    found = read_foreign(tmp_path / "AA1-1.pth.tar")
    assert found.format == "state_dict"
    _same_predictions(load_original(tmp_path / "AA1-1.pth.tar"), model, volume)


def test_a_dataparallel_state_dict_in_the_legacy_format(tmp_path, volume):
    model = original_network(seed=2)
    state = nn.DataParallel(model).state_dict()
    assert all(k.startswith("module.") for k in state)
    torch.save(state, tmp_path / "m.pth.tar", _use_new_zipfile_serialization=False)
    assert not zipfile.is_zipfile(tmp_path / "m.pth.tar")
    _same_predictions(load_original(tmp_path / "m.pth.tar"), model, volume)


def test_a_training_checkpoint_with_numpy_scalars_imports(tmp_path, volume):
    model = original_network(seed=3)
    path = tmp_path / "best_checkpoint.path.tar"
    solver_checkpoint(model, path)
    with pytest.raises(Exception, match="numpy"):  # what plain weights_only refuses
        torch.load(path, weights_only=True)
    found = read_foreign(path)
    assert found.format == "checkpoint"
    assert found.details["epoch"] == 8 and found.details["valid_epoch"] == 7
    assert found.details["previous_loss"] == pytest.approx(11.75)
    _same_predictions(load_original(path), model, volume)


def _as_numpy1(path: Path) -> None:
    """Rewrite a checkpoint as NumPy 1 pickles it (``numpy.core``, not ``numpy._core``)."""
    with zipfile.ZipFile(path) as zin:
        items = [(i, zin.read(i.filename)) for i in zin.infolist()]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zout:
        for info, data in items:
            if info.filename.endswith("data.pkl"):
                assert b"numpy._core.multiarray" in data
                data = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
            zout.writestr(info, data)


def test_a_checkpoint_written_under_numpy_1_imports(tmp_path, volume):
    model = original_network(seed=4)
    path = tmp_path / "checkpoint_epoch_7.path.tar"
    solver_checkpoint(model, path)
    _as_numpy1(path)
    assert read_foreign(path).details["previous_loss"] == pytest.approx(11.75)
    _same_predictions(load_original(path), model, volume)


@pytest.mark.parametrize("parallel", [False, True], ids=["model", "dataparallel"])
def test_a_whole_model_pickle_is_rebuilt_from_tensors_only(tmp_path, volume, parallel):
    model = original_network(seed=5)
    torch.save(nn.DataParallel(model) if parallel else model, tmp_path / "whole.pth.tar")
    found = read_foreign(tmp_path / "whole.pth.tar")
    assert found.format == "whole_model" and "AgeMapper.AgeMapper" in found.details["classes"]
    _same_predictions(load_original(tmp_path / "whole.pth.tar"), model, volume)


def test_a_whole_model_pickle_never_imports_its_module(tmp_path, monkeypatch):
    """The pickle names a class of a module that would leave a mark when imported."""
    (tmp_path / "netcode_marker.py").write_text(
        "import pathlib\npathlib.Path('IMPORTED').write_text('x')\n"
        "import torch\nclass Net(torch.nn.Module):\n"
        "    def __init__(self):\n        super().__init__()\n"
        "        self.FullyConnected = torch.nn.Sequential()\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    import netcode_marker

    net = netcode_marker.Net()
    torch.save(net, tmp_path / "net.pth")
    (tmp_path / "IMPORTED").unlink()
    del sys.modules["netcode_marker"]
    with pytest.raises(InputDataError, match="no tensors"):
        read_foreign(tmp_path / "net.pth")
    assert not (tmp_path / "IMPORTED").exists() and "netcode_marker" not in sys.modules


class _System:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


class _Popen:
    def __reduce__(self):
        import subprocess

        return (subprocess.Popen, (["touch", "PWNED"],))


class _Eval:
    def __reduce__(self):
        return (eval, ("__import__('os').system('touch PWNED')",))


@pytest.mark.parametrize("payload", [_System, _Popen, _Eval], ids=["os.system", "Popen", "eval"])
@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_a_malicious_pickle_is_refused_and_never_runs(tmp_path, monkeypatch, payload, writer):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pth.tar"
    obj = {"state_dict": {"w": torch.ones(1)}, "epoch": payload()}
    if writer == "torch.save":
        torch.save(obj, path)
    else:
        with open(path, "wb") as fh:
            pickle.dump(obj, fh)
    with pytest.raises(InputDataError, match="refused") as info:
        load_original(path)
    assert "nothing of it was run" in str(info.value) or "not a plain tensor file" in str(
        info.value
    )
    assert not (tmp_path / "PWNED").exists()


def test_a_torchscript_archive_is_refused_with_the_way_to_convert_it(tmp_path):
    torch.jit.save(torch.jit.script(nn.Linear(2, 1)), tmp_path / "scripted.pt")
    with pytest.raises(InputDataError, match="TorchScript.*weights_only=False"):
        read_foreign(tmp_path / "scripted.pt")


def test_the_2mm_network_upsamples_as_the_original_does(tmp_path):
    from agemapper.images.cache import to_grid

    model = original_network("2mm", seed=6)
    torch.save(model.state_dict(), tmp_path / "vbm.pth.tar")
    x2 = torch.randn(2, 1, 80, 96, 80, generator=torch.Generator().manual_seed(2))
    ours = load_original(tmp_path / "vbm.pth.tar")
    with torch.no_grad():  # our cache keeps 2 mm and upsamples on the device, before the network
        assert torch.allclose(ours(to_grid(x2, FULL_TRAINING_SHAPE)), model(x2)[:, 0], atol=1e-6)


# ----------------------------------------------------------------------------- SFCN


class PengSFCN(nn.Module):
    """Peng et al.'s SFCN layout (module names of their release, written for this test):
    ``feature_extractor.conv_i`` blocks, ``classifier`` average pool, dropout, ``conv_6``."""

    def __init__(self, channels=(2, 2, 2, 2, 2, 2), bins=40):
        super().__init__()
        self.feature_extractor = nn.Sequential()
        c_in = 1
        for i, c in enumerate(channels):
            last = i == len(channels) - 1
            layers = (
                [nn.Conv3d(c_in, c, 1 if last else 3, padding=0 if last else 1), nn.BatchNorm3d(c)]
                + ([] if last else [nn.MaxPool3d(2, 2)])
                + [nn.ReLU()]
            )
            self.feature_extractor.add_module(f"conv_{i}", nn.Sequential(*layers))
            c_in = c
        self.classifier = nn.Sequential()
        self.classifier.add_module("average_pool", nn.AvgPool3d([5, 6, 5]))
        self.classifier.add_module("dropout", nn.Dropout(0.5))
        self.classifier.add_module(f"conv_{len(channels)}", nn.Conv3d(c_in, bins, 1))

    def forward(self, x):
        return [F.log_softmax(self.classifier(self.feature_extractor(x)), dim=1)]


def _randomise_batchnorm(model):
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm3d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def test_pengs_sfcn_weights_import(tmp_path, volume):
    torch.manual_seed(7)
    peng = _randomise_batchnorm(PengSFCN())
    path = tmp_path / "run_20190719_00_epoch_best_mae.p"  # their release: DataParallel, 2019
    torch.save(nn.DataParallel(peng).state_dict(), path, _use_new_zipfile_serialization=False)
    imported = legacy.rebuild(read_foreign(path))
    ours = imported.model
    assert isinstance(ours, SFCN) and imported.naming == "sfcn-peng" and imported.notes
    with torch.no_grad():
        theirs = peng(volume)[0].reshape(len(volume), -1)
        assert torch.allclose(ours(volume), theirs, atol=1e-6)
        centres = torch.arange(42, 82, dtype=torch.float32) + 0.5  # their bin centres
        expected_age = (theirs.exp() * centres).sum(1)
        assert torch.allclose(ours.to_age(ours(volume)), expected_age, atol=1e-4)


def test_pengs_sfcn_imports_as_a_network_with_its_preprocessing_noted(tmp_path, caplog):
    torch.manual_seed(9)
    path = tmp_path / "run_20190719_00_epoch_best_mae.p"
    torch.save(nn.DataParallel(PengSFCN()).state_dict(), path)
    out = tmp_path / "networks/T1_linear/male/replicate-1/model.safetensors"
    row = pretrained.import_network(path, out, "T1_linear", "male", 1)
    assert (row["format"], row["naming"]) == ("state_dict", "sfcn-peng")
    model, meta = load_model(out)
    assert isinstance(model, SFCN) and meta["model"]["bin_range"] == [42.0, 82.0]
    assert meta["input"]["contrast"] == "T1_linear" and "whole-volume mean" in caplog.text
    assert "whole-volume mean" in meta["source"]["notes"][0]


def test_the_originals_sfcn_imports_with_zero_convolution_bias(tmp_path, volume):
    torch.manual_seed(8)
    theirs = _randomise_batchnorm(original.SFCN(channel_number=[2, 2, 2, 2, 2, 2]))
    torch.save(theirs.state_dict(), tmp_path / "sfcn.pth.tar")
    imported = legacy.rebuild(read_foreign(tmp_path / "sfcn.pth.tar"))
    assert imported.naming == "sfcn-original"
    with torch.no_grad():
        assert torch.allclose(
            imported.model(volume), theirs(volume).reshape(len(volume), -1), atol=1e-6
        )


# ----------------------------------------------------------------------------- conversion


def test_converted_model_carries_its_input_contract(tmp_path):
    torch.save(_original_state_dict(), tmp_path / "orig.pth.tar")
    from agemapper.images.contrasts import read_contrasts

    contract = read_contrasts(REPO / "config/contrasts.tsv")["swi"].as_dict()
    convert(tmp_path / "orig.pth.tar", tmp_path / "m.safetensors", contract, "female")
    model, meta = load_model(tmp_path / "m.safetensors")
    assert meta["input"]["contrast"] == "swi" and meta["input"]["shape"] == [160, 192, 160]
    assert meta["input"]["scale_factor"] == pytest.approx(76.58003036598346)
    assert meta["input"]["affine"][0] == [-1.0, 0, 0, 90.0] and "intensity" not in meta["input"]
    assert meta["model"]["channels"] == [32, 64, 64, 64, 64]
    assert meta["source"]["format"] == "state_dict"
    assert (
        meta["source"]["sha256"]
        == hashlib.sha256((tmp_path / "orig.pth.tar").read_bytes()).hexdigest()
    )


def test_foreign_parameters_are_refused(tmp_path):
    state = _original_state_dict()
    state["Classifier.Convolution_6.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "x.pth.tar")
    with pytest.raises(InputDataError, match="unexpected parameter"):
        load_original(tmp_path / "x.pth.tar")
    with pytest.raises(InputDataError):
        convert(tmp_path / "missing.pth.tar", tmp_path / "y.safetensors", {})
    torch.save({"w": torch.zeros(2)}, tmp_path / "z.pth.tar")
    with pytest.raises(InputDataError, match="no known network"):
        load_original(tmp_path / "z.pth.tar")


# ----------------------------------------------------------------------------- release folders


def _age_like(model):
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv3d, nn.Linear)):
                m.weight.abs_()
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, nn.BatchNorm3d):
                m.reset_parameters()
                m.running_mean.zero_()
                m.running_var.fill_(1.0)
        last = model.FullyConnected.FullyConnected_1
        last.weight.mul_(-1e-3)
        last.bias.fill_(88.0)
    return model


def write_release(
    folder: Path,
    contrasts=("T1_nonlinear", "swi"),
    sexes=("female", "male"),
    replicates=(1, 2),
    ages=False,
) -> dict:
    """A release folder as the original's runs leave it, every file format once or more:
    saved_models/NAME.pth.tar (final state dicts), experiments/NAME/best_checkpoint/
    best_checkpoint.path.tar (+ per-epoch checkpoints; an early-stopped run's only weights),
    and whole-model pickles. Returns the original networks by (contrast, sex, replicate).

    ``ages``: outputs that vary with the image (an untrained network's barely do: its
    random batch-norm statistics silence its 2 channels), so that a bias correction fitted
    on them is not degenerate: non-negative weights, identity batch norms, a negative last
    layer (larger brains, younger), around 60 years for the rehearsal's T1."""
    networks, k = {}, 0
    for contrast in contrasts:
        for sex in sexes:
            for replicate in replicates:
                model = original_network(seed=100 + k)
                if ages:
                    _age_like(model)
                name = f"{contrast}_{sex}_{replicate}"
                kind = k % 3
                if kind == 0:
                    path = folder / "saved_models" / f"{name}.pth.tar"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    torch.save(model.state_dict(), path)
                elif kind == 1:
                    run = folder / "experiments" / name
                    (run / "best_checkpoint").mkdir(parents=True)
                    (run / "checkpoints").mkdir()
                    solver_checkpoint(model, run / "best_checkpoint" / "best_checkpoint.path.tar")
                    for epoch in (6, 7):
                        solver_checkpoint(
                            original_network(seed=900 + epoch),
                            run / "checkpoints" / f"checkpoint_epoch_{epoch}.path.tar",
                        )
                else:
                    path = folder / "whole_models" / f"{name}.pth"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    torch.save(model, path)
                networks[(contrast, sex, replicate)] = model
                k += 1
    return networks


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    folder = tmp_path_factory.mktemp("release")
    return folder, write_release(folder)


def test_a_release_folder_is_imported_by_its_names_with_manifests(tmp_path, release, volume):
    folder, originals = release
    networks = tmp_path / "networks"
    table = pretrained.import_release(folder, networks)
    assert len(table) == len(originals) and set(table.status) == {"imported"}
    assert set(table.format) == {"state_dict", "checkpoint", "whole_model"}
    summary = pd.read_csv(networks / "manifest.tsv", sep="\t")
    assert len(summary) == len(originals)
    for (contrast, sex, replicate), model in originals.items():
        weights = networks / contrast / sex / f"replicate-{replicate}" / "model.safetensors"
        manifest = pd.read_json(weights.parent / "manifest.json", typ="series")
        assert (manifest.contrast, manifest.sex, manifest.replicate) == (contrast, sex, replicate)
        source = Path(manifest.source["file"])
        assert manifest.source["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
        assert manifest.source["format"] in ("state_dict", "checkpoint", "whole_model")
        assert "checkpoint_epoch" not in source.name  # the best checkpoint, not an epoch's
        assert not weights.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
        ours, meta = load_model(weights)
        assert meta["input"]["contrast"] == contrast and meta["source"]["sex"] == sex
        if replicate == 1 and sex == "female":
            _same_predictions(ours, model, volume)
    # again: nothing changes; a network from another file is never replaced
    again = pretrained.import_release(folder, networks)
    assert set(again.status) == {"unchanged"}
    other = tmp_path / "other"
    (other / "saved_models").mkdir(parents=True)
    torch.save(
        original_network(seed=55).state_dict(), other / "saved_models" / "swi_male_2.pth.tar"
    )
    with pytest.raises(InputDataError, match="never replaced"):
        pretrained.import_release(other, networks)


def test_release_names_that_cannot_be_read_are_errors(tmp_path):
    (tmp_path / "r").mkdir()
    torch.save(original_network().state_dict(), tmp_path / "r" / "T3_female_1.pth.tar")
    with pytest.raises(InputDataError, match=r"not named by the release's names.*--names"):
        pretrained.import_release(tmp_path / "r", tmp_path / "n")
    names = tmp_path / "names.tsv"
    names.write_text("file\tcontrast\tsex\treplicate\nT3_female_1.pth.tar\tswi\tfemale\t3\n")
    table = pretrained.import_release(tmp_path / "r", tmp_path / "n", names=names)
    assert table.model.tolist() == [str(tmp_path / "n/swi/female/replicate-3/model.safetensors")]
    run = tmp_path / "only_epochs" / "experiments" / "tracts_male_1" / "checkpoints"
    run.mkdir(parents=True)
    solver_checkpoint(original_network(), run / "checkpoint_epoch_3.path.tar")
    with pytest.raises(InputDataError, match="only per-epoch checkpoints"):
        pretrained.import_release(tmp_path / "only_epochs", tmp_path / "n2")


@pytest.mark.parametrize(
    "name, expected",
    [
        ("T1_nonlinear_female_1.pth.tar", ("T1_nonlinear", "female", 1)),
        ("rsfmri_13_male_3.pth.tar", ("rsfmri_13", "male", 3)),
        ("rsfmri_1_male_3.pth", ("rsfmri_1", "male", 3)),
        ("male_tfmri_c_5_2.pth.tar", ("tfmri_c_5", "male", 2)),
        (
            "experiments/tbss_FA_s_female_2/best_checkpoint/best_checkpoint.path.tar",
            ("tbss_FA_s", "female", 2),
        ),
        ("T1_nonlinear_female.pth.tar", None),
    ],
)
def test_release_names(name, expected):
    from agemapper.images.contrasts import read_contrasts

    contrasts = list(read_contrasts(REPO / "config/contrasts.tsv"))
    assert pretrained.parse_release_name(Path(name), contrasts) == expected


# ----------------------------------------------------------------------------- export


def _our_network(folder: Path, spec: dict, shape, seed=0) -> Path:
    """A network as our trainer writes it (weights + metadata with its input statistics)."""
    from agemapper.networks.models import build_model

    torch.manual_seed(seed)
    model = _randomise_batchnorm(build_model(spec, shape))
    meta = {
        "format": "agemapper-model/1",
        "replicate": 1,
        "model": spec,
        "input": {
            "contrast": "tbss_FA_s",
            "modality": "diffusion",
            "resolution": "1mm",
            "data_file": "x.nii.gz",
            "volume": None,
            "normalise": "none",
            "scale_factor": 1.0,
            "shape": list(shape),
            "intensity": {"median_abs": {"median_log": -1.0, "spread_log": 0.1, "n": 9}},
        },
        "training": {"epochs": 3},
    }
    path = folder / "tbss_FA_s" / "male" / "replicate-1" / "model.safetensors"
    save_tensors(path, model.state_dict(), meta)
    return path


@pytest.mark.parametrize(
    "spec, shape",
    [
        (
            {"architecture": "agemapper", "channels": [4, 8, 8, 8, 8], "fully_connected": [96, 32]},
            (32, 40, 32),
        ),
        (
            {
                "architecture": "agemapper",
                "channels": CHANNELS,
                "fully_connected": [96, 32],
                "dropout": 0.2,
            },
            FULL_TRAINING_SHAPE,
        ),
        ({"architecture": "sfcn", "channels": [2, 2, 2, 2, 2, 2]}, FULL_TRAINING_SHAPE),
    ],
    ids=["demo-grid", "full-grid", "sfcn"],
)
def test_export_then_import_gives_identical_predictions(tmp_path, spec, shape):
    weights = _our_network(tmp_path / "models", spec, shape)
    table = pretrained.export_networks(tmp_path / "models", tmp_path / "release")
    exported = Path(table.file[0])
    assert exported.name == "tbss_FA_s_male_1.pth.tar"
    assert bool(table.original_code_loads_it[0]) == (tuple(shape) == FULL_TRAINING_SHAPE)
    pretrained.import_release(tmp_path / "release", tmp_path / "networks")
    back = tmp_path / "networks/tbss_FA_s/male/replicate-1/model.safetensors"
    (ours, meta), (again, meta2) = load_model(weights), load_model(back)
    x = torch.randn(3, 1, *shape, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.equal(ours(x), again(x))
    assert meta2["input"]["intensity"] == meta["input"]["intensity"]
    assert meta2["input"]["shape"] == list(shape) and meta2["model"] == meta["model"]
    for name, tensor in load_tensors(weights)[0].items():
        assert torch.equal(tensor, load_tensors(back)[0][name]), name


def test_the_original_code_loads_an_export(tmp_path, volume):
    """What the original's evaluation does: AgeMapper(resolution) + load_state_dict."""
    spec = {"architecture": "agemapper", "channels": CHANNELS, "fully_connected": [96, 32]}
    weights = _our_network(tmp_path / "models", spec, FULL_TRAINING_SHAPE)
    table = pretrained.export_networks(tmp_path / "models", tmp_path / "release")
    theirs = original.AgeMapper(resolution="1mm", channel_number=CHANNELS)
    theirs.load_state_dict(torch.load(table.file[0]))  # as their code loads it
    _same_predictions(load_model(weights)[0], theirs.eval(), volume)
    sfcn = _our_network(
        tmp_path / "sfcn", {"architecture": "sfcn", "channels": [2] * 6}, FULL_TRAINING_SHAPE
    )
    table = pretrained.export_networks(tmp_path / "sfcn", tmp_path / "peng")
    peng = PengSFCN()
    peng.load_state_dict(torch.load(table.file[0]))  # Peng et al.'s names
    with torch.no_grad():
        expected = peng.eval()(volume)[0].reshape(len(volume), -1)
        assert torch.allclose(load_model(sfcn)[0](volume), expected, atol=1e-6)


def test_an_export_of_ours_is_a_plain_state_dict(tmp_path):
    spec = {"architecture": "agemapper", "channels": CHANNELS, "fully_connected": [96, 32]}
    _our_network(tmp_path / "models", spec, FULL_TRAINING_SHAPE)
    table = pretrained.export_networks(tmp_path / "models", tmp_path / "release")
    data = Path(table.file[0]).read_bytes()
    with zipfile.ZipFile(io.BytesIO(data)) as archive:  # torch.save's zip of one pickle
        assert any(n.endswith("data.pkl") for n in archive.namelist())
    assert set(torch.load(io.BytesIO(data), weights_only=True)) == set(
        legacy.original_state_dict(AgeMapper(FULL_TRAINING_SHAPE, CHANNELS))[0]
    )
