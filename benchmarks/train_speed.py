"""Training speed: pipeline.trainer.Trainer against a pytorch/examples-style DCGAN loop.

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
gives MFU: the model FLOPs of our step (counted once with torch's
FlopCounterMode: G forward and backward, D's three forwards and their
backwards) times img/s, over the GPU's dense bf16 peak from PEAK_BF16_TFLOPS
(the entry used is printed). Every row uses the same FLOP count, so MFU
compares useful work. Each row is the best of `--repeats` timed chunks, since
other processes can only slow a run down. Ends with `ratio: X`, ours /
reference at the last size (256² by default). `--json PATH` also writes the
figures behind the table (benchmarks/gpu_check.py reads them).

    python benchmarks/train_speed.py                     # 64² and 256², auto device
    python benchmarks/train_speed.py --sizes 256 --steps 100 --channels 64

Imports only torch and the project's own model and training modules.
"""

from __future__ import annotations

import argparse
import json
import os
import re
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
from pipeline.tensors import pick_device
from pipeline.trainer import Trainer

IMAGES = 300  # about the size of a curated Mario set
# Dense (no sparsity) bf16 tensor-core peaks in TFLOPS, from the vendors' datasheets; where a
# datasheet gives "X | 2X" or "2X with sparsity", X is taken. GeForce cards: bf16 with fp32
# accumulate. The key is matched as a whole word in torch.cuda.get_device_name(), longest key first.
PEAK_BF16_TFLOPS = {
    "H200 NVL": 835.0,  # NVIDIA H200 NVL datasheet: 1,671 with sparsity
    "H200": 989.0,  # NVIDIA H200 SXM datasheet: 1,979 with sparsity
    "GH200": 989.0,  # NVIDIA GH200 datasheet: 1,979 with sparsity
    "H100 NVL": 835.0,  # NVIDIA H100 NVL datasheet: 1,671 with sparsity
    "H100 PCIe": 756.0,  # NVIDIA H100 PCIe datasheet: 1,513 with sparsity
    "H100": 989.0,  # NVIDIA H100 SXM datasheet: 1,979 with sparsity
    "A100": 312.0,  # NVIDIA A100 datasheet (SXM and PCIe): 312 | 624
    "L40S": 362.0,  # NVIDIA L40S datasheet: 362.05 | 733
    "L40": 181.0,  # NVIDIA L40 datasheet: 181.05 | 362.1
    "L4": 121.0,  # NVIDIA L4 datasheet: 242 with sparsity
    "A40": 149.7,  # NVIDIA A40 datasheet: 149.7 | 299.4
    "A10": 125.0,  # NVIDIA A10 datasheet: 125 | 250
    "RTX A6000": 154.8,  # NVIDIA RTX A6000 datasheet: 154.8 | 309.7
    "RTX 4090": 165.2,  # Ada Lovelace architecture whitepaper, GeForce RTX 4090: 165.2 | 330.4
    "RTX 3090": 71.0,  # Ampere GA102 whitepaper, GeForce RTX 3090: 71 | 142
}


def peak_bf16(device_name: str) -> tuple[str, float] | None:
    """(table key, peak FLOP/s) for a CUDA device name, or None when the table has no entry for it."""
    for key in sorted(PEAK_BF16_TFLOPS, key=len, reverse=True):
        if re.search(rf"(?<!\w){re.escape(key)}(?!\w)", device_name):
            return key, PEAK_BF16_TFLOPS[key] * 1e12
    return None


LOOPS = {"reference": "reference (examples)", "ours": "ours", "ours+aug": "ours + DiffAugment"}


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
    result = timed(t.step, args, device)
    if args.profile:
        try:
            prof = profile_steps(t.step, device)
        except Exception as exc:  # e.g. no CUPTI: the speed figures still count
            prof = {"error": f"{type(exc).__name__}: {exc}"}
        args.profile.write_text(json.dumps(prof, indent=2) + "\n")
    return result


# Where a step's time goes, by the op that launched the kernels (self time, so nothing counts twice).
CATEGORIES = {
    "convolutions": ("conv",),
    "BatchNorm": ("batch_norm",),
    "Adam": ("adam",),
    "upsampling": ("upsample",),
    "DiffAugment indexing": ("gather", "scatter"),
    "copies and layout": ("copy_", "contiguous", "clone", "to_copy"),
}


