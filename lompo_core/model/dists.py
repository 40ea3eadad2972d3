"""Closed-form Gaussian quantities, written out so they trace to plain ONNX arithmetic."""

from __future__ import annotations

import math

import torch

LOG_2PI = math.log(2.0 * math.pi)


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """log N(x; mean, diag(std^2)), summed over the last dimension."""
    z = (x - mean) / std
    return (-0.5 * z.square() - torch.log(std) - 0.5 * LOG_2PI).sum(-1)


def gaussian_kl(
    mean_q: torch.Tensor, std_q: torch.Tensor, mean_p: torch.Tensor, std_p: torch.Tensor
) -> torch.Tensor:
    """KL(q || p) between diagonal Gaussians, summed over the last dimension."""
    var_q, var_p = std_q.square(), std_p.square()
    kl = torch.log(std_p / std_q) + (var_q + (mean_q - mean_p).square()) / (2.0 * var_p) - 0.5
    return kl.sum(-1)


def unit_normal_log_prob(x: torch.Tensor, mean: torch.Tensor, dims: int) -> torch.Tensor:
    """log N(x; mean, I) summed over the last ``dims`` dimensions (sigma = 1, the reference's)."""
    lp = -0.5 * (x - mean).square() - 0.5 * LOG_2PI
    return lp.flatten(-dims).sum(-1) if dims else lp


def bernoulli_log_prob(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return -torch.nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none")
