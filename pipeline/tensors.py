"""Tensors and pictures, shared by train, sample, evaluate and generate.

Images travel as uint8 (N, 3, H, W) tensors; the generator works in float
[-1, 1]. Grids are torchvision's make_grid/save_image (black 2 px gaps).
Imports only torch, torchvision, PIL and tqdm, so the trainer runs on a bare
GPU machine.
"""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image
from torchvision.utils import make_grid, save_image

from pipeline.contracts import PROCESSED_INDEX
from pipeline.errors import PipelineError
from pipeline.images import atomic_open, read_csv
from pipeline.progress import progress


def pick_device(name: str) -> torch.device:
    """`auto` prefers cuda, then mps, then cpu."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise PipelineError("params.yaml: train.device: cuda requested but no CUDA GPU is visible; use auto")
    return torch.device(name)


def load_dataset(processed: Path, resolution: int) -> torch.Tensor:
    """All processed images as a uint8 tensor (N, 3, resolution, resolution).

    Decoded by PIL: torchvision.io.decode_image was 1.2-1.3x faster with the same
    pixels, but torchvision 0.29 deprecates its decoders (README, "Training").
    """
    index = processed / PROCESSED_INDEX.path.name
    if not index.exists():
        raise PipelineError(f"{index}: not found; run `dvc repro resize` first")
    rows = read_csv(index)
    if not rows:
        raise PipelineError(f"{index}: no training images; accept some in the curation manifest")
    arrays = []
    for r in progress(rows, desc="train (loading)", unit="img", leave=False):
        path = processed / r["file"]
        try:
            with Image.open(path) as img:
                img = img.convert("RGB")
                if img.size != (resolution, resolution):
                    img = img.resize((resolution, resolution), Image.Resampling.LANCZOS)
                arrays.append(torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8))
        except (OSError, SyntaxError, ValueError) as exc:  # what PIL raises for a broken file
            raise PipelineError(f"{path}: cannot be decoded ({exc}); run `dvc repro resize` again") from None
    data = torch.stack(arrays).view(len(rows), resolution, resolution, 3)
    return data.permute(0, 3, 1, 2).contiguous()


def to_unit(batch: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1], the range of the generator's tanh."""
    return batch.float().div_(127.5).sub_(1.0)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] -> uint8 [0, 255]."""
    return x.float().add(1.0).mul_(127.5).round_().clamp_(0, 255).to(torch.uint8)


def _grid(x: torch.Tensor, nrow: int) -> torch.Tensor:
    # One image comes back as itself, without the border.
    return make_grid(x.detach().float().cpu(), nrow=nrow, normalize=True, value_range=(-1, 1))


def to_image(x: torch.Tensor, nrow: int = 8) -> Image.Image:
    """A batch in [-1, 1] as one PIL grid, rounded as torchvision's save_image rounds."""
    grid = _grid(x, nrow)
    return Image.fromarray(grid.mul(255).add_(0.5).clamp_(0, 255).byte().permute(1, 2, 0).numpy())


def save_grid(x: torch.Tensor, path: str | Path, nrow: int = 8) -> None:
    """A batch in [-1, 1] as one PNG grid (one image: that image), written atomically."""
    with atomic_open(path, "wb") as fh:
        save_image(_grid(x, nrow), fh, format="png")
