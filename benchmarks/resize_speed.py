"""Resize stage vs a naive loop, on a few hundred real-world-sized files.

Generates a mixed set into a temp dir (JPEG up to 4000 px: baseline,
progressive, greyscale; PNG up to 2000 px: RGB and palette), with photo-like
content: smooth colour fields, texture at several scales and sharp-edged
shapes. Then runs, side by side on the same files:

  naive   one process: Image.open, convert("RGB"), ImageOps.pad/fit or resize
          with LANCZOS at full resolution, save PNG
  stage   pipeline.resize.run (reduced JPEG decoding, reducing_gap, workers),
          with 1 worker and with resize.workers (0 = all cores)

and compares every stage output with the naive one (PSNR over all pixels).
The files carry no EXIF rotation, ICC profile or alpha, which the naive loop
would get wrong, so the two outputs differ only by the resampling shortcuts.

    .venv/bin/python benchmarks/resize_speed.py [--n 240] [--mode pad] [--gap 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import resource
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")

import numpy as np
from PIL import Image, ImageDraw, ImageOps

from pipeline import resize
from pipeline.images import write_csv_atomic
from pipeline.params import ResizeParams, from_defaults, params_from_dict, parse_color

ASPECTS = [(4, 3), (3, 2), (16, 9), (1, 1), (3, 4), (2, 3), (9, 16), (5, 4)]


def spec(i: int, rng: np.random.Generator) -> dict:
    """What file i is: size and encoding, drawn like an image search's results."""
    aw, ah = ASPECTS[rng.integers(len(ASPECTS))]
    png = rng.random() < 0.3
    tier = rng.random()
    long_side = (
        int(rng.integers(300, 800))
        if tier < 0.3
        else int(rng.integers(800, 2000))
        if tier < 0.7 or png
        else int(rng.integers(2000, 4001))
    )
    w, h = (long_side, round(long_side * ah / aw)) if aw >= ah else (round(long_side * aw / ah), long_side)
    kind = (
        ("png-p" if rng.random() < 0.25 and long_side < 1000 else "png")
        if png
        else ("jpeg-grey" if rng.random() < 0.05 else "jpeg-prog" if rng.random() < 0.2 else "jpeg")
    )
    return {"name": f"img-{i:04d}", "w": w, "h": h, "kind": kind, "seed": int(rng.integers(1 << 31))}


