"""Stage 6, sample: draw images from the trained generator with a fixed seed.

Outputs (in samples/):
  grid.png      sample.n images in rows of sample.nrow
  NNN.png       each image on its own
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from pipeline import paths
from pipeline.images import save_image_atomic
from pipeline.model import load_generator
from pipeline.params import Params
from pipeline.train import pick_device, to_image

log = logging.getLogger(__name__)


@torch.no_grad()
def generate(model_path: str, n: int, seed: int, device: str = "auto") -> torch.Tensor:
    """n images in [-1, 1] from the saved generator; the same seed gives the same images."""
    dev = pick_device(device)
    g, config = load_generator(model_path, dev)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    z = torch.randn(n, config["latent_dim"], generator=gen).to(dev)
    return g(z).float().cpu()


def run(params: Params) -> Path:
    """Write grid.png and one PNG per sample; returns the grid's path."""
    p = params.sample
    out = paths.SAMPLES
    images = generate(paths.MODEL, p.n, p.seed, params.train.device)
    for i, x in enumerate(images):
        save_image_atomic(to_image(x[None], nrow=1), out / f"{i:03d}.png")
    grid = out / "grid.png"
    save_image_atomic(to_image(images, nrow=p.nrow), grid)
    log.info("sample: %d images and %s", p.n, grid)
    return grid
