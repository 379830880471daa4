"""The GAN losses and the R1 penalty, apart from the loop (as in StyleGAN2-ADA's training/loss.py).

D's outputs are logits. `bce` is DCGAN's non-saturating loss; `hinge` is
SAGAN/BigGAN's. R1 (Mescheder et al. 2018) penalises the gradient of D on
real images; it runs lazily, every R1_INTERVAL D steps and scaled by it
(StyleGAN2), which costs 1/16 of the double backward for the same effect.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

R1_INTERVAL = 16


def d_loss(kind: str, out_real: torch.Tensor, out_fake: torch.Tensor) -> torch.Tensor:
    """D's loss: real images towards "real", generated ones towards "fake"."""
    if kind == "hinge":
        return F.relu(1 - out_real).mean() + F.relu(1 + out_fake).mean()
    ones, zeros = torch.ones_like(out_real), torch.zeros_like(out_fake)
    return F.binary_cross_entropy_with_logits(out_real, ones) + F.binary_cross_entropy_with_logits(
        out_fake, zeros
    )


def g_loss(kind: str, out_fake: torch.Tensor) -> torch.Tensor:
    """G's loss: its images towards "real"."""
    if kind == "hinge":
        return -out_fake.mean()
    return F.binary_cross_entropy_with_logits(out_fake, torch.ones_like(out_fake))


def r1_penalty(d: torch.nn.Module, real: torch.Tensor, gamma: float, interval: int) -> torch.Tensor:
    """gamma/2 * E|grad D(real)|^2, times the interval it runs at; in fp32, as double backward needs."""
    x = real.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(d(x).sum(), x, create_graph=True)
    return grad.square().sum(dim=(1, 2, 3)).mean() * (gamma / 2) * interval