def profile_steps(step, device: torch.device, steps: int = 5) -> dict:
    """The 25 costliest ops of a few steps (device time on CUDA, CPU time elsewhere) and shares by kind."""
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        if cuda:
            torch.cuda.synchronize()
    # CPU-side ops only: on CUDA each kernel's time is in its launching op's self device time, and the
    # kernels' own rows would count it again.
    events = [e for e in prof.key_averages() if str(getattr(e, "device_type", "CPU")).endswith("CPU")]

    def self_time(e) -> float:
        if not cuda:
            return e.self_cpu_time_total
        return getattr(e, "self_device_time_total", None) or getattr(e, "self_cuda_time_total", 0.0)

    total = sum(self_time(e) for e in events) or 1.0
    shares = dict.fromkeys([*CATEGORIES, "other"], 0.0)
    for e in events:
        name = e.key.lower()
        kind = next((k for k, words in CATEGORIES.items() if any(w in name for w in words)), "other")
        shares[kind] += self_time(e) / total
    top = sorted(events, key=self_time, reverse=True)[:25]
    return {
        "clock": "device" if cuda else "cpu",
        "steps": steps,
        "ms_per_step": total / 1000 / steps,
        "shares": shares,
        "top": [{"op": e.key, "share": self_time(e) / total, "calls": e.count} for e in top],
    }


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
    if args.loop == "ours":
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
    ap.add_argument("--json", type=Path, help="also write the table's figures to this JSON file")
    ap.add_argument(
        "--profile",
        type=Path,
        help="profile a few steps of ours at the last size; JSON of where the time goes",
    )
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
    if args.threads and not cuda:
        name = f"cpu, {args.threads} threads"
    peak_entry = peak_bf16(name) if cuda else None
    if args.peak_tflops:
        peak_entry = ("--peak-tflops", args.peak_tflops * 1e12)
    peak = peak_entry[1] if peak_entry else None
    print(
        f"device: {name}; torch {torch.__version__}; batch {args.batch}; channels {args.channels}; "
        f"best of {args.repeats} x {args.steps} steps"
    )
    if peak_entry:
        print(f"MFU against the bf16 peak of {peak_entry[0]}: {peak / 1e12:.1f} TFLOPS (dense)")
    elif cuda:
        print(f"MFU: no bf16 peak known for {name!r}; pass --peak-tflops")
    else:
        print("MFU: on CUDA only")
    print(f"{'size':>5}  {'loop':<24} {'img/s':>9} {'peak MiB':>9} {'MFU':>7}")
    report = {
        "device": name,
        "torch": torch.__version__,
        "batch": args.batch,
        "channels": args.channels,
        "steps": args.steps,
        "repeats": args.repeats,
        "peak_entry": peak_entry[0] if peak_entry else None,
        "peak_bf16_tflops": peak / 1e12 if peak else None,
        "rows": [],
        "ratios": {},
    }
    ratio = None
    for size in args.sizes:
        rows = {}
        for loop in LOOPS:
            cmd = [sys.executable, __file__, "--loop", loop, "--size", str(size)]
            for flag in ("device", "batch", "channels", "steps", "warmup", "repeats", "threads"):
                cmd += [f"--{flag}", str(getattr(args, flag))]
            cmd += ["--compile"] if args.compile else []
            if args.profile and loop == "ours" and size == args.sizes[-1]:
                cmd += ["--profile", str(args.profile)]
            out = subprocess.run(cmd, capture_output=True, text=True, env=os.environ)
            if out.returncode:
                sys.exit(f"{loop} at {size}² failed:\n{out.stderr}")
            rows[loop] = json.loads(out.stdout.strip().splitlines()[-1])
        flops = rows["ours"].get("flops_per_img")
        for loop, label in LOOPS.items():
            r = rows[loop]
            mfu = flops * r["img_per_sec"] / peak if flops and peak else None
            report["rows"].append({"size": size, "loop": loop, **r, "flops_per_img": flops, "mfu": mfu})
            shown = f"{mfu:7.1%}" if mfu is not None else f"{'-':>7}"
            print(f"{size:>5}  {label:<24} {r['img_per_sec']:9.1f} {r['peak_mib']:9.0f} {shown}")
        ratio = rows["ours"]["img_per_sec"] / rows["reference"]["img_per_sec"]
        report["ratios"][str(size)] = ratio
        print(f"{size:>5}  ours / reference: {ratio:.2f}x")
    if flops:
        print(f"model FLOPs per image and step at {args.sizes[-1]}²: {flops / 1e9:.3g} G (FlopCounterMode)")
    report["ratio"] = ratio
    if args.profile:
        prof = report["profile"] = json.loads(args.profile.read_text())
    if args.profile and "error" in prof:
        print(f"profile of ours at {args.sizes[-1]}² failed: {prof['error']}")
    elif args.profile:
        shares = ", ".join(f"{k} {v:.0%}" for k, v in sorted(prof["shares"].items(), key=lambda kv: -kv[1]))
        print(
            f"ours at {args.sizes[-1]}², {prof['ms_per_step']:.1f} ms of {prof['clock']} time a step: {shares}"
        )
        for row in prof["top"][:10]:
            print(f"  {row['share']:6.1%}  {row['op']} ({row['calls']} calls)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.json.with_suffix(".tmp")
        tmp.write_text(json.dumps(report, indent=2) + "\n")
        tmp.replace(args.json)
    print(f"ratio: {ratio:.2f}")


if __name__ == "__main__":
    main()
