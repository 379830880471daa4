"""A near-duplicate benchmark set, with ground truth, for benchmarks/dedup_quality.py.

Originals come in three kinds, about a third each:
  photo     noise "photos", landscapes and characters on skies or bricks
  character the built-in synthetic characters, on any background
  flat      shapes, icons and sprites on flat white: where perceptual hashes collide
Each original gets 2 or 3 copies, each made by 1 to 3 of: resize 50-200%,
JPEG quality 30-95, a crop removing up to 8% of each side's length (split at
random between the two sides), brightness +-15%, a small text watermark.
Files are written as an image search would return them; `truth.csv` names the
original of every file in images/. Item i depends only on (seed, i).
"""

from __future__ import annotations

import csv
import io
import math
import random
from pathlib import Path

from PIL import Image, ImageDraw, ImageEnhance, ImageFont

from pipeline import synthetic

TRANSFORMS = ["resize", "jpeg", "crop", "brightness", "watermark"]
MARKS = ["© example.com", "stock", "SAMPLE", "@fan_art", "pics.net", "wallpaper hd"]


def _colour(rng: random.Random) -> tuple[int, int, int]:
    return (rng.randint(0, 230), rng.randint(0, 230), rng.randint(0, 230))


def _shape(draw: ImageDraw.ImageDraw, rng: random.Random, box: tuple[int, int, int, int]) -> None:
    x0, y0, x1, y1 = box
    kind = rng.choice(["ellipse", "rect", "rounded", "triangle", "star", "ring"])
    fill = _colour(rng)
    if kind == "ellipse":
        draw.ellipse(box, fill=fill)
    elif kind == "rect":
        draw.rectangle(box, fill=fill)
    elif kind == "rounded":
        draw.rounded_rectangle(box, radius=max(1, (x1 - x0) // 5), fill=fill)
    elif kind == "ring":
        draw.ellipse(box, outline=fill, width=max(2, (x1 - x0) // 8))
    elif kind == "triangle":
        draw.polygon([((x0 + x1) // 2, y0), (x1, y1), (x0, y1)], fill=fill)
    else:
        cx, cy, r = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2
        n = rng.randint(5, 8)
        pts = []
        for k in range(2 * n):
            rr = r if k % 2 == 0 else r * 0.45
            a = math.pi * k / n
            pts.append((cx + rr * math.sin(a), cy - rr * math.cos(a)))
        draw.polygon(pts, fill=fill)


def _flat(rng: random.Random) -> Image.Image:
    """A clip-art-like picture: one to three shapes or a sprite, centred-ish on white."""
    w = rng.randint(128, 640)
    h = max(96, min(800, int(w * rng.uniform(0.75, 1.33))))
    img = Image.new("RGBA", (w, h), (255, 255, 255, 255))
    if rng.random() < 0.35:
        sprite = synthetic._sprite(rng, rng.choice(list(synthetic.POSES)))
        scale = max(1, int(rng.uniform(0.4, 0.8) * min(h / 16, w / 12)))
        sprite = sprite.resize((12 * scale, 16 * scale), Image.Resampling.NEAREST)
        x = (w - sprite.width) // 2 + rng.randint(-w // 10, w // 10)
        y = (h - sprite.height) // 2 + rng.randint(-h // 10, h // 10)
        img.alpha_composite(sprite, (max(0, x), max(0, y)))
        return img
    draw = ImageDraw.Draw(img)
    for _ in range(rng.choice([1, 1, 2, 3])):
        s = int(min(w, h) * rng.uniform(0.3, 0.7))
        cx = w // 2 + rng.randint(-w // 8, w // 8)
        cy = h // 2 + rng.randint(-h // 8, h // 8)
        _shape(draw, rng, (cx - s // 2, cy - s // 2, cx + s // 2, cy + s // 2))
    return img


def _photo(rng: random.Random) -> Image.Image:
    r = rng.random()
    if r < 0.4:
        return synthetic._offtopic(rng, rng.choice(["photo", "landscape"]))
    img, _ = synthetic._character(rng)
    return img


def original(seed: int, i: int) -> tuple[Image.Image, str]:
    rng = random.Random(f"dedup-bench:{seed}:{i}")
    kind = ["photo", "character", "flat"][i % 3]
    if kind == "photo":
        img = _photo(rng)
    elif kind == "character":
        img, _ = synthetic._character(rng)
    else:
        img = _flat(rng)
    flat = Image.new("RGB", img.size, (255, 255, 255))
    flat.paste(img, mask=img.getchannel("A") if img.mode == "RGBA" else None)
    return flat, kind


def copy_of(img: Image.Image, rng: random.Random) -> tuple[Image.Image, list[str]]:
    ops = rng.sample(TRANSFORMS, k=rng.randint(1, 3))
    out = img
    for op in [o for o in TRANSFORMS if o in ops and o != "jpeg"]:
        if op == "resize":
            f = rng.uniform(0.5, 2.0)
            out = out.resize((max(32, int(out.width * f)), max(32, int(out.height * f))), Image.LANCZOS)
        elif op == "crop":
            cw, ch = int(out.width * rng.uniform(0.02, 0.08)), int(out.height * rng.uniform(0.02, 0.08))
            left, top = rng.randint(0, cw), rng.randint(0, ch)
            out = out.crop((left, top, out.width - (cw - left), out.height - (ch - top)))
        elif op == "brightness":
            out = ImageEnhance.Brightness(out).enhance(rng.uniform(0.85, 1.15))
        elif op == "watermark":
            out = out.copy()
            draw = ImageDraw.Draw(out, "RGBA")
            font = ImageFont.load_default(size=max(8, out.height // 18))
            text = rng.choice(MARKS)
            x = rng.choice([4, out.width // 2])
            y = rng.choice([4, out.height - out.height // 12 - 4])
            draw.text((x, y), text, fill=(128, 128, 128, 200), font=font)
    return out, ops


def _encode(img: Image.Image, rng: random.Random, jpeg_quality: int | None) -> tuple[bytes, str]:
    buf = io.BytesIO()
    if jpeg_quality is None and rng.random() < 0.4:
        img.save(buf, "PNG")
        return buf.getvalue(), "png"
    img.save(buf, "JPEG", quality=jpeg_quality or rng.randint(80, 95))
    return buf.getvalue(), "jpg"


def build(root: Path, originals: int = 2000, seed: int = 0) -> list[dict]:
    """Write the set into `root`/images (reused when root/truth.csv matches); return truth rows."""
    truth_path = root / "truth.csv"
    if truth_path.exists():
        with open(truth_path, newline="") as fh:
            rows = list(csv.DictReader(fh))
        if len({r["original"] for r in rows}) == originals:
            return rows
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(originals):
        img, kind = original(seed, i)
        rng = random.Random(f"dedup-bench-copies:{seed}:{i}")
        oid = f"o{i:05d}"
        versions = [(img, [], None)]
        for _ in range(rng.choice([2, 3])):
            dup, ops = copy_of(img, rng)
            versions.append((dup, ops, rng.randint(30, 95) if "jpeg" in ops else None))
        for k, (im, ops, q) in enumerate(versions):
            data, ext = _encode(im, rng, q)
            name = f"{oid}-{k}.{ext}"
            (root / "images" / name).write_bytes(data)
            rows.append({"file": name, "original": oid, "kind": kind, "transform": "+".join(ops)})
    with open(truth_path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["file", "original", "kind", "transform"])
        writer.writeheader()
        writer.writerows(rows)
    return rows
