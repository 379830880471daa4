"""Stage 6, sample: pictures of what the trained generator does, from a fixed seed.

Outputs (in samples/):
  grid.png              sample.n images from the EMA generator, in rows of sample.nrow
  grid_raw.png          the same latents through the raw (non-EMA) weights
  NNN.png               each EMA image on its own
  interpolation.gif     sample.nrow walks through latent space (slerp), looping
  nearest.png           16 samples, each beside its nearest training image in pixel
                        space: a sample that matches a training image is memorised
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from pipeline import paths
from pipeline.contracts import (
    PROCESSED_INDEX,
    SAMPLE_GRID,
    SAMPLE_GRID_RAW,
    SAMPLE_INTERPOLATION,
    SAMPLE_NEAREST,
)
from pipeline.errors import PipelineError
from pipeline.images import read_csv, save_image_atomic
from pipeline.model import Generator, load_generator
from pipeline.params import Params
from pipeline.tensors import load_dataset, pick_device, save_grid, to_image, to_uint8

log = logging.getLogger(__name__)

NEAREST = 16
BATCH = 256
FRAME_MS = 60


def load(path: str | Path, device: torch.device | str = "cpu", which: str = "ema") -> tuple[Generator, dict]:
    """The generator with its EMA or raw weights; files without raw weights give their only set."""
    path = Path(path)
    if not path.exists():
        raise PipelineError(
            f"{path}: not found; train first (`dvc repro train` or `python -m pipeline train`)"
        )
    return load_generator(path, device, which=which)


def has_raw_weights(path: str | Path) -> bool:
    ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    return "raw_state_dict" in ckpt


def latents(n: int, dim: int, gen: torch.Generator, truncation: float | None = None) -> torch.Tensor:
    """n standard-normal latents; with `truncation`, components beyond ±truncation are redrawn.

    Drawn one row at a time, so the first k of n latents are the k latents of a smaller n
    (torch fills one large randn differently from several small ones).
    """
    rows = []
    for _ in range(n):
        z = torch.randn(dim, generator=gen)
        if truncation is not None:
            while (out := z.abs() > truncation).any():
                z[out] = torch.randn(int(out.sum()), generator=gen)
        rows.append(z)
    return torch.stack(rows) if rows else torch.empty(0, dim)


@torch.no_grad()
def forward(g: Generator, z: torch.Tensor) -> torch.Tensor:
    """G(z) in [-1, 1] on the CPU, in batches so any n fits in memory."""
    device = next(g.parameters()).device
    return torch.cat([g(part.to(device)).float().cpu() for part in z.split(BATCH)])


def generate(
    model_path: str | Path,
    n: int,
    seed: int,
    device: str = "auto",
    which: str = "ema",
    truncation: float | None = None,
) -> torch.Tensor:
    """n images in [-1, 1] from the saved generator; the same seed gives the same images."""
    g, config = load(model_path, pick_device(device), which)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    return forward(g, latents(n, config["latent_dim"], gen, truncation))


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation, row by row: stays where Gaussian latents live, unlike a straight line."""
    cos = (a * b).sum(-1, keepdim=True) / (a.norm(dim=-1, keepdim=True) * b.norm(dim=-1, keepdim=True))
    omega = torch.arccos(cos.clamp(-1.0, 1.0))
    so = torch.sin(omega)
    lerp = (1 - t) * a + t * b
    safe = so.abs() > 1e-6
    so = torch.where(safe, so, torch.ones_like(so))
    return torch.where(safe, (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / so, lerp)


def walk(points: torch.Tensor, steps: int) -> torch.Tensor:
    """(P, W, dim) key latents -> (P * steps, W, dim) frames, closing the loop back to the first."""
    frames = []
    for i in range(points.shape[0]):
        a, b = points[i], points[(i + 1) % points.shape[0]]
        frames += [slerp(a, b, s / steps) for s in range(steps)]
    return torch.stack(frames)


def upscale(img: Image.Image, factor: int) -> Image.Image:
    if factor == 1:
        return img
    return img.resize((img.width * factor, img.height * factor), Image.Resampling.NEAREST)


def zoom(resolution: int) -> int:
    """Integer factor that shows small pixel-art samples at 128 px or more."""
    return max(1, 128 // resolution)


def interpolation_gif(g: Generator, points: torch.Tensor, steps: int, path: Path) -> int:
    """Write the looping GIF, one walk per column; returns its frame count."""
    batches = [forward(g, z) for z in walk(points, steps)]
    f = max(1, 64 // batches[0].shape[-1])  # not zoom(): 2x at 64 px made a 6 MB GIF
    images = [upscale(to_image(x, nrow=x.shape[0]), f) for x in batches]
    save_image_atomic(images[0], path, save_all=True, append_images=images[1:], duration=FRAME_MS, loop=0)
    return len(images)


def nearest_neighbours(fake: torch.Tensor, real: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For each uint8 fake image, the index of the closest real one and the RMS difference (0-255)."""
    f = fake.reshape(fake.shape[0], -1).double()
    best = torch.full((f.shape[0],), math.inf, dtype=torch.float64)
    index = torch.zeros(f.shape[0], dtype=torch.long)
    for start in range(0, real.shape[0], BATCH):
        r = real[start : start + BATCH].reshape(-1, f.shape[1]).double()
        d = torch.cdist(f, r)
        value, i = d.min(dim=1)
        better = value < best
        best[better], index[better] = value[better], i[better] + start
    return index, best / math.sqrt(f.shape[1])


def nearest_sheet(
    fake: torch.Tensor, real: torch.Tensor, ids: list[str], index: torch.Tensor, rms: torch.Tensor
) -> Image.Image:
    """Pairs [sample | nearest training image], four pairs a row, each labelled with the id and distance."""
    f = zoom(fake.shape[-1])
    size = fake.shape[-1] * f
    pairs_per_row, gap, pair_gap, label = 4, 2, 16, 14
    pair_w = 2 * size + gap
    rows = math.ceil(fake.shape[0] / pairs_per_row)
    cols = min(pairs_per_row, fake.shape[0])
    sheet = Image.new(
        "RGB",
        (cols * pair_w + (cols + 1) * pair_gap, rows * (size + label + pair_gap) + pair_gap),
        (32, 32, 32),
    )
    draw = ImageDraw.Draw(sheet)
    for k in range(fake.shape[0]):
        r, c = divmod(k, pairs_per_row)
        x, y = pair_gap + c * (pair_w + pair_gap), pair_gap + r * (size + label + pair_gap)
        for j, img in enumerate((fake[k], real[index[k]])):
            pic = Image.fromarray(img.permute(1, 2, 0).contiguous().numpy())
            sheet.paste(upscale(pic, f), (x + j * (size + gap), y))
        text = f"#{k} | {ids[index[k]]}  rms {rms[k]:.0f}"
        draw.text((x, y + size + 1), text, fill=(230, 230, 230))
    return sheet


def _training_set(resolution: int) -> tuple[torch.Tensor, list[str]] | None:
    index = PROCESSED_INDEX.path
    if not index.exists():
        log.warning("sample: %s not found: nearest.png skipped", index)
        return None
    rows = read_csv(index)
    if not rows:
        log.warning("sample: no training images: nearest.png skipped")
        return None
    return load_dataset(paths.PROCESSED, resolution), [r["id"] for r in rows]


def run(params: Params) -> Path:
    """Write every sample picture; returns the grid's path."""
    p = params.sample
    out = paths.SAMPLES
    device = pick_device(params.train.device)
    g, config = load(paths.MODEL, device, "ema")
    g_raw, _ = load(paths.MODEL, device, "raw")
    gen = torch.Generator(device="cpu").manual_seed(p.seed)
    z = latents(p.n, config["latent_dim"], gen)
    images = forward(g, z)

    for old in out.glob("[0-9][0-9][0-9].png"):
        if int(old.stem) >= p.n:
            old.unlink()  # left by an earlier run with a larger sample.n
    for i, x in enumerate(images):
        save_grid(x[None], out / f"{i:03d}.png")
    grid = SAMPLE_GRID
    save_grid(images, grid, nrow=p.nrow)
    save_grid(forward(g_raw, z), SAMPLE_GRID_RAW, nrow=p.nrow)
    if not has_raw_weights(paths.MODEL):
        log.info("sample: %s has no raw weights; grid_raw.png shows its only weights", paths.MODEL)

    points = latents(p.interpolation_points * p.nrow, config["latent_dim"], gen)
    points = points.view(p.interpolation_points, p.nrow, -1)
    frames = interpolation_gif(g, points, p.interpolation_steps, SAMPLE_INTERPOLATION)

    real = _training_set(config["resolution"])
    if real is not None:
        fake = to_uint8(images[:NEAREST])
        index, rms = nearest_neighbours(fake, real[0])
        save_image_atomic(nearest_sheet(fake, real[0], real[1], index, rms), SAMPLE_NEAREST)
        log.info(
            "sample: nearest training image at RMS %.1f (median over %d samples)", rms.median(), len(rms)
        )
    log.info("sample: %d images, %s, grid_raw.png, interpolation.gif (%d frames)", p.n, grid, frames)
    return grid
