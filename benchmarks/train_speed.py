"""Training speed: pipeline.train.Trainer against a pytorch/examples-style DCGAN loop.

Both train the same G and D (pipeline.model) with the same batch on the same
few hundred images, measured side by side on whatever device is present:

- reference: what pytorch/examples/dcgan does: a DataLoader (2 workers,
  shuffle, per-image ToTensor/Normalize), fp32, the default memory format,
  BCE-with-logits, Adam, separate real/fake backward passes. Images are kept
  decoded in memory, which favours the reference (examples decodes each epoch).
- ours: the Trainer as `dvc repro` runs it, with DiffAugment off so that both
  do the same work; a third row adds DiffAugment (the default) for reference.

Each row runs in its own process, so peak memory is per row: CUDA's
max_memory_allocated, or the process's peak RSS on CPU. On CUDA the table also
gives MFU: model FLOPs (counted once with torch's FlopCounterMode) per second
over the GPU's dense bf16 peak. Each row is the best of `--repeats` timed
chunks, since other processes can only slow a run down. Ends with
`ratio: X`, ours / reference at the last size (256² by default).

    python benchmarks/train_speed.py                     # 64² and 256², auto device
    python benchmarks/train_speed.py --sizes 256 --steps 100 --channels 64

Imports only torch and the project's own model and training modules.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.model import Discriminator, Generator
from pipeline.params import TrainParams, from_defaults
from pipeline.train import Trainer, pick_device

IMAGES = 300  # about the size of a curated Mario set
# Dense bf16 tensor-core peaks, from the vendors' datasheets.
PEAK_BF16 = {
    "H200": 989e12,
    "H100": 989e12,
    "A100": 312e12,
    "L40S": 362e12,
    "L4": 121e12,
    "A10": 125e12,
    "RTX 4090": 165e12,
    "RTX 3090": 71e12,
}


def make_images(n: int, size: int) -> torch.Tensor:
    """Blocky random pictures (pixel-art-like), uint8 (n, 3, size, size)."""
    gen = torch.Generator().manual_seed(0)
    small = torch.randint(0, 256, (n, 3, 16, 16), generator=gen, dtype=torch.uint8)
    return small.repeat_interleave(size // 16, 2).repeat_interleave(size // 16, 3).contiguous()


class Images(torch.utils.data.Dataset):
    def __init__(self, data: torch.Tensor) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> torch.Tensor:
        return (self.data[i].float() / 255 - 0.5) / 0.5  # ToTensor + Normalize((0.5,)*3, (0.5,)*3)


def reference_steps(args: argparse.Namespace, device: torch.device) -> tuple[int, float]:
    torch.backends.cudnn.benchmark = True  # pytorch/examples/dcgan sets it too
    torch.manual_seed(0)
    g = Generator(args.size, 100, args.channels).to(device)
    d = Discriminator(args.size, args.channels).to(device)
    opt_g = torch.optim.Adam(g.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(d.parameters(), lr=2e-4, betas=(0.5, 0.999))
    loader = torch.utils.data.DataLoader(
        Images(make_images(IMAGES, args.size)),
        batch_size=args.batch,
        shuffle=True,
        num_workers=2,
        drop_last=True,
    )

    def batches():
        while True:
            yield from loader

    it = batches()

    def step() -> None:
        real = next(it).to(device)
        b = real.shape[0]
        ones, zeros = torch.ones(b, device=device), torch.zeros(b, device=device)
        d.zero_grad()
        F.binary_cross_entropy_with_logits(d(real), ones).backward()
        fake = g(torch.randn(b, 100, device=device))
        F.binary_cross_entropy_with_logits(d(fake.detach()), zeros).backward()
        opt_d.step()
        g.zero_grad()
        F.binary_cross_entropy_with_logits(d(fake), ones).backward()
        opt_g.step()

    return timed(step, args, device)


def ours_steps(args: argparse.Namespace, device: torch.device) -> tuple[int, float]:
    p = from_defaults(
        TrainParams,
        upsample="deconv",  # the pytorch/examples G the reference loop trains
        resolution=args.size,
        channels=args.channels,
        batch_size=args.batch,
        diffaugment="color,translation,cutout" if args.loop == "ours+aug" else "none",
        compile=args.compile,
    )
    t = Trainer(p, make_images(IMAGES, args.size), device)
    return timed(t.step, args, device)


def timed(step, args: argparse.Namespace, device: torch.device) -> tuple[int, float]:
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(args.warmup):
        step()
    sync()
    best = float("inf")
    for _ in range(args.repeats):  # best of a few chunks: other processes on the machine only slow us down
        start = time.perf_counter()
        for _ in range(args.steps):
            step()
        sync()
        best = min(best, time.perf_counter() - start)
    return args.steps * args.batch, best


def model_flops_per_image(args: argparse.Namespace, device: torch.device) -> float:
    """FLOPs of one training step per image: G forward/backward, D three forwards and their backwards."""
    from torch.utils.flop_counter import FlopCounterMode

    p = from_defaults(
        TrainParams,
        upsample="deconv",
        resolution=args.size,
        channels=args.channels,
        batch_size=args.batch,
        diffaugment="none",
    )
    t = Trainer(p, make_images(args.batch, args.size), device)
    t.step()
    with FlopCounterMode(display=False) as counter:
        t.step()
    return counter.get_total_flops() / args.batch


def one(args: argparse.Namespace) -> None:
    """Measure one row in this process and print it as JSON."""
    device = pick_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    images, seconds = (reference_steps if args.loop == "reference" else ours_steps)(args, device)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    row = {"img_per_sec": images / seconds, "peak_mib": peak}
    if device.type == "cuda" and args.loop == "ours":
        row["flops_per_img"] = model_flops_per_image(args, device)
    print(json.dumps(row))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 256])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch", type=int, default=None, help="default: 64 on CUDA, 32 elsewhere")
    ap.add_argument("--channels", type=int, default=None, help="default: 64 on CUDA, 16 elsewhere")
    ap.add_argument("--steps", type=int, default=None, help="timed steps (default: 50 on CUDA, 6 elsewhere)")
    ap.add_argument(
        "--warmup", type=int, default=None, help="untimed steps (default: 10 on CUDA, 2 elsewhere)"
    )
    ap.add_argument("--repeats", type=int, default=3, help="timed chunks of --steps; the best counts")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--compile", action="store_true", help="also torch.compile our G and D")
    ap.add_argument("--peak-tflops", type=float, default=None, help="bf16 peak for MFU, if not in the table")
    ap.add_argument("--loop", help=argparse.SUPPRESS)
    ap.add_argument("--size", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    device = pick_device(args.device)
    cuda = device.type == "cuda"
    args.batch = args.batch or (64 if cuda else 32)
    args.channels = args.channels or (64 if cuda else 16)
    args.steps = args.steps or (50 if cuda else 6)
    args.warmup = args.warmup or (10 if cuda else 2)
    if args.loop:
        one(args)
        return

    name = torch.cuda.get_device_name(device) if cuda else f"cpu, {torch.get_num_threads()} threads"
    peak = args.peak_tflops * 1e12 if args.peak_tflops else None
    if cuda and peak is None:
        peak = next((v for k, v in PEAK_BF16.items() if k in name), None)
    if args.threads:
        torch.set_num_threads(args.threads)
        name = f"cpu, {args.threads} threads" if not cuda else name
    print(
        f"device: {name}; torch {torch.__version__}; batch {args.batch}; channels {args.channels}; "
        f"best of {args.repeats} x {args.steps} steps"
    )
    print(f"{'size':>5}  {'loop':<24} {'img/s':>9} {'peak MiB':>9} {'MFU':>7}")
    ratio = None
    for size in args.sizes:
        rows = {}
        for loop in ("reference", "ours", "ours+aug"):
            cmd = [sys.executable, __file__, "--loop", loop, "--size", str(size)]
            for flag in ("device", "batch", "channels", "steps", "warmup", "repeats", "threads"):
                cmd += [f"--{flag}", str(getattr(args, flag))]
            cmd += ["--compile"] if args.compile else []
            out = subprocess.run(cmd, capture_output=True, text=True, env=os.environ)
            if out.returncode:
                sys.exit(f"{loop} at {size}² failed:\n{out.stderr}")
            rows[loop] = json.loads(out.stdout.strip().splitlines()[-1])
        flops = rows["ours"].get("flops_per_img")
        for loop, label in (
            ("reference", "reference (examples)"),
            ("ours", "ours"),
            ("ours+aug", "ours + DiffAugment"),
        ):
            r = rows[loop]
            mfu = f"{flops * r['img_per_sec'] / peak:7.1%}" if flops and peak else f"{'-':>7}"
            print(f"{size:>5}  {label:<24} {r['img_per_sec']:9.1f} {r['peak_mib']:9.0f} {mfu}")
        ratio = rows["ours"]["img_per_sec"] / rows["reference"]["img_per_sec"]
        print(f"{size:>5}  ours / reference: {ratio:.2f}x")
    print(f"ratio: {ratio:.2f}")


if __name__ == "__main__":
    main()
