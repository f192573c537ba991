"""Networks: AgeMapper (regression) and SFCN (Peng et al. 2021, soft age bins).

Both are built from a plain-data spec (see ``model:`` in the config) and an input shape, so the
demo's reduced grid and narrower layers run the very same code as the full study.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

ARCHITECTURES = ("agemapper", "sfcn")


def _pooled(shape: Sequence[int], times: int) -> tuple[int, ...]:
    out = tuple(int(s) for s in shape)
    for _ in range(times):
        out = tuple(s // 2 for s in out)
    return out


def dropout_rates(dropout, layers: int) -> list[float]:
    """One dropout rate per linear layer: a number applies to all, a list gives each its own
    (the original's ``dropout_rate_1..3``: before FC 9600->96, 96->32 and 32->1)."""
    if isinstance(dropout, int | float):
        return [float(dropout)] * layers
    rates = [float(d) for d in dropout]
    if len(rates) != layers:
        raise ValueError(f"{len(rates)} dropout rates for {layers} linear layers")
    return rates


class AgeMapper(nn.Module):
    """5 x [Conv3d(3, no bias) -> BatchNorm3d -> MaxPool3d(2) -> ReLU] -> FC 96 -> 32 -> 1.

    The flattened size follows from the input grid (64 x 5 x 6 x 5 = 9600 at 160x192x160).
    A dropout layer precedes a linear layer only where its rate is above 0, as in the original.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        channels: Sequence[int] = (32, 64, 64, 64, 64),
        fully_connected: Sequence[int] = (96, 32),
        dropout: float | Sequence[float] = 0.0,
    ):
        super().__init__()
        blocks = []
        c_in = 1
        for c_out in channels:
            blocks.append(
                nn.Sequential(
                    nn.Conv3d(c_in, c_out, kernel_size=3, padding=1, bias=False),
                    nn.BatchNorm3d(c_out),
                    nn.MaxPool3d(2),
                    nn.ReLU(inplace=True),
                )
            )
            c_in = c_out
        self.features = nn.Sequential(*blocks)
        spatial = _pooled(input_shape, len(channels))
        if min(spatial) < 1:
            raise ValueError(
                f"input grid {tuple(input_shape)} is too small for {len(channels)} pooling "
                f"blocks (each dimension needs >= {2 ** len(channels)} voxels)"
            )
        n_flat = c_in * math.prod(spatial)
        layers: list[nn.Module] = [nn.Flatten()]
        width = n_flat
        rates = dropout_rates(dropout, len(fully_connected) + 1)
        for w, rate in zip((*fully_connected, 1), rates, strict=True):
            if rate > 0:
                layers.append(nn.Dropout(rate))
            layers.append(nn.Linear(width, w))
            if w != 1:
                layers.append(nn.ReLU(inplace=True))
            width = w
        self.head = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)).squeeze(1)

    @staticmethod
    def to_age(output: torch.Tensor) -> torch.Tensor:
        return output

    def init_output(self, mean_age: float) -> None:
        """Start the regression at the training mean age (only the initial bias changes; the
        original kept PyTorch's default initialisation: ``training.output_bias``)."""
        last = [m for m in self.head if isinstance(m, nn.Linear)][-1]
        with torch.no_grad():
            last.bias.fill_(mean_age)


class SFCN(nn.Module):
    """Simple Fully Convolutional Network: log-probabilities over 1-year age bins."""

    def __init__(
        self,
        input_shape: Sequence[int],
        channels: Sequence[int] = (32, 64, 128, 256, 256, 64),
        bin_range: Sequence[float] = (42.0, 82.0),
        bin_step: float = 1.0,
        dropout: float = 0.5,
    ):
        super().__init__()
        *pooled, last = channels
        blocks = []
        c_in = 1
        for c_out in pooled:
            blocks.append(
                nn.Sequential(
                    nn.Conv3d(c_in, c_out, kernel_size=3, padding=1),
                    nn.BatchNorm3d(c_out),
                    nn.MaxPool3d(2),
                    nn.ReLU(inplace=True),
                )
            )
            c_in = c_out
        blocks.append(
            nn.Sequential(nn.Conv3d(c_in, last, kernel_size=1), nn.BatchNorm3d(last), nn.ReLU(True))
        )
        self.features = nn.Sequential(*blocks)
        if min(_pooled(input_shape, len(pooled))) < 1:
            raise ValueError(f"input grid {tuple(input_shape)} is too small for SFCN")
        lo, hi = float(bin_range[0]), float(bin_range[1])
        n_bins = int(round((hi - lo) / bin_step))
        self.register_buffer(
            "bin_centers", lo + bin_step * (torch.arange(n_bins, dtype=torch.float32) + 0.5)
        )
        self.bin_step = float(bin_step)
        self.classifier = nn.Sequential(
            nn.AdaptiveAvgPool3d(1),
            nn.Dropout(dropout) if dropout > 0 else nn.Identity(),
            nn.Conv3d(last, n_bins, kernel_size=1),
            nn.Flatten(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(self.classifier(self.features(x)), dim=1)

    def to_age(self, output: torch.Tensor) -> torch.Tensor:
        return (output.exp() * self.bin_centers).sum(dim=1)

    def soft_labels(self, age: torch.Tensor, sigma: float = 1.0) -> torch.Tensor:
        """Gaussian soft labels over the bins (integrated over each bin), rows sum to 1."""
        half = self.bin_step / 2
        lo = (self.bin_centers - half)[None, :]
        hi = (self.bin_centers + half)[None, :]
        z = age[:, None].float()
        normal = torch.distributions.Normal(z, sigma)
        p = (normal.cdf(hi) - normal.cdf(lo)).clamp_min(1e-12)
        return p / p.sum(dim=1, keepdim=True)

    def init_output(self, mean_age: float) -> None:  # bins already span the age range
        return None


def _canonical(key: str, linear: dict[str, int]) -> str:
    """``head.<i>.weight`` -> ``head.linear<k>.weight`` (k: the k-th linear layer of the head),
    so that weights move between networks whose dropout layers sit at other indices."""
    parts = key.split(".")
    if parts[0] == "head" and parts[1] in linear:
        parts[1] = f"linear{linear[parts[1]]}"
    return ".".join(parts)


def load_weights(model: nn.Module, state: dict) -> None:
    """Load a trained network's weights into ``model`` (e.g. to fine-tune it).

    ``state`` is a state dict of the same architecture, possibly with dropout elsewhere;
    anything missing, extra or of another shape is an error naming the parameters.
    """
    head = getattr(model, "head", None)
    ours = {}
    if isinstance(head, nn.Sequential):
        linear = [n for n, m in head.named_children() if isinstance(m, nn.Linear)]
        ours = {n: k for k, n in enumerate(linear)}
    theirs_linear = sorted(
        {k.split(".")[1] for k in state if k.startswith("head.") and k.endswith(".weight")},
        key=int,
    )
    theirs = {n: k for k, n in enumerate(theirs_linear)}
    target = {_canonical(k, ours): k for k in model.state_dict()}
    mapped = {}
    for key, value in state.items():
        canonical = _canonical(key, theirs)
        if canonical not in target:
            raise ValueError(f"parameter {key!r} does not exist in this network")
        mapped[target[canonical]] = value
    missing = sorted(set(target.values()) - set(mapped))
    if missing:
        raise ValueError(f"parameters missing from the given weights: {missing[:4]}")
    shapes = model.state_dict()
    wrong = [f"{k} {tuple(v.shape)} vs {tuple(shapes[k].shape)}" for k, v in mapped.items()
             if tuple(v.shape) != tuple(shapes[k].shape)]  # fmt: skip
    if wrong:
        raise ValueError(f"parameters of another shape: {wrong[:4]}")
    model.load_state_dict(mapped)


def build_model(spec: dict, input_shape: Sequence[int]) -> nn.Module:
    """Build a network from the ``model:`` config subtree and the training grid."""
    arch = spec.get("architecture", "agemapper")
    if arch == "agemapper":
        return AgeMapper(
            input_shape,
            channels=spec.get("channels", (32, 64, 64, 64, 64)),
            fully_connected=spec.get("fully_connected", (96, 32)),
            dropout=spec.get("dropout", 0.0),
        )
    if arch == "sfcn":
        return SFCN(
            input_shape,
            channels=spec.get("channels", (32, 64, 128, 256, 256, 64)),
            bin_range=spec.get("bin_range", (42.0, 82.0)),
            bin_step=float(spec.get("bin_step", 1.0)),
            dropout=float(spec.get("dropout", 0.5)),
        )
    raise ValueError(f"unknown architecture {arch!r}; expected one of {ARCHITECTURES}")


def loss_function(model: nn.Module, name: str, sigma: float = 1.0):
    """Return ``f(output, age) -> loss`` for the model and the configured loss."""
    if isinstance(model, SFCN):
        if name != "kl":
            raise ValueError("SFCN is trained with the 'kl' loss against soft age labels")

        def kl(output, age):
            return F.kl_div(output, model.soft_labels(age, sigma), reduction="batchmean")

        return kl
    if name == "mse":
        return lambda output, age: F.mse_loss(output, age)
    if name == "mae":
        return lambda output, age: F.l1_loss(output, age)
    raise ValueError(f"loss {name!r} does not apply to AgeMapper (use mse or mae)")


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