def photo(w: int, h: int, rng: np.random.Generator) -> Image.Image:
    """Photo-like content: colour fields, texture at several scales, sharp shapes.

    Composed at quarter size and upscaled, so edges are as soft as a phone
    camera's and generating a few hundred files stays quick.
    """
    cw, ch = max(2, w // 4), max(2, h // 4)

    def noise(cells: int, smooth: Image.Resampling) -> Image.Image:
        gw, gh = max(2, round(cw / max(cw, ch) * cells)), max(2, round(ch / max(cw, ch) * cells))
        small = Image.fromarray(rng.integers(0, 256, (gh, gw, 3), dtype=np.uint8))
        return small.resize((cw, ch), smooth)

    img = noise(6, Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(20, 60))):
        x0, y0 = int(rng.integers(0, cw)), int(rng.integers(0, ch))
        x1, y1 = x0 + int(rng.integers(2, cw // 3 + 3)), y0 + int(rng.integers(2, ch // 3 + 3))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        shape = rng.integers(3)
        if shape == 0:
            draw.rectangle((x0, y0, x1, y1), fill=colour)
        elif shape == 1:
            draw.ellipse((x0, y0, x1, y1), fill=colour)
        else:
            draw.line((x0, y0, x1, y1), fill=colour, width=int(rng.integers(1, max(2, cw // 200))))
    # Texture over everything, shapes included, as light and surfaces give real photos.
    img = Image.blend(img, noise(48, Image.Resampling.BICUBIC), 0.3)
    img = Image.blend(img, noise(max(cw, ch) // 2, Image.Resampling.BILINEAR), 0.2)
    return img.resize((w, h), Image.Resampling.BICUBIC)


def make_file(args: tuple[dict, str]) -> str:
    s, folder = args
    rng = np.random.default_rng(s["seed"])
    img = photo(s["w"], s["h"], rng)
    q = int(rng.integers(75, 96))
    if s["kind"] == "jpeg":
        path, kw = f"{s['name']}.jpg", {"quality": q}
    elif s["kind"] == "jpeg-prog":
        path, kw = f"{s['name']}.jpg", {"quality": q, "progressive": True}
    elif s["kind"] == "jpeg-grey":
        img, path, kw = img.convert("L"), f"{s['name']}.jpg", {"quality": q}
    elif s["kind"] == "png-p":
        img, path, kw = img.convert("P", palette=Image.Palette.ADAPTIVE), f"{s['name']}.png", {}
    else:
        path, kw = (
            f"{s['name']}.png",
            {"compress_level": 1},
        )  # quick to write; no faster to decode than level 6
    img.save(Path(folder) / path, **kw)
    return path


def naive(files: list[Path], out: Path, p: ResizeParams) -> None:
    """The loop everyone writes first."""
    bg, size = parse_color(p.background), (p.size, p.size)
    for f in files:
        img = Image.open(f).convert("RGB")
        if p.mode == "pad":
            img = ImageOps.pad(img, size, Image.Resampling.LANCZOS, color=bg)
        elif p.mode == "crop":
            img = ImageOps.fit(img, size, Image.Resampling.LANCZOS)
        else:
            img = img.resize(size, Image.Resampling.LANCZOS)
        img.save(out / f"{f.stem}.png")


@contextmanager
def timed(into: list[tuple[str, float, float]], label: str) -> Iterator[None]:
    """Append (label, wall seconds, CPU seconds of this process and its finished workers)."""

    def cpu() -> float:
        own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime

    t, c = time.perf_counter(), cpu()
    yield
    into.append((label, time.perf_counter() - t, cpu() - c))


def psnr(mse: float) -> float:
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=240, help="files to generate")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mode", default=ResizeParams.mode, choices=["pad", "crop", "fit"])
    ap.add_argument("--size", type=int, default=ResizeParams.size)
    ap.add_argument("--gap", type=float, default=ResizeParams.reducing_gap, help="resize.reducing_gap")
    ap.add_argument("--workers", type=int, default=ResizeParams.workers, help="0 = all cores")
    args = ap.parse_args()

    load_before = os.getloadavg()[0]
    rng = np.random.default_rng(args.seed)
    specs = [spec(i, rng) for i in range(args.n)]
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="resize-bench-") as tmp:
        root = Path(tmp)
        raw = root / "data/raw"
        raw.mkdir(parents=True)
        t = time.perf_counter()
        with ProcessPoolExecutor(cores) as pool:
            names = list(pool.map(make_file, [(s, str(raw)) for s in specs], chunksize=4))
        megapixels = sum(s["w"] * s["h"] for s in specs) / 1e6
        kinds = {k: sum(s["kind"] == k for s in specs) for k in sorted({s["kind"] for s in specs})}
        big = sum(max(s["w"], s["h"]) >= 2000 for s in specs)
        print(
            f"generated {len(names)} files in {time.perf_counter() - t:.0f} s: {megapixels:.0f} Mpx, ", end=""
        )
        print(f"{big} of 2000-4000 px; " + ", ".join(f"{k} {v}" for k, v in kinds.items()))
        write_csv_atomic(
            root / "data/curated/accepted.csv",
            ["id", "file"],
            [{"id": Path(n).stem, "file": n} for n in names],
        )

        p = from_defaults(
            ResizeParams, size=args.size, mode=args.mode, reducing_gap=args.gap, workers=args.workers
        )
        params = params_from_dict({})
        naive_dir = root / "naive"
        naive_dir.mkdir()
        timings: list[tuple[str, float, float]] = []
        with timed(timings, "naive loop (1 process, full-res LANCZOS)"):
            naive([raw / n for n in names], naive_dir, p)
        cwd = os.getcwd()
        os.chdir(root)
        try:
            for label, workers in [
                ("stage, 1 worker", 1),
                (f"stage, {args.workers or cores} workers", args.workers),
            ]:
                with timed(timings, label):
                    resize.run(dataclasses.replace(params, resize=dataclasses.replace(p, workers=workers)))
        finally:
            os.chdir(cwd)

        errors = []
        for n in names:
            a = np.asarray(Image.open(root / "data/processed" / f"{Path(n).stem}.png"), dtype=np.float64)
            b = np.asarray(Image.open(naive_dir / f"{Path(n).stem}.png"), dtype=np.float64)
            errors.append(float(((a - b) ** 2).mean()))

    print()
    print(
        f"resize to {p.size}x{p.size} {p.mode}, filter {p.filter}, reducing_gap {p.reducing_gap}, {cores} cores"
    )
    print(f"{'run':<44} {'seconds':>8} {'images/s':>9} {'cpu s':>7} {'speed-up':>9}")
    base = timings[0][1]
    for label, secs, cpu in timings:
        print(f"{label:<44} {secs:8.2f} {len(names) / secs:9.1f} {cpu:7.1f} {base / secs:8.2f}x")
    print(
        f"(machine load average before / after: {load_before:.1f} / {os.getloadavg()[0]:.1f} on {cores} cores)"
    )
    same = sum(e == 0 for e in errors)
    print(f"PSNR stage vs naive: {psnr(float(np.mean(errors))):.1f} dB over all images, ", end="")
    print(f"worst image {psnr(max(errors)):.1f} dB, {same} images identical (target >= 40)")
    print(f"ratio: {base / timings[-1][1]:.2f}")


if __name__ == "__main__":
    main()
