"""Stage 7, evaluate: how far the generator's images are from the training set, as one number.

The metric is Progressive GAN's multi-scale sliced Wasserstein distance
(pipeline/swd.py), which needs no downloaded network. It compares
`evaluate.n` images from the EMA generator (fixed latents) with the processed
training set at the generator's resolution. For scale it also measures the
floor: SWD between two random halves of the training set, i.e. what two
samples of real images score. Lower is better; near the floor is as good as
this many real images can show.

Output: metrics/evaluate.json (a DVC metric, so `dvc exp show` lists it as swd.avg, ...),
grouped so that one regex picks a group:
  swd/avg, swd/<res>...           generated vs training set, x1e3
  swd/over_floor                  swd/avg / floor/avg
  floor/avg, floor/<res>...       real half vs real half, x1e3
  images/generated, images/real   image counts
  inception/fid, /kid, /kid_std   only with evaluate.inception_weights and torch-fidelity
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from pipeline import paths
from pipeline.contracts import PROCESSED_INDEX
from pipeline.errors import PipelineError
from pipeline.images import write_text_atomic
from pipeline.params import EvaluateParams, Params
from pipeline.sample import forward, latents, load
from pipeline.swd import multiscale_swd
from pipeline.tensors import load_dataset, pick_device, to_uint8

log = logging.getLogger(__name__)

METRICS = paths.EVALUATE_METRICS


def split_halves(real: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two disjoint random halves of equal size (one image left out when the count is odd)."""
    perm = torch.randperm(real.shape[0], generator=torch.Generator().manual_seed(seed))
    half = real.shape[0] // 2
    return real[perm[:half]], real[perm[half : 2 * half]]


def fid_kid(
    fake: torch.Tensor, real: torch.Tensor, p: EvaluateParams, device: torch.device
) -> dict[str, float]:
    """FID and KID with torch-fidelity and a local InceptionV3 file; {} (and one line) when not set up."""
    if not p.inception_weights:
        log.info("evaluate: FID/KID skipped: set evaluate.inception_weights to a local InceptionV3 file")
        return {}
    weights = Path(p.inception_weights)
    if not weights.is_file():
        raise PipelineError(
            f"params.yaml: evaluate.inception_weights: {weights} is not a file; "
            'give a local InceptionV3 weights file, or "" to skip FID/KID'
        )
    try:
        import torch_fidelity
    except ImportError:
        log.warning("evaluate: FID/KID skipped: torch-fidelity is not installed (pip install torch-fidelity)")
        return {}

    class _Images(torch.utils.data.Dataset):
        def __init__(self, x: torch.Tensor) -> None:
            self.x = x

        def __len__(self) -> int:
            return self.x.shape[0]

        def __getitem__(self, i: int) -> torch.Tensor:
            return self.x[i]

    result = torch_fidelity.calculate_metrics(
        input1=_Images(fake),
        input2=_Images(real),
        fid=True,
        kid=True,
        kid_subset_size=min(1000, fake.shape[0], real.shape[0]),
        feature_extractor_weights_path=str(weights),
        cuda=device.type == "cuda",
        cache=False,
        verbose=False,
    )
    return {
        "fid": float(result["frechet_inception_distance"]),
        "kid": float(result["kernel_inception_distance_mean"]),
        "kid_std": float(result["kernel_inception_distance_std"]),
    }


def run(params: Params) -> dict[str, dict[str, float]]:
    """Write metrics/evaluate.json and return its values."""
    p = params.evaluate
    device = pick_device(params.train.device)
    g, config = load(paths.MODEL, device, "ema")
    resolution = config["resolution"]
    real = load_dataset(paths.PROCESSED, resolution)
    if real.shape[0] < 2:
        raise PipelineError(
            f"{PROCESSED_INDEX.path}: evaluate needs at least 2 training images for the "
            f"real-vs-real floor, got {real.shape[0]}"
        )
    gen = torch.Generator(device="cpu").manual_seed(p.seed)
    fake = to_uint8(forward(g, latents(p.n, config["latent_dim"], gen)))
    kw = {"seed": p.seed, "patches_per_image": p.patches_per_image, "projections": p.projections}
    log.info("evaluate: SWD of %d generated vs %d real images at %d px", p.n, real.shape[0], resolution)
    swd = multiscale_swd(fake.to(device), real.to(device), **kw)
    half_a, half_b = split_halves(real, p.seed)
    floor = multiscale_swd(half_a.to(device), half_b.to(device), **kw)
    level = lambda k: k.removeprefix("swd_")  # noqa: E731 swd_avg -> avg, swd_64 -> 64
    metrics: dict[str, dict[str, float]] = {
        "swd": {level(k): v for k, v in swd.items()},
        "floor": {level(k): v for k, v in floor.items()},
        "images": {"generated": p.n, "real": real.shape[0]},
    }
    if floor["swd_avg"] > 0:  # zero only when the halves hold the same images
        metrics["swd"]["over_floor"] = swd["swd_avg"] / floor["swd_avg"]
    if inception := fid_kid(fake, real, p, device):
        metrics["inception"] = inception
    write_text_atomic(METRICS, json.dumps(metrics, indent=2) + "\n")
    log.info("evaluate: SWD %.2f, real-vs-real floor %.2f -> %s", swd["swd_avg"], floor["swd_avg"], METRICS)
    return metrics
