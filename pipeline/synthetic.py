"""Procedural, offline stand-in for an image search: pixel-art plumbers and clutter.

Item `i` depends only on (seed, i), so a smaller `count` gives a prefix of a
larger one and ids stay stable. About 15% of items are off-topic pictures and
about 12% are near-duplicates (or byte-exact copies) of earlier characters, so
that dedup and curation have real work. `render(seed, i)` returns the encoded
file and its ground truth; the download stage writes both.
"""

from __future__ import annotations

import io
import random
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont

P_OFFTOPIC = 0.15
P_DUPLICATE = 0.12

# 12x16 sprites. C cap, H hair, S skin, E eye, M moustache, R shirt,
# O overalls, Y button, W glove, B shoe, '.' transparent.
_HEAD = [
    "...CCCCC....",
    "..CCCCCCCCC.",
    "..HHHSSES...",
    ".HSHSSSESSS.",
    ".HSHHSSSMSSS",
    ".HHSSSSMMMM.",
    "...SSSSSSS..",
]
POSES: dict[str, list[str]] = {
    "stand": _HEAD
    + [
        "..RRORRORR..",
        ".RRRORRORRR.",
        "WWRROOOORRWW",
        "WWWOYOOYOWWW",
        "WWOOOOOOOOWW",
        "..OOOOOOOO..",
        "..OOO..OOO..",
        ".BBB....BBB.",
        "BBBB....BBBB",
    ],
    "walk": _HEAD
    + [
        "..RRORRR....",
        ".RRRROORRW..",
        "WRRRROOOOWW.",
        "WWOYOOYOOW..",
        ".OOOOOOOOO..",
        "..OOOO.OOO..",
        ".OOO...OOO..",
        "BBB.....BBB.",
        "BBB......BBB",
    ],
    "jump": [
        "...CCCCC..WW",
        "..CCCCCCCCWW",
        "..HHHSSES.RR",
        ".HSHSSSESSRR",
        ".HSHHSSSMSRR",
        ".HHSSSSMMMR.",
        "...SSSSSSSR.",
        "WWRRORRROR..",
        "WWRRRORROR..",
        "WWRRROOOOO..",
        "..OOYOOYOO..",
        "..OOOOOOOOO.",
        ".OOOOOOOOOOB",
        "BBOOO..OOOBB",
        "BBB.....BBBB",
        "B.........B.",
    ],
}

CAPS = {
    "red": (216, 40, 0),
    "green": (40, 160, 40),
    "purple": (128, 48, 160),
    "yellow": (232, 200, 16),
    "white": (236, 236, 236),
    "orange": (232, 120, 24),
}
OVERALLS = {
    "blue": (32, 56, 200),
    "navy": (24, 32, 96),
    "brown": (120, 72, 24),
    "red": (200, 24, 24),
    "green": (24, 120, 48),
}
SKINS = [(252, 188, 140), (232, 160, 110), (196, 128, 84), (255, 206, 170)]
HAIRS = [(96, 56, 16), (40, 24, 8), (20, 20, 20)]
SHOES = [(120, 64, 16), (72, 40, 8), (40, 40, 40)]
BACKGROUNDS = ["sky", "bricks", "clouds", "gradient", "white", "transparent"]
OFFTOPIC = ["pipe", "mushroom", "landscape", "banner", "photo"]
BANNER_WORDS = ["SALE 50%", "GAME OVER", "PRESS START", "LEVEL 1-1", "FREE SHIPPING", "NEWS"]


@dataclass(frozen=True)
class Item:
    """One generated file with its ground truth (never read by later stages)."""

    id: str
    data: bytes
    ext: str  # "jpg" or "png"
    kind: str  # "character" or "offtopic"
    subject: str  # pose for characters, subject for off-topic
    duplicate_of: str  # id of the original, or ""
    transform: str  # how the duplicate was made, or ""


def item_id(i: int) -> str:
    return f"syn-{i:05d}"


