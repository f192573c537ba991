"""The first convolution as one GEMM over shifted copies equals nn.Conv3d."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

from agemapper.networks import kernels
from agemapper.networks.models import build_model
from conftest import train_tiny


@pytest.mark.parametrize("budget", [1 << 28, 2000], ids=["one-slab", "many-slabs"])
def test_shifted_conv_equals_conv3d_forward_and_gradients(monkeypatch, budget):
    chunks = kernels._chunks
    monkeypatch.setattr(kernels, "_chunks", lambda d, per: chunks(d, per, budget))
    torch.manual_seed(0)
    conv = nn.Conv3d(1, 8, 3, padding=1, bias=False)
    shifted = copy.deepcopy(conv)
    assert kernels.use_shifted_first_conv(shifted)
    assert type(shifted) is kernels.ShiftedConv3d
    x = torch.randn(3, 1, 12, 10, 14, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    a, b = conv(x), shifted(x2)
    assert b.shape == a.shape and b.is_contiguous()  # NCDHW on the CPU (channels-last on CUDA)
    torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
    grad = torch.randn_like(a)
    a.backward(grad)
    b.backward(grad)
    torch.testing.assert_close(shifted.weight.grad, conv.weight.grad, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(x2.grad, x.grad)


def test_shifted_conv_under_bf16_autocast():
    torch.manual_seed(1)
    conv = nn.Conv3d(1, 4, 3, padding=1, bias=False)
    shifted = copy.deepcopy(conv)
    kernels.use_shifted_first_conv(shifted)
    x = torch.randn(2, 1, 8, 8, 8)
    with torch.autocast("cpu", torch.bfloat16):
        out = shifted(x)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), conv(x), rtol=0.05, atol=0.05)
    out.float().sum().backward()
    assert shifted.weight.grad.dtype == torch.float32 and torch.isfinite(shifted.weight.grad).all()


def test_agemapper_keeps_its_weights_and_outputs():
    spec = {"architecture": "agemapper", "channels": [4, 8, 8, 8, 8], "fully_connected": [8, 4]}
    torch.manual_seed(2)
    model = build_model(spec, (32, 32, 32)).eval()
    fast = copy.deepcopy(model)
    assert kernels.use_shifted_first_conv(fast)
    assert fast.state_dict().keys() == model.state_dict().keys()
    x = torch.randn(2, 1, 32, 32, 32)
    torch.testing.assert_close(fast(x), model(x), rtol=1e-4, atol=1e-4)
    # only a plain 1-channel 3x3x3 convolution without bias is replaced
    assert not kernels.use_shifted_first_conv(nn.Sequential(nn.Conv3d(2, 4, 3, padding=1)))
    assert not kernels.use_shifted_first_conv(nn.Sequential(nn.Conv3d(1, 4, 3, padding=1)))


def test_trainer_with_the_shifted_first_conv_trains_the_same_network(tmp_path):
    histories = {}
    for first_conv in ("cudnn", "shifted"):
        t = train_tiny(tmp_path, first_conv, speed={"first_conv": first_conv})
        first = next(m for m in t.reps[0].model.modules() if isinstance(m, nn.Conv3d))
        assert (type(first) is kernels.ShiftedConv3d) == (first_conv == "shifted")
        histories[first_conv] = [h["val_mae"] for h in t.reps[0].history]
    np.testing.assert_allclose(histories["shifted"], histories["cudnn"], rtol=1e-3)


def test_bf16_training_with_the_shifted_first_conv_stays_finite_on_cpu():
    """Regression: a channels-last output made a later bf16 convolution's weight gradient NaN
    on the CPU within ~25 steps (the plain model in channels_last_3d does the same)."""
    spec = {"architecture": "agemapper", "channels": [4, 8, 8, 8, 8], "fully_connected": [96, 32]}
    torch.manual_seed(0)
    model = build_model(spec, (32, 40, 32))
    model.init_output(60.0)
    kernels.use_shifted_first_conv(model)
    x, y = torch.randn(12, 1, 32, 40, 32).abs(), torch.rand(12) * 30 + 45
    opt = torch.optim.Adam(model.parameters(), lr=0.002)
    for _ in range(40):
        opt.zero_grad()
        with torch.autocast("cpu", torch.bfloat16):
            loss = torch.nn.functional.mse_loss(model(x).float(), y)
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters())
        opt.step()
