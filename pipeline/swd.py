"""Multi-scale sliced Wasserstein distance (SWD), as in Progressive GAN (Karras et al. 2018).

Each image set becomes a Laplacian pyramid down to 16 px. At every level, 128
random 7x7 patches per image are the descriptors; each set is normalised per
channel by its own mean and std (so the distance compares structure, not
overall colour scale); the distance is the mean 1-D Wasserstein distance
along 512 random unit directions. Values are reported x1e3 per level
("swd_64", "swd_32", "swd_16", ...) with their average in "swd_avg".

Patch positions are drawn per rank, not per set: each set is put in a
canonical order (by a content hash) and its r-th image takes the r-th block of
positions. So SWD(x, x) is exactly 0, the order of the images in a set does
not matter, and SWD(a, b) == SWD(b, a). All randomness comes from one CPU
generator seeded with `seed`, drawn per level (finest first): patch centres
for max(len(a), len(b)) ranks (all y, then all x), then the directions. The
same inputs and seed give the same numbers on any device. This file imports only torch (>= 2.4): the trainer
calls it too, on whatever device it trains on.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

PATCH = 7
MIN_RESOLUTION = 16
CHUNK = 128  # directions projected at once: bounds memory to (descriptors x 128)
HASH_SEED = 20180101  # fixed: the canonical order must not depend on `seed`

# Progressive GAN's 5x5 filter is the outer product of this one; applied separably (6x faster).
BINOMIAL = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], dtype=torch.float64) / 16.0


def _blur(x: torch.Tensor) -> torch.Tensor:
    """5x5 binomial filter per channel, mirrored at the borders (scipy's mode='mirror')."""
    n, c, h, w = x.shape
    k = BINOMIAL.to(x.device, x.dtype)
    y = F.pad(x.reshape(n * c, 1, h, w), (2, 2, 2, 2), mode="reflect")
    y = F.conv2d(F.conv2d(y, k.view(1, 1, 1, 5)), k.view(1, 1, 5, 1))
    return y.view(n, c, h, w)


def pyr_down(x: torch.Tensor) -> torch.Tensor:
    return _blur(x)[:, :, ::2, ::2]


def pyr_up(x: torch.Tensor) -> torch.Tensor:
    n, c, h, w = x.shape
    up = x.new_zeros(n, c, 2 * h, 2 * w)
    up[:, :, ::2, ::2] = x
    return _blur(up) * 4.0  # the zeros took 3/4 of the energy


def laplacian_pyramid(x: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """Band-pass levels from full size down, the last one the low-pass residual."""
    pyramid = [x]
    for _ in range(1, levels):
        pyramid.append(pyr_down(pyramid[-1]))
        pyramid[-2] = pyramid[-2] - pyr_up(pyramid[-1])
    return pyramid


def resolutions(size: int) -> list[int]:
    """Pyramid level sizes, e.g. 64 -> [64, 32, 16]."""
    if size < MIN_RESOLUTION or size & (size - 1):
        raise ValueError(f"SWD needs square images with a power-of-two side >= 16, got {size}")
    out = [size]
    while out[-1] > MIN_RESOLUTION:
        out.append(out[-1] // 2)
    return out


def canonical_order(x: torch.Tensor) -> torch.Tensor:
    """Indices that sort uint8 images by a 63-bit content hash; equal keys mean equal images."""
    flat = x.reshape(x.shape[0], -1)
    gen = torch.Generator(device="cpu").manual_seed(HASH_SEED)
    # Weights below 2**31 times values below 256 summed over < 2**24 pixels cannot overflow int64.
    w = torch.randint(0, 2**31, (flat.shape[1],), generator=gen).to(x.device)
    keys = torch.cat([(part.long() * w).sum(dim=1) for part in flat.split(256)])
    return torch.sort(keys.cpu(), stable=True).indices.to(x.device)


def _patch_centres(n: int, size: int, k: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    h = PATCH // 2
    y = torch.randint(h, size - h, (n * k,), generator=gen)
    x = torch.randint(h, size - h, (n * k,), generator=gen)
    return y, x


def _descriptors(level: torch.Tensor, y: torch.Tensor, x: torch.Tensor, k: int) -> torch.Tensor:
    """(n*k, C*7*7) patches, normalised per channel over this set."""
    n, c, _, _ = level.shape
    h = PATCH // 2
    off = torch.arange(-h, h + 1, device=level.device)
    img = torch.arange(n, device=level.device).repeat_interleave(k)
    y, x = y.to(level.device), x.to(level.device)
    rows = (y[:, None] + off)[:, None, :, None]
    cols = (x[:, None] + off)[:, None, None, :]
    chan = torch.arange(c, device=level.device)[None, :, None, None]
    patches = level[img[:, None, None, None], chan, rows, cols]  # (n*k, c, 7, 7)
    mean = patches.mean(dim=(0, 2, 3), keepdim=True)
    std = patches.std(dim=(0, 2, 3), keepdim=True, correction=0).clamp_min(1e-8)
    return ((patches - mean) / std).reshape(n * k, -1)


def wasserstein_1d(pa: torch.Tensor, pb: torch.Tensor) -> torch.Tensor:
    """Mean over columns of the exact 1-D W1 between the columns of pa (n, d) and pb (m, d).

    With n == m this is mean |sorted(a) - sorted(b)|. Otherwise the two quantile
    functions are compared on the union of their steps, which is the same W1.
    """
    sa, _ = torch.sort(pa, dim=0)
    sb, _ = torch.sort(pb, dim=0)
    n, m = sa.shape[0], sb.shape[0]
    if n == m:
        return (sa - sb).abs().mean()
    # Quantile levels where either step function jumps; segment i spans (t[i-1], t[i]].
    t = torch.cat(
        [torch.arange(1, n + 1, device=sa.device) * m, torch.arange(1, m + 1, device=sa.device) * n]
    )
    t, _ = torch.sort(t)  # integers in units of 1/(n*m): exact, no float ties
    lo = torch.cat([t.new_zeros(1), t[:-1]])
    width = (t - lo).to(sa.dtype) / (n * m)
    # Step of each quantile function at the segment's start; the final zero-width segment would
    # index one past the end.
    ia, ib = (lo // m).clamp_max(n - 1), (lo // n).clamp_max(m - 1)
    return (width[:, None] * (sa[ia] - sb[ib]).abs()).sum(dim=0).mean()


def _work_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64


@torch.no_grad()
def multiscale_swd(
    a: torch.Tensor,
    b: torch.Tensor,
    *,
    seed: int = 0,
    patches_per_image: int = 128,
    projections: int = 512,
) -> dict[str, float]:
    """SWD x1e3 per pyramid level and on average between uint8 image sets (N, 3, H, W).

    The sets may differ in size but not in H and W. Computed on a's device.
    """
    if a.ndim != 4 or b.ndim != 4 or a.shape[1:] != b.shape[1:]:
        raise ValueError(
            f"need two (N, C, H, W) sets of the same image size, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    if a.shape[0] < 1 or b.shape[0] < 1:
        raise ValueError("need at least one image in each set")
    _, c, h, w = a.shape
    if h != w:
        raise ValueError(f"SWD needs square images, got {h}x{w}")
    if patches_per_image < 1 or projections < 1:
        raise ValueError("patches_per_image and projections must be at least 1")
    sizes = resolutions(h)
    device = a.device
    dtype = _work_dtype(device)
    b = b.to(device)
    a, b = a[canonical_order(a)], b[canonical_order(b)]
    na, nb, k = a.shape[0], b.shape[0], patches_per_image
    gen = torch.Generator(device="cpu").manual_seed(seed)
    pyr_a = laplacian_pyramid(a.to(dtype), len(sizes))
    pyr_b = laplacian_pyramid(b.to(dtype), len(sizes))
    out: dict[str, float] = {}
    for size, la, lb in zip(sizes, pyr_a, pyr_b, strict=True):
        y, x = _patch_centres(max(na, nb), size, k, gen)
        dirs = torch.randn(c * PATCH * PATCH, projections, generator=gen, dtype=torch.float64)
        dirs = (dirs / dirs.norm(dim=0, keepdim=True)).to(device, dtype)
        da = _descriptors(la, y[: na * k], x[: na * k], k)
        db = _descriptors(lb, y[: nb * k], x[: nb * k], k)
        total = torch.zeros((), dtype=dtype, device=device)
        for j in range(0, projections, CHUNK):
            d = dirs[:, j : j + CHUNK]
            total += wasserstein_1d(da @ d, db @ d) * d.shape[1]
        out[f"swd_{size}"] = float(total / projections) * 1e3
    out["swd_avg"] = sum(out.values()) / len(sizes)
    return out
