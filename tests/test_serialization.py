import pickle

import pytest
import torch

from agemapper.errors import InputDataError
from agemapper.networks.serialization import (
    flatten_state,
    load_tensors,
    load_torch_weights,
    save_tensors,
    unflatten_state,
)
from agemapper.seeds import derive_seed


def test_safetensors_round_trip_with_metadata(tmp_path):
    save_tensors(tmp_path / "w.safetensors", {"a": torch.arange(3.0)}, {"k": [1, 2], "s": "x"})
    tensors, meta = load_tensors(tmp_path / "w.safetensors")
    assert torch.equal(tensors["a"], torch.arange(3.0)) and meta == {"k": [1, 2], "s": "x"}


def test_optimizer_state_survives_flattening():
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    tensors, meta = {}, {}
    flatten_state("opt", opt.state_dict(), tensors, meta)
    back = unflatten_state("opt", tensors, meta)
    opt2 = torch.optim.Adam(model.parameters())
    opt2.load_state_dict(back)
    for a, b in zip(
        opt.state_dict()["state"].values(), opt2.state_dict()["state"].values(), strict=True
    ):
        assert all(torch.equal(a[k], b[k]) for k in a)


class Boom:
    def __reduce__(self):
        import os

        return (os.system, ("touch PWNED",))


def test_malicious_pickle_is_refused_without_running(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pth.tar"
    with open(path, "wb") as fh:
        pickle.dump({"state_dict": Boom()}, fh)
    with pytest.raises(InputDataError, match="refused"):
        load_torch_weights(path)
    assert not (tmp_path / "PWNED").exists()


def test_plain_state_dict_is_accepted(tmp_path):
    path = tmp_path / "ok.pth.tar"
    torch.save({"state_dict": {"w": torch.ones(2)}}, path)
    assert torch.equal(load_torch_weights(path)["w"], torch.ones(2))


def test_not_a_safetensors_file(tmp_path):
    (tmp_path / "x.safetensors").write_bytes(b"garbage")
    with pytest.raises(InputDataError, match="safetensors"):
        load_tensors(tmp_path / "x.safetensors")


def test_seeds_come_from_entities():
    assert derive_seed(0, "T1", "male", 1) == derive_seed(0, "T1", "male", 1)
    assert len({derive_seed(0, "T1", "male", r) for r in (1, 2, 3)}) == 3


def _model_file(tmp_path, tensors=None, meta=None):
    from agemapper.networks.models import build_model

    spec = {"architecture": "agemapper", "channels": [2, 2, 2, 2, 2], "fully_connected": [4]}
    model = build_model(spec, [32, 32, 32])
    contract = {"contrast": "swi", "resolution": "1mm", "data_file": "SWI/x.nii.gz",
                "normalise": "none", "scale_factor": 76.58, "shape": [32, 32, 32]}  # fmt: skip
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state.update(tensors or {})
    base = {"format": "agemapper-model/1", "model": spec, "input": contract}
    path = tmp_path / "model.safetensors"
    save_tensors(path, state, {**base, **(meta or {})})
    return path, state


@pytest.mark.parametrize("dtype", [torch.float16, torch.int32], ids=["float16", "int32"])
def test_weights_of_another_type_are_refused(tmp_path, dtype):
    from agemapper.networks.training import load_model

    _, state = _model_file(tmp_path)
    name = "features.0.0.weight"
    path, _ = _model_file(tmp_path, {name: state[name].to(dtype)})
    with pytest.raises(InputDataError, match=rf"tensor {name} is {str(dtype)[6:]}, float32"):
        load_model(path)


def test_a_model_without_its_input_contract_is_refused(tmp_path):
    from agemapper.networks.training import load_model

    path, _ = _model_file(tmp_path, meta={"input": {"shape": [32, 32, 32]}})
    with pytest.raises(InputDataError, match="without its input contract"):
        load_model(path)


def test_a_tensor_of_the_wrong_shape_is_one_line_naming_the_file(tmp_path):
    from agemapper.networks.training import load_model

    path, _ = _model_file(tmp_path, {"features.0.0.weight": torch.zeros(3, 1, 3, 3, 3)})
    with pytest.raises(InputDataError, match="does not fit the network its metadata") as info:
        load_model(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