def _rng(seed: int, i: int, salt: str = "") -> random.Random:
    return random.Random(f"mario-gan:{seed}:{i}:{salt}")


def kind_of(seed: int, i: int) -> str:
    """'character', 'offtopic' or 'duplicate', decided by (seed, i) alone."""
    r = _rng(seed, i, "kind").random()
    if r < P_OFFTOPIC:
        return "offtopic"
    if r < P_OFFTOPIC + P_DUPLICATE and i >= 4:
        return "duplicate"
    return "character"


def _jitter(rng: random.Random, c: tuple[int, int, int], amount: int = 14) -> tuple:
    return tuple(max(0, min(255, v + rng.randint(-amount, amount))) for v in c)


def _canvas_size(rng: random.Random) -> tuple[int, int]:
    w = rng.randint(64, 600)
    aspect = rng.uniform(0.75, 1.33)
    h = max(64, min(600, int(w * aspect)))
    return w, h


def _background(rng: random.Random, kind: str, size: tuple[int, int]) -> Image.Image:
    w, h = size
    if kind == "transparent":
        return Image.new("RGBA", size, (0, 0, 0, 0))
    if kind == "white":
        return Image.new("RGBA", size, (255, 255, 255, 255))
    if kind == "gradient":
        a = np.array([rng.randint(0, 255) for _ in range(3)], dtype=np.float32)
        b = np.array([rng.randint(0, 255) for _ in range(3)], dtype=np.float32)
        t = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
        arr = (a * (1 - t) + b * t).repeat(w, axis=1)
        return Image.fromarray(arr.astype(np.uint8), "RGB").convert("RGBA")
    sky = _jitter(rng, (92, 148, 252), 20)
    img = Image.new("RGBA", size, sky + (255,))
    draw = ImageDraw.Draw(img)
    if kind == "clouds":
        for _ in range(rng.randint(2, 5)):
            cx, cy = rng.randint(0, w), rng.randint(0, h // 2)
            rw, rh = rng.randint(w // 12 + 4, w // 5 + 8), rng.randint(h // 20 + 3, h // 10 + 6)
            for dx in (-rw // 2, 0, rw // 2):
                draw.ellipse([cx + dx - rw, cy - rh, cx + dx + rw, cy + rh], fill="white")
    if kind == "bricks":
        brick = _jitter(rng, (200, 76, 12), 20)
        mortar = (40, 16, 0)
        bh = max(6, h // rng.randint(8, 14))
        bw = bh * 2
        img.paste(brick + (255,), (0, 0, w, h))
        for row, y in enumerate(range(0, h, bh)):
            draw.line([(0, y), (w, y)], fill=mortar, width=max(1, bh // 8))
            off = (row % 2) * bw // 2
            for x in range(-bw + off, w, bw):
                draw.line([(x, y), (x, y + bh)], fill=mortar, width=max(1, bh // 8))
    elif rng.random() < 0.5:
        # Ground of bricks under the sky, like a level.
        gh = h // rng.randint(5, 9)
        draw.rectangle([0, h - gh, w, h], fill=_jitter(rng, (200, 76, 12), 20))
        for x in range(0, w, max(4, gh)):
            draw.line([(x, h - gh), (x, h)], fill=(40, 16, 0), width=max(1, gh // 10))
    return img


def _sprite(rng: random.Random, pose: str) -> Image.Image:
    colors = {
        "C": _jitter(rng, CAPS[rng.choice(list(CAPS))]),
        "S": _jitter(rng, rng.choice(SKINS), 8),
        "H": rng.choice(HAIRS),
        "E": (16, 16, 16),
        "M": rng.choice(HAIRS),
        "O": _jitter(rng, OVERALLS[rng.choice(list(OVERALLS))]),
        "Y": (248, 216, 32),
        "W": (248, 248, 248),
        "B": rng.choice(SHOES),
    }
    colors["R"] = colors["C"]
    rows = POSES[pose]
    sprite = Image.new("RGBA", (len(rows[0]), len(rows)), (0, 0, 0, 0))
    px = sprite.load()
    for y, row in enumerate(rows):
        for x, ch in enumerate(row):
            if ch != ".":
                px[x, y] = colors[ch] + (255,)
    if rng.random() < 0.5:
        sprite = sprite.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return sprite


def _character(rng: random.Random) -> tuple[Image.Image, str]:
    size = _canvas_size(rng)
    bg = rng.choice(BACKGROUNDS)
    img = _background(rng, bg, size)
    pose = rng.choice(list(POSES))
    sprite = _sprite(rng, pose)
    w, h = size
    target_h = rng.uniform(0.40, 0.85) * min(h, w * 16 / 12)
    scale = max(1, int(target_h / 16))
    sprite = sprite.resize((12 * scale, 16 * scale), Image.Resampling.NEAREST)
    x = rng.randint(0, max(0, w - sprite.width))
    y = rng.randint(0, max(0, h - sprite.height))
    img.alpha_composite(sprite, (x, y))
    return img, pose


def _offtopic(rng: random.Random, subject: str) -> Image.Image:
    size = _canvas_size(rng)
    w, h = size
    if subject == "photo":
        nrng = np.random.default_rng(rng.getrandbits(32))
        low = nrng.integers(0, 256, (rng.randint(3, 8), rng.randint(3, 8), 3), dtype=np.uint8)
        img = Image.fromarray(low, "RGB").resize(size, Image.Resampling.BICUBIC)
        grain = nrng.normal(0, 12, (h, w, 3))
        arr = np.clip(np.asarray(img, dtype=np.float32) + grain, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, "RGB").filter(ImageFilter.GaussianBlur(0.6)).convert("RGBA")
    if subject == "banner":
        img = Image.new("RGBA", size, _jitter(rng, rng.choice(list(CAPS.values())), 40) + (255,))
        draw = ImageDraw.Draw(img)
        font = ImageFont.load_default(size=max(10, min(w, h) // 6))
        text = rng.choice(BANNER_WORDS)
        xy = (rng.randint(0, max(1, w // 3)), rng.randint(0, max(1, 2 * h // 3)))
        draw.text(xy, text, fill=_jitter(rng, (255, 255, 255), 60), font=font)
        return img
    img = _background(rng, rng.choice(["sky", "clouds", "white", "gradient"]), size)
    draw = ImageDraw.Draw(img)
    unit = max(4, int(min(w, h) * rng.uniform(0.04, 0.12)))
    cx = rng.randint(w // 5, 4 * w // 5)
    if subject == "pipe":
        green, dark = _jitter(rng, (40, 180, 40)), (8, 64, 8)
        top = rng.randint(h // 4, h // 2)
        draw.rectangle([cx - 2 * unit, top + unit, cx + 2 * unit, h], fill=green, outline=dark)
        draw.rectangle([cx - 3 * unit, top, cx + 3 * unit, top + unit], fill=green, outline=dark)
        draw.rectangle([cx - unit, top + unit, cx - unit // 2, h], fill=(160, 240, 120))
    elif subject == "mushroom":
        cy = rng.randint(h // 4, 3 * h // 4)
        cap = _jitter(rng, rng.choice([(216, 40, 0), (40, 160, 40)]))
        draw.rectangle([cx - 2 * unit, cy, cx + 2 * unit, cy + 3 * unit], fill=(252, 220, 170))
        draw.pieslice([cx - 4 * unit, cy - 3 * unit, cx + 4 * unit, cy + 3 * unit], 180, 360, cap)
        for dx in (-2, 0, 2):
            draw.ellipse([cx + dx * unit - unit // 2, cy - 2 * unit, cx + dx * unit + unit // 2,
                          cy - unit], fill="white")  # fmt: skip
        draw.rectangle([cx - unit, cy + unit, cx - unit // 2, cy + 2 * unit], fill="black")
        draw.rectangle([cx + unit // 2, cy + unit, cx + unit, cy + 2 * unit], fill="black")
    else:  # landscape
        for _ in range(rng.randint(1, 3)):
            hx, hr = rng.randint(0, w), rng.randint(w // 6, w // 2)
            draw.ellipse([hx - hr, h - hr, hx + hr, h + hr], fill=_jitter(rng, (56, 160, 56), 30))
        draw.rectangle([0, h - h // 8, w, h], fill=_jitter(rng, (150, 100, 40)))
    return img


def _encode(rng: random.Random, img: Image.Image, allow_png: bool = True) -> tuple[bytes, str]:
    buf = io.BytesIO()
    transparent = img.mode == "RGBA" and img.getextrema()[3][0] < 255
    if allow_png and (transparent or rng.random() < 0.3):
        img.save(buf, "PNG", optimize=False)
        return buf.getvalue(), "png"
    flat = Image.new("RGB", img.size, (255, 255, 255))
    flat.paste(img, mask=img.getchannel("A") if img.mode == "RGBA" else None)
    flat.save(buf, "JPEG", quality=rng.randint(45, 95))
    return buf.getvalue(), "jpg"


def _original(seed: int, i: int) -> tuple[Image.Image, str, bytes, str]:
    rng = _rng(seed, i, "draw")
    img, pose = _character(rng)
    data, ext = _encode(rng, img)
    return img, pose, data, ext


def _near_duplicate(rng: random.Random, img: Image.Image) -> tuple[Image.Image, str]:
    ops = rng.sample(["rescale", "crop", "brighten", "reencode"], k=rng.randint(1, 2))
    out = img.convert("RGBA")
    for op in ops:
        if op == "rescale":
            f = rng.uniform(0.5, 1.6)
            size = (max(32, int(out.width * f)), max(32, int(out.height * f)))
            out = out.resize(size, Image.Resampling.LANCZOS)
        elif op == "crop":
            fx, fy = rng.uniform(0.01, 0.04), rng.uniform(0.01, 0.04)
            dx, dy = int(out.width * fx), int(out.height * fy)
            out = out.crop((dx, dy, out.width - dx, out.height - dy))
        elif op == "brighten":
            rgb = ImageEnhance.Brightness(out.convert("RGB")).enhance(rng.uniform(0.85, 1.15))
            rgb.putalpha(out.getchannel("A"))
            out = rgb
    return out, "+".join(ops)


def _source_of(seed: int, i: int) -> int | None:
    """An earlier original character for duplicate i, or None if there is none."""
    rng = _rng(seed, i, "source")
    for _ in range(16):
        j = rng.randrange(i)
        if kind_of(seed, j) == "character":
            return j
    return None


def render(seed: int, i: int) -> Item:
    """Generate item i of the dataset for `seed`: the file bytes and its ground truth."""
    kind = kind_of(seed, i)
    src = _source_of(seed, i) if kind == "duplicate" else None
    if kind == "offtopic":
        rng = _rng(seed, i, "draw")
        subject = rng.choice(OFFTOPIC)
        data, ext = _encode(rng, _offtopic(rng, subject))
        return Item(item_id(i), data, ext, "offtopic", subject, "", "")
    if src is None:
        _, pose, data, ext = _original(seed, i)
        return Item(item_id(i), data, ext, "character", pose, "", "")
    img, pose, data, ext = _original(seed, src)
    rng = _rng(seed, i, "dup")
    if rng.random() < 0.25:
        # The same file found again on another site: byte-identical.
        return Item(item_id(i), data, ext, "character", pose, item_id(src), "exact")
    dup, how = _near_duplicate(rng, img)
    data, ext = _encode(rng, dup, allow_png="reencode" not in how)
    return Item(item_id(i), data, ext, "character", pose, item_id(src), how)
