"""An equivalent formulation of AgeMapper's first convolution (1 input channel, 3x3x3).

Profiled on an H100 (issue 7's table), the first block dominates a training step: cuDNN has no
fast kernel for a 1-channel 3D convolution and falls back to a generic implicit GEMM for the
forward pass (~10.6 ms/step) and the weight gradient (~10.9 ms/step), plus a layout conversion
of the input. Here the convolution is written as what it is: the 27 shifted copies of the
padded input (a ``(voxels, 27)`` matrix built slab by slab) times the ``(27, C)`` weights, one
dense GEMM that lands directly in channels-last layout; the weight gradient is the transposed
GEMM on recomputed copies, so nothing 27x the input is kept for the backward pass.

Same weights (``(C, 1, 3, 3, 3)``, same state_dict), same arithmetic up to summation order.
Opt in with ``runtime.first_conv: shifted``; whether it is faster depends on the GPU, so
``benchmarks/train_throughput.py --first-conv shifted`` measures it against cuDNN.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn

SHIFTS = list(itertools.product(range(3), repeat=3))  # (kd, kh, kw) in weight order


def _slab(xp: torch.Tensor, d0: int, d1: int, out_hw: tuple[int, int]) -> torch.Tensor:
    """Shifted copies ``(B, d1 - d0, H, W, 27)`` of padded ``xp`` ``(B, D + 2, H + 2, W + 2)``."""
    h, w = out_hw
    return torch.stack([xp[:, d0 + i : d1 + i, j : j + h, k : k + w] for i, j, k in SHIFTS], -1)


def _chunks(depth: int, per_slice: int, budget: int = 1 << 28):
    step = max(1, min(depth, budget // max(per_slice, 1)))
    return [(d, min(d + step, depth)) for d in range(0, depth, step)]


class _ShiftedConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        dtype = (
            torch.get_autocast_dtype(x.device.type)
            if torch.is_autocast_enabled(x.device.type)
            else x.dtype
        )
        b, _, d, h, w = x.shape
        c = weight.shape[0]
        xp = F.pad(x[:, 0].to(dtype), (1, 1, 1, 1, 1, 1))
        wm = weight.reshape(c, 27).t().to(dtype)
        out = torch.empty((b, d, h, w, c), dtype=dtype, device=x.device)
        with torch.autocast(x.device.type, enabled=False):
            for d0, d1 in _chunks(d, b * h * w * 27):
                out[:, d0:d1] = _slab(xp, d0, d1, (h, w)) @ wm
        ctx.save_for_backward(x, weight)
        ctx.dtype = dtype
        out = out.permute(0, 4, 1, 2, 3)  # (B, C, D, H, W), channels_last_3d strides
        if x.device.type != "cuda":
            # PyTorch 2.13's CPU bf16 convolutions gave non-finite weight gradients on
            # channels_last_3d inputs (tests/test_kernels.py): keep the CPU in NCDHW.
            out = out.contiguous()
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.nn.grad.conv3d_input(x.shape, weight.to(grad.dtype), grad, padding=1)
            grad_x = grad_x.to(x.dtype)
        if ctx.needs_input_grad[1]:
            b, _, d, h, w = x.shape
            c = weight.shape[0]
            g = grad.permute(0, 2, 3, 4, 1).to(ctx.dtype)  # (B, D, H, W, C), a view if NDHWC
            xp = F.pad(x[:, 0].to(ctx.dtype), (1, 1, 1, 1, 1, 1))
            acc = torch.zeros((27, c), dtype=torch.float32, device=x.device)
            for d0, d1 in _chunks(d, b * h * w * 27):
                patches = _slab(xp, d0, d1, (h, w)).reshape(-1, 27)
                acc += (patches.t() @ g[:, d0:d1].reshape(-1, c)).float()
            grad_w = acc.t().reshape(weight.shape).to(weight.dtype)
        return grad_x, grad_w


class ShiftedConv3d(nn.Conv3d):
    """``nn.Conv3d(1, C, 3, padding=1, bias=False)`` computed as one GEMM over shifted copies."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _ShiftedConv.apply(x, self.weight)


def supports_shifted(conv: nn.Module) -> bool:
    return (
        type(conv) is nn.Conv3d
        and conv.in_channels == 1
        and conv.kernel_size == (3, 3, 3)
        and conv.padding == (1, 1, 1)
        and conv.stride == (1, 1, 1)
        and conv.dilation == (1, 1, 1)
        and conv.groups == 1
        and conv.bias is None
    )


def use_shifted_first_conv(model: nn.Module) -> bool:
    """Compute the model's first convolution with :class:`ShiftedConv3d` (same parameters)."""
    first = next((m for m in model.modules() if isinstance(m, nn.Conv3d)), None)
    if first is None or not supports_shifted(first):
        return False
    first.__class__ = ShiftedConv3d
    return True
