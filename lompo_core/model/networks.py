"""Building blocks: the 64x64 conv encoder and decoder, MLPs, a GRU cell and an ensemble layer."""

from __future__ import annotations

import torch
from torch import nn

IMAGE_SIZE = 64


def mlp(
    inp: int,
    hidden: int,
    out: int,
    layers: int,
    act: type[nn.Module] = nn.ELU,
    norm: bool = False,
) -> nn.Sequential:
    """``layers`` hidden layers of ``hidden`` units; ``norm`` adds a LayerNorm before each
    activation (bounds the features a critic extrapolates from, as in ReBRAC)."""
    mods: list[nn.Module] = []
    for i in range(layers):
        mods.append(nn.Linear(inp if i == 0 else hidden, hidden))
        mods += [nn.LayerNorm(hidden), act()] if norm else [act()]
    mods.append(nn.Linear(hidden if layers else inp, out))
    return nn.Sequential(*mods)


def image_to_input(image: torch.Tensor) -> torch.Tensor:
    """uint8 [..., 64, 64, 3] -> float [..., 3, 64, 64] in [-0.5, 0.5], the reference's scaling."""
    return image.to(torch.float32).div(255.0).sub(0.5).movedim(-1, -3)


class Encoder(nn.Module):
    """Four 4x4 stride-2 convolutions (depth, 2, 4, 8 x depth), ReLU: 64 px -> 32*depth features."""

    def __init__(self, depth: int) -> None:
        super().__init__()
        d = depth
        self.net = nn.Sequential(
            nn.Conv2d(3, d, 4, 2), nn.ReLU(),
            nn.Conv2d(d, 2 * d, 4, 2), nn.ReLU(),
            nn.Conv2d(2 * d, 4 * d, 4, 2), nn.ReLU(),
            nn.Conv2d(4 * d, 8 * d, 4, 2), nn.ReLU(),
        )  # fmt: skip
        self.out_dim = 32 * d

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """uint8 [..., 64, 64, 3] -> [..., 32*depth]."""
        x = image_to_input(image)
        lead = x.shape[:-3]
        y = self.net(x.reshape(-1, 3, IMAGE_SIZE, IMAGE_SIZE))
        return y.reshape(*lead, self.out_dim)


class Decoder(nn.Module):
    """Dense to 32*depth at 1x1, then transposed convolutions with kernels 5, 5, 6, 6 -> 64 px.

    Returns the mean of a unit-variance Gaussian over pixels scaled to [-0.5, 0.5].
    """

    def __init__(self, feat: int, depth: int) -> None:
        super().__init__()
        d = depth
        self.fc = nn.Linear(feat, 32 * d)
        self.net = nn.Sequential(
            nn.ConvTranspose2d(32 * d, 4 * d, 5, 2), nn.ReLU(),
            nn.ConvTranspose2d(4 * d, 2 * d, 5, 2), nn.ReLU(),
            nn.ConvTranspose2d(2 * d, d, 6, 2), nn.ReLU(),
            nn.ConvTranspose2d(d, 3, 6, 2),
        )  # fmt: skip

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        """[..., F] -> mean [..., 3, 64, 64]."""
        lead = feat.shape[:-1]
        x = self.fc(feat).reshape(-1, self.fc.out_features, 1, 1)
        return self.net(x).reshape(*lead, 3, IMAGE_SIZE, IMAGE_SIZE)


class GRUCell(nn.Module):
    """The standard GRU update written with Linear layers: same maths as nn.GRUCell, and it
    exports to ONNX as plain MatMul/Sigmoid/Tanh in every exporter."""

    def __init__(self, inp: int, hidden: int) -> None:
        super().__init__()
        self.ih = nn.Linear(inp, 3 * hidden)
        self.hh = nn.Linear(hidden, 3 * hidden)

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        ir, iz, in_ = self.ih(x).chunk(3, -1)
        hr, hz, hn = self.hh(h).chunk(3, -1)
        r = torch.sigmoid(ir + hr)
        z = torch.sigmoid(iz + hz)
        n = torch.tanh(in_ + r * hn)
        return (1.0 - z) * n + z * h


class EnsembleLinear(nn.Module):
    """K independent Linear layers evaluated together (one einsum) or one member at a time."""

    def __init__(self, k: int, inp: int, out: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(k, inp, out))
        self.bias = nn.Parameter(torch.empty(k, out))
        bound = 1.0 / inp**0.5  # nn.Linear's default initialisation, per member
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, in] or [K, B, in] -> [K, B, out] for all members."""
        if x.dim() == 2:
            return torch.einsum("bi,kio->kbo", x, self.weight) + self.bias[:, None]
        return torch.einsum("kbi,kio->kbo", x, self.weight) + self.bias[:, None]

    def member(self, x: torch.Tensor, k: int) -> torch.Tensor:
        return x @ self.weight[k] + self.bias[k]
