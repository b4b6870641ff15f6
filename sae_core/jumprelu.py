"""Straight-through estimators for JumpReLU SAEs (Rajamanoharan et al., 2024).

The Heaviside step has zero gradient almost everywhere; these functions give the threshold a
pseudo-gradient through a rectangle kernel of width `bandwidth` around it, so the threshold and
the L0 penalty can be trained directly.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _rect(u: Tensor) -> Tensor:
    return (u.abs() < 0.5).to(u.dtype)


class _JumpReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:
        ctx.save_for_backward(x, threshold)
        ctx.bandwidth = bandwidth
        return x * (x > threshold).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, threshold = ctx.saved_tensors
        bw = ctx.bandwidth
        x_grad = (x > threshold).to(x.dtype) * grad
        t_grad = -(threshold / bw) * _rect((x - threshold) / bw) * grad
        return x_grad, t_grad.sum(dim=tuple(range(t_grad.ndim - 1))), None


class _Step(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:
        ctx.save_for_backward(x, threshold)
        ctx.bandwidth = bandwidth
        return (x > threshold).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, threshold = ctx.saved_tensors
        bw = ctx.bandwidth
        t_grad = -(1.0 / bw) * _rect((x - threshold) / bw) * grad
        return torch.zeros_like(x), t_grad.sum(dim=tuple(range(t_grad.ndim - 1))), None


def jumprelu(x: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:
    """x where x > threshold else 0; threshold gets a rectangle-kernel pseudo-gradient."""
    return _JumpReLU.apply(x, threshold, bandwidth)


def step(x: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:
    """1 where x > threshold else 0; used for the L0 penalty, differentiable in threshold."""
    return _Step.apply(x, threshold, bandwidth)
