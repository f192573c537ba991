import pytest
import torch

from agemapper.networks.models import SFCN, AgeMapper, build_model, count_parameters, loss_function


def test_full_size_agemapper_matches_the_paper():
    model = AgeMapper((160, 192, 160))
    assert count_parameters(model) == 1_313_345
    assert model.head[1].in_features == 9600  # 64 x 5 x 6 x 5


def test_fc_size_follows_the_grid():
    model = build_model({"architecture": "agemapper", "channels": [4, 8, 8, 8, 8]}, (40, 48, 40))
    model.eval()
    assert model(torch.zeros(2, 1, 40, 48, 40)).shape == (2,)
    assert model.head[1].in_features == 8  # 8 channels x 1 x 1 x 1


def test_too_small_grid_is_refused():
    with pytest.raises(ValueError, match="too small"):
        AgeMapper((16, 16, 16))


def test_output_starts_at_mean_age():
    model = AgeMapper((32, 32, 32), channels=(2, 2, 2, 2, 2))
    model.init_output(63.5)
    model.eval()
    with torch.no_grad():
        for m in model.head:
            if isinstance(m, torch.nn.Linear):
                m.weight.zero_()
        assert torch.allclose(model(torch.randn(2, 1, 32, 32, 32)), torch.tensor(63.5))


def test_sfcn_soft_labels_and_expected_age():
    model = SFCN((32, 32, 32), channels=(2, 2, 2, 2, 2, 4), bin_range=(40, 90))
    labels = model.soft_labels(torch.tensor([50.0, 70.3]), sigma=1.0)
    assert labels.shape == (2, 50)
    assert torch.allclose(labels.sum(1), torch.ones(2))
    expected = (labels * model.bin_centers).sum(1)
    assert torch.allclose(expected, torch.tensor([50.0, 70.3]), atol=0.02)
    model.eval()
    out = model(torch.randn(3, 1, 32, 32, 32))
    assert out.shape == (3, 50) and torch.allclose(out.exp().sum(1), torch.ones(3))
    loss = loss_function(model, "kl")(out, torch.tensor([50.0, 60.0, 70.0]))
    assert loss.item() > 0
    with pytest.raises(ValueError, match="kl"):
        loss_function(model, "mse")


def test_unknown_architecture():
    with pytest.raises(ValueError, match="unknown architecture"):
        build_model({"architecture": "resnet"}, (32, 32, 32))
