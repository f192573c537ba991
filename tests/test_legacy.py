import pytest
import torch

from agemapper.errors import InputDataError
from agemapper.networks.legacy import convert, load_original, main
from agemapper.networks.training import load_model


def _original_state_dict(prefix=""):
    """Parameter names and shapes of the release's AgeMapper (built here, not loaded)."""
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


@pytest.mark.parametrize("prefix", ["", "module."])
def test_original_release_weights_are_imported(tmp_path, prefix):
    state = _original_state_dict(prefix)
    path = tmp_path / "T1_nonlinear_male_1.pth.tar"
    torch.save({"state_dict": state, "epoch": 97}, path)
    model = load_original(path)
    ours = model.state_dict()
    assert torch.equal(
        ours["features.0.0.weight"], state[f"{prefix}Feature_Extractor.Convolution_0.0.weight"]
    )
    assert torch.equal(
        ours["features.4.1.running_var"],
        state[f"{prefix}Feature_Extractor.Convolution_4.1.running_var"],
    )
    linears = [k for k in ours if k.startswith("head.") and k.endswith(".weight")]
    assert ours[linears[0]].shape == (96, 9600) and ours[linears[-1]].shape == (1, 32)
    assert torch.equal(ours[linears[0]], state[f"{prefix}FullyConnected.FullyConnected_3.weight"])
    assert torch.equal(ours[linears[-1]], state[f"{prefix}FullyConnected.FullyConnected_1.weight"])


def test_converted_model_carries_its_input_contract(tmp_path):
    torch.save(_original_state_dict(), tmp_path / "orig.pth.tar")
    main(
        [
            str(tmp_path / "orig.pth.tar"),
            str(tmp_path / "m.safetensors"),
            "--contrast",
            "swi",
            "--contrasts-table",
            "config/contrasts.tsv",
            "--sex",
            "female",
        ]
    )
    model, meta = load_model(tmp_path / "m.safetensors")
    assert meta["input"]["contrast"] == "swi" and meta["input"]["shape"] == [160, 192, 160]
    assert meta["input"]["scale_factor"] == pytest.approx(76.58003036598346)


def test_foreign_parameters_are_refused(tmp_path):
    state = _original_state_dict()
    state["Classifier.Convolution_6.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "x.pth.tar")
    with pytest.raises(InputDataError, match="unexpected parameter"):
        load_original(tmp_path / "x.pth.tar")
    with pytest.raises(InputDataError):
        convert(tmp_path / "missing.pth.tar", tmp_path / "y.safetensors", {})
