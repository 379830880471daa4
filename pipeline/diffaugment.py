"""Differentiable augmentation (Zhao et al. 2020, "Differentiable Augmentation
for Data-Efficient GAN Training"), on the device, for batches in [-1, 1].

The same random transforms are applied to real and fake images before D sees
them, in both the D and the G step. Because every op is differentiable, G still
gets gradients through the augmentation, and D cannot memorise a few hundred
images. Randomness comes from an explicit torch.Generator, so a resumed run
draws the same augmentations as an uninterrupted one.

This file imports only torch.
"""

from __future__ import annotations

import torch

POLICIES = ("color", "translation", "cutout")


def parse_policy(text: str) -> tuple[str, ...]:
    """'color,translation,cutout' -> a tuple of names; '' or 'none' -> (). Raises ValueError."""
    names = tuple(s.strip() for s in text.split(",") if s.strip() and s.strip() != "none")
    for name in names:
        if name not in POLICIES:
            raise ValueError(f"unknown augmentation {name!r} (use {', '.join(POLICIES)}, or none)")
    return names


def diff_augment(
    x: torch.Tensor, policy: tuple[str, ...], gen: torch.Generator | None = None, shift: float = 0.125
) -> torch.Tensor:
    """Apply each transform of `policy` in order, with independent draws per image; `translation`
    moves each image by up to `shift` of its size (the paper's 1/8 by default)."""
    for name in policy:
        x = translation(x, gen, shift) if name == "translation" else _OPS[name](x, gen)
    return x


def _rand(x: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
    return torch.rand(x.shape[0], 1, 1, 1, generator=gen, device=x.device, dtype=x.dtype)


def color(x: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
    """Brightness ±0.5, saturation x[0, 2], contrast x[0.5, 1.5]."""
    x = x + (_rand(x, gen) - 0.5)
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (_rand(x, gen) * 2) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_rand(x, gen) + 0.5) + mean


def _grid(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    h, w = x.shape[2:]
    ys = torch.arange(h, device=x.device).view(1, h, 1)
    xs = torch.arange(w, device=x.device).view(1, 1, w)
    return ys, xs


def translation(x: torch.Tensor, gen: torch.Generator | None = None, ratio: float = 0.125) -> torch.Tensor:
    """Shift each image by up to `ratio` of its size; uncovered pixels become 0 (mid-grey)."""
    b, c, h, w = x.shape
    dy, dx = int(h * ratio + 0.5), int(w * ratio + 0.5)
    sy = torch.randint(-dy, dy + 1, (b, 1, 1), generator=gen, device=x.device)
    sx = torch.randint(-dx, dx + 1, (b, 1, 1), generator=gen, device=x.device)
    ys, xs = _grid(x)
    src_y, src_x = ys - sy, xs - sx  # (b, h, w): where each output pixel reads from
    inside = (src_y >= 0) & (src_y < h) & (src_x >= 0) & (src_x < w)
    flat = (src_y.clamp(0, h - 1) * w + src_x.clamp(0, w - 1)).view(b, 1, h * w).expand(b, c, h * w)
    out = x.reshape(b, c, h * w).gather(2, flat).view(b, c, h, w)
    return out * inside.unsqueeze(1).to(x.dtype)


def cutout(x: torch.Tensor, gen: torch.Generator | None = None, ratio: float = 0.5) -> torch.Tensor:
    """Zero one square of `ratio` of the size per image, centred anywhere (it may be clipped)."""
    b, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    cy = torch.randint(0, h, (b, 1, 1), generator=gen, device=x.device)
    cx = torch.randint(0, w, (b, 1, 1), generator=gen, device=x.device)
    ys, xs = _grid(x)
    y0, x0 = cy - ch // 2, cx - cw // 2
    hole = (ys >= y0) & (ys < y0 + ch) & (xs >= x0) & (xs < x0 + cw)
    return x * (~hole).unsqueeze(1).to(x.dtype)


_OPS = {"color": color, "translation": translation, "cutout": cutout}
