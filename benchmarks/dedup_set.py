"""A near-duplicate benchmark set, with ground truth, for benchmarks/dedup_quality.py.

Originals come in ten families, a tenth each (item i is family i % 10), the kinds
of pictures an image search returns:
  photo      noise "photos", landscapes and characters on skies or bricks
  character  the built-in synthetic characters, on any background
  flat       shapes, icons and sprites on flat white: where perceptual hashes collide
  lineart    hairline drawings: outlines, curves and hatching, 1-3 px dark strokes
  icon       flat icons in saturated colours: app tiles, glyphs, badges
  flag       flags: stripes, crosses, cantons, discs; some in pure RGB primaries,
             whose R+G+B is constant (flat in plain grey)
  text       playing cards and text-heavy pictures: quotes, slides, captions
  sprite     pixel-art sprites (the built-in plumbers and random symmetric
             creatures), upscaled with nearest neighbour, alone or as a sheet
  screenshot application windows and game screens, with small text
  alike      pictures that are different but alike, in series of three: one
             character in three poses, one icon in three colours, one drawing with
             one element changed, one card layout with other text. A series shares
             a look, not an original: grouping two of them is a false pair.
Each original gets 2 or 3 copies, each made by 1 to 3 of: resize 50-200%,
JPEG quality 30-95, a crop removing up to 8% of each side's length (split at
random between the two sides), brightness +-15%, a small text watermark; flat
families (not photo or character) may also come back as a GIF (palette) or as
a JPEG stored rotated with an EXIF orientation tag. Files are written as an
image search would return them; `truth.csv` names the original of every file
in images/. Item i depends only on (seed, i).
"""

from __future__ import annotations

import csv
import io
import math
import random
from pathlib import Path

from PIL import Image, ImageDraw, ImageEnhance, ImageFont

from pipeline import synthetic

VERSION = "3"  # bumped when the set changes: an older set on disk is rebuilt
FAMILIES = ["photo", "character", "flat", "lineart", "icon", "flag", "text", "sprite", "screenshot", "alike"]
TRANSFORMS = ["resize", "jpeg", "crop", "brightness", "watermark"]
MARKS = ["© example.com", "stock", "SAMPLE", "@fan_art", "pics.net", "wallpaper hd"]
SATURATED = [
    (255, 0, 0),
    (0, 0, 255),
    (0, 200, 0),
    (255, 204, 0),
    (255, 0, 255),
    (0, 190, 255),
    (255, 120, 0),
    (120, 0, 220),
    (0, 0, 0),
    (0, 140, 70),
    (220, 20, 60),
]
FLAG_COLOURS = [(206, 17, 38), (0, 56, 168), (255, 255, 255), (252, 209, 22), (0, 122, 61), (0, 0, 0)]
PRIMARIES = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]  # R+G+B = 255 for each: flat grey
WORDS = ["the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "level", "world", "press", "start",
         "game", "score", "time", "lives", "coins", "stage", "boss", "power", "star", "flower", "pipe",
         "castle", "princess", "jump", "run", "fire"]  # fmt: skip


def _jitter(rng: random.Random, c: tuple[int, int, int], amount: int = 30) -> tuple[int, int, int]:
    return tuple(max(0, min(255, v + rng.randint(-amount, amount))) for v in c)


def _colour(rng: random.Random) -> tuple[int, int, int]:
    return (rng.randint(0, 230), rng.randint(0, 230), rng.randint(0, 230))


def _font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=max(6, size))


def _star(cx: float, cy: float, r: float, n: int = 5, inner: float = 0.45) -> list[tuple[float, float]]:
    pts = []
    for k in range(2 * n):
        rr = r if k % 2 == 0 else r * inner
        a = math.pi * k / n
        pts.append((cx + rr * math.sin(a), cy - rr * math.cos(a)))
    return pts


def _shape(draw: ImageDraw.ImageDraw, rng: random.Random, box: tuple[int, int, int, int], fill=None) -> None:
    x0, y0, x1, y1 = box
    kind = rng.choice(["ellipse", "rect", "rounded", "triangle", "star", "ring"])
    fill = fill or _colour(rng)
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
        draw.polygon(_star((x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, rng.randint(5, 8)), fill=fill)


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


def _curve(rng: random.Random, w: int, h: int) -> list[tuple[float, float]]:
    """A smooth open curve: a cubic Bézier through four random points."""
    p = [(rng.uniform(0.05, 0.95) * w, rng.uniform(0.05, 0.95) * h) for _ in range(4)]
    out = []
    for k in range(41):
        t = k / 40
        a, b, c, d = (1 - t) ** 3, 3 * t * (1 - t) ** 2, 3 * t * t * (1 - t), t**3
        out.append((a * p[0][0] + b * p[1][0] + c * p[2][0] + d * p[3][0],
                    a * p[0][1] + b * p[1][1] + c * p[2][1] + d * p[3][1]))  # fmt: skip
    return out


def _lineart(rng: random.Random, elements: int | None = None, skip: int | None = None) -> Image.Image:
    """A drawing in thin dark strokes on white (or paper): outlines, curves, hatching.
    `skip` leaves out one element (the `alike` family's "one element changed")."""
    w = rng.randint(200, 900)
    h = max(160, min(1000, int(w * rng.uniform(0.7, 1.4))))
    paper = rng.choice([(255, 255, 255), (255, 255, 255), (250, 246, 236)])
    img = Image.new("RGB", (w, h), paper)
    draw = ImageDraw.Draw(img)
    ink = rng.choice([(0, 0, 0), (30, 30, 30), (20, 40, 120), (90, 60, 40)])
    stroke = rng.choice([1, 1, 2, 3])
    n = elements or rng.randint(4, 9)
    for e in range(n):
        kind = rng.choice(["curve", "curve", "ellipse", "polygon", "hatch", "star"])
        s = int(min(w, h) * rng.uniform(0.15, 0.5))
        cx, cy = (
            rng.randint(s // 2, max(s // 2 + 1, w - s // 2)),
            rng.randint(s // 2, max(s // 2 + 1, h - s // 2)),
        )
        if e == skip:
            continue
        if kind == "curve":
            draw.line(_curve(rng, w, h), fill=ink, width=stroke, joint="curve")
        elif kind == "ellipse":
            draw.ellipse((cx - s // 2, cy - s // 3, cx + s // 2, cy + s // 3), outline=ink, width=stroke)
        elif kind == "polygon":
            k = rng.randint(3, 7)
            pts = [(cx + s / 2 * math.cos(2 * math.pi * j / k + 0.3), cy + s / 2 * math.sin(2 * math.pi * j / k + 0.3))
                   for j in range(k)]  # fmt: skip
            draw.polygon(pts, outline=ink, width=stroke)
        elif kind == "star":
            draw.polygon(_star(cx, cy, s / 2), outline=ink, width=stroke)
        else:
            step = max(4, s // rng.randint(5, 10))
            for x in range(cx - s // 2, cx + s // 2, step):
                draw.line((x, cy - s // 2, x + s // 3, cy + s // 2), fill=ink, width=stroke)
    return img


def _glyph(draw: ImageDraw.ImageDraw, kind: str, box: tuple[int, int, int, int], fill, width: int) -> None:
    x0, y0, x1, y1 = box
    cx, cy, s = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2
    if kind == "star":
        draw.polygon(_star(cx, cy, s), fill=fill)
    elif kind == "heart":
        draw.ellipse((cx - s, cy - s * 0.7, cx, cy + s * 0.1), fill=fill)
        draw.ellipse((cx, cy - s * 0.7, cx + s, cy + s * 0.1), fill=fill)
        draw.polygon([(cx - s * 0.97, cy - s * 0.2), (cx + s * 0.97, cy - s * 0.2), (cx, cy + s)], fill=fill)
    elif kind == "check":
        draw.line([(cx - s * 0.7, cy), (cx - s * 0.15, cy + s * 0.55), (cx + s * 0.75, cy - s * 0.6)],
                  fill=fill, width=width, joint="curve")  # fmt: skip
    elif kind == "plus":
        draw.rectangle((cx - s * 0.2, cy - s * 0.8, cx + s * 0.2, cy + s * 0.8), fill=fill)
        draw.rectangle((cx - s * 0.8, cy - s * 0.2, cx + s * 0.8, cy + s * 0.2), fill=fill)
    elif kind == "arrow":
        draw.polygon([(cx - s * 0.8, cy - s * 0.25), (cx + s * 0.1, cy - s * 0.25), (cx + s * 0.1, cy - s * 0.7),
                      (cx + s * 0.85, cy), (cx + s * 0.1, cy + s * 0.7), (cx + s * 0.1, cy + s * 0.25),
                      (cx - s * 0.8, cy + s * 0.25)], fill=fill)  # fmt: skip
    elif kind == "house":
        draw.polygon(
            [(cx - s * 0.85, cy - s * 0.05), (cx, cy - s * 0.85), (cx + s * 0.85, cy - s * 0.05)], fill=fill
        )
        draw.rectangle((cx - s * 0.6, cy - s * 0.05, cx + s * 0.6, cy + s * 0.8), fill=fill)
    else:  # bell-ish badge: a disc with a ring
        draw.ellipse((cx - s * 0.8, cy - s * 0.8, cx + s * 0.8, cy + s * 0.8), outline=fill, width=width)
        draw.ellipse((cx - s * 0.35, cy - s * 0.35, cx + s * 0.35, cy + s * 0.35), fill=fill)


GLYPHS = ["star", "heart", "check", "plus", "arrow", "house", "badge"]


def _icon(rng: random.Random, colours: tuple | None = None, glyph: str | None = None) -> Image.Image:
    """An app-icon-like picture: a saturated tile (or none) with a glyph, on white."""
    side = rng.choice([64, 96, 128, 180, 256, 512])
    w = h = side
    if rng.random() < 0.3:  # a wider badge / banner icon
        w = int(side * rng.uniform(1.2, 1.8))
    a, b = colours or [_jitter(rng, c) for c in rng.sample(SATURATED, 2)]
    img = Image.new("RGB", (w, h), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    m = int(min(w, h) * rng.uniform(0.04, 0.1))
    tile = rng.choice(["rounded", "circle", "none"])
    if tile == "rounded":
        draw.rounded_rectangle((m, m, w - m, h - m), radius=min(w, h) // 5, fill=a)
    elif tile == "circle":
        draw.ellipse((w // 2 - h // 2 + m, m, w // 2 + h // 2 - m, h - m), fill=a)
    fg = (255, 255, 255) if tile != "none" and rng.random() < 0.6 else b
    if tile == "none":
        fg = a
    g = int(min(w, h) * rng.uniform(0.22, 0.38))
    cx = w // 2 + rng.randint(-w // 12, w // 12)
    cy = h // 2 + rng.randint(-h // 12, h // 12)
    _glyph(draw, glyph or rng.choice(GLYPHS), (cx - g, cy - g, cx + g, cy + g), fg, max(2, g // 4))
    if rng.random() < 0.5:  # a notification dot, a second glyph or a label
        r = int(min(w, h) * rng.uniform(0.08, 0.16))
        x, y = rng.choice([(w - m - r, m + r), (m + r, m + r), (w - m - r, h - m - r)])
        extra = rng.random()
        if extra < 0.4:
            draw.ellipse((x - r, y - r, x + r, y + r), fill=_jitter(rng, rng.choice(SATURATED)))
        elif extra < 0.7:
            _glyph(
                draw, rng.choice(GLYPHS), (x - r, y - r, x + r, y + r), _jitter(rng, rng.choice(SATURATED)), 2
            )
        else:
            draw.text((w // 2, h - m), rng.choice(WORDS).upper(), fill=fg if tile == "none" else a,
                      font=_font(h // 8), anchor="md")  # fmt: skip
    return img


def _flag(rng: random.Random) -> Image.Image:
    w = rng.randint(150, 900)
    h = int(w * rng.choice([2 / 3, 1 / 2, 3 / 5, 10 / 19]))
    palette = PRIMARIES + [(255, 255, 255)] if rng.random() < 0.3 else FLAG_COLOURS
    if rng.random() < 0.7:
        c = [_jitter(rng, x, 40) for x in rng.sample(palette, 3)]
    else:  # pure primaries: R+G+B is the same everywhere
        c = rng.sample(PRIMARIES, 3)
    img = Image.new("RGB", (w, h), c[0])
    u, v = rng.uniform(0.25, 0.42), rng.uniform(0.58, 0.75)  # band edges
    draw = ImageDraw.Draw(img)
    kind = rng.choice(["h3", "v3", "h2", "nordic", "canton", "disc", "diagonal", "star"])
    if kind == "h3":
        draw.rectangle((0, int(u * h), w, int(v * h)), fill=c[1])
        draw.rectangle((0, int(v * h), w, h), fill=c[2])
    elif kind == "v3":
        draw.rectangle((int(u * w), 0, int(v * w), h), fill=c[1])
        draw.rectangle((int(v * w), 0, w, h), fill=c[2])
    elif kind == "h2":
        draw.rectangle((0, int(h * rng.uniform(0.35, 0.65)), w, h), fill=c[1])
    elif kind == "nordic":
        t = int(h * rng.uniform(0.1, 0.3))
        x = int(w * rng.uniform(0.28, 0.5))
        draw.rectangle((0, h // 2 - t // 2, w, h // 2 + t // 2), fill=c[1])
        draw.rectangle((x - t // 2, 0, x + t // 2, h), fill=c[1])
        if rng.random() < 0.5:
            t2 = t // 2
            draw.rectangle((0, h // 2 - t2 // 2, w, h // 2 + t2 // 2), fill=c[2])
            draw.rectangle((x - t2 // 2, 0, x + t2 // 2, h), fill=c[2])
    elif kind == "canton":
        stripes = rng.choice([5, 7, 9, 13])
        for k in range(1, stripes, 2):
            draw.rectangle((0, k * h // stripes, w, (k + 1) * h // stripes), fill=c[1])
        draw.rectangle((0, 0, int(w * 0.4), int(h * (stripes // 2 + 1) / stripes)), fill=c[2])
        for k in range(rng.randint(1, 12)):
            x = int(w * 0.4 * (k % 4 + 0.5) / 4)
            y = int(h * 0.5 * (k // 4 + 0.5) / 3)
            draw.polygon(_star(x, y, h / 24), fill=(255, 255, 255))
    elif kind == "disc":
        r = int(h * rng.uniform(0.2, 0.32))
        cx = int(w * rng.uniform(0.35, 0.55))
        draw.ellipse((cx - r, h // 2 - r, cx + r, h // 2 + r), fill=c[1])
    elif kind == "diagonal":
        draw.polygon([(0, h), (w, 0), (w, h)], fill=c[1])
        t = h // 8
        draw.line((0, h, w, 0), fill=c[2], width=t)
    else:
        draw.rectangle((0, h // 2, w, h), fill=c[1])
        draw.polygon(
            _star(w * rng.uniform(0.2, 0.5), h / 2, h * rng.uniform(0.15, 0.3), rng.randint(5, 7)), fill=c[2]
        )
    return img


SUITS = {"hearts": (200, 0, 0), "diamonds": (200, 0, 0), "spades": (0, 0, 0), "clubs": (0, 0, 0)}


def _suit(draw: ImageDraw.ImageDraw, suit: str, cx: float, cy: float, s: float) -> None:
    fill = SUITS[suit]
    if suit == "hearts":
        _glyph(draw, "heart", (int(cx - s), int(cy - s), int(cx + s), int(cy + s)), fill, 2)
    elif suit == "diamonds":
        draw.polygon([(cx, cy - s), (cx + s * 0.7, cy), (cx, cy + s), (cx - s * 0.7, cy)], fill=fill)
    elif suit == "spades":
        draw.polygon([(cx, cy - s), (cx + s * 0.9, cy + s * 0.2), (cx - s * 0.9, cy + s * 0.2)], fill=fill)
        draw.ellipse((cx - s * 0.9, cy - s * 0.2, cx, cy + s * 0.5), fill=fill)
        draw.ellipse((cx, cy - s * 0.2, cx + s * 0.9, cy + s * 0.5), fill=fill)
        draw.polygon([(cx, cy), (cx + s * 0.3, cy + s), (cx - s * 0.3, cy + s)], fill=fill)
    else:
        for dx, dy in ((0, -0.45), (-0.45, 0.15), (0.45, 0.15)):
            r = s * 0.42
            draw.ellipse((cx + dx * s - r, cy + dy * s - r, cx + dx * s + r, cy + dy * s + r), fill=fill)
        draw.polygon([(cx, cy), (cx + s * 0.3, cy + s), (cx - s * 0.3, cy + s)], fill=fill)


def _card(rng: random.Random, rank: str | None = None, suit: str | None = None) -> Image.Image:
    """A playing card: rank in two corners, suit pips, on a table or on white."""
    w = rng.randint(160, 500)
    h = int(w * 1.4)
    bg = rng.choice([(255, 255, 255), _jitter(rng, (20, 110, 50), 40), _jitter(rng, (120, 20, 30), 40)])
    mx, my = int(w * rng.uniform(0.03, 0.3)), int(h * rng.uniform(0.03, 0.2))
    img = Image.new("RGB", (w + 2 * mx, h + 2 * my), bg)
    draw = ImageDraw.Draw(img)
    x0, y0 = mx + rng.randint(-mx // 2, mx // 2), my + rng.randint(-my // 2, my // 2)
    face = _jitter(rng, (250, 248, 240), 8)
    draw.rounded_rectangle(
        (x0, y0, x0 + w, y0 + h),
        radius=int(w * rng.uniform(0.03, 0.12)),
        fill=face,
        outline=_jitter(rng, (60, 60, 60)),
    )
    rank = rank or rng.choice(["A", "2", "3", "4", "5", "6", "7", "8", "9", "10", "J", "Q", "K"])
    suit = suit or rng.choice(list(SUITS))
    font = _font(int(w * rng.uniform(0.1, 0.18)))
    draw.text((x0 + w // 16, y0 + h // 30), rank, fill=SUITS[suit], font=font)
    draw.text((x0 + w - w // 16, y0 + h - h // 30), rank, fill=SUITS[suit], font=font, anchor="rd")
    if rank in "JQK":  # a court card: a framed picture
        draw.rectangle(
            (x0 + w // 5, y0 + h // 6, x0 + 4 * w // 5, y0 + 5 * h // 6), outline=SUITS[suit], width=2
        )
        for _ in range(rng.randint(3, 6)):
            cx, cy = x0 + rng.randint(w // 4, 3 * w // 4), y0 + rng.randint(h // 5, 4 * h // 5)
            _shape(
                draw,
                rng,
                (cx - w // 10, cy - w // 10, cx + w // 10, cy + w // 10),
                _jitter(rng, rng.choice(SATURATED)),
            )
    pips = {"A": 1, "J": 2, "Q": 2, "K": 2}.get(rank) or int(rank)
    big = rng.uniform(0.8, 1.2)
    cols = 1 if pips < 4 else 2
    rows = -(-pips // cols)
    for k in range(pips):
        cx = x0 + w * ((k % cols) + 1) / (cols + 1)
        cy = y0 + h * (k // cols + 1) / (rows + 1)
        _suit(draw, suit, cx, cy, big * w / (10 if pips > 1 else 4))
    return img


def _words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def _textual(rng: random.Random, text: list[str] | None = None) -> Image.Image:
    """A text-heavy picture: a quote, a slide or a captioned notice."""
    w = rng.randint(300, 1000)
    h = int(w * rng.uniform(0.5, 1.0))
    bg = rng.choice(
        [(255, 255, 255), (250, 250, 240), _jitter(rng, (30, 30, 40)), _jitter(rng, rng.choice(SATURATED))]
    )
    fg = _jitter(rng, (255, 255, 255) if sum(bg) < 400 else (20, 20, 20), 20)
    img = Image.new("RGB", (w, h), bg)
    draw = ImageDraw.Draw(img)
    size = max(10, h // rng.randint(8, 16))
    font = _font(size)
    y = int(h * rng.uniform(0.03, 0.2))
    if rng.random() < 0.5:  # a title bar
        draw.rectangle((0, 0, w, size * 2), fill=_jitter(rng, rng.choice(SATURATED)))
        draw.text((w // 20, size // 3), _words(rng, 3).upper(), fill=(255, 255, 255), font=_font(size))
        y = size * 3
    lines = text or [_words(rng, rng.randint(3, 7)) for _ in range(rng.randint(3, 8))]
    align = rng.choice(["la", "ma"])
    x = w // 2 if align == "ma" else int(w * rng.uniform(0.03, 0.15))
    if rng.random() < 0.4:  # a picture or a coloured panel beside or under the text
        px = rng.randint(w // 2, 3 * w // 4)
        _shape(draw, rng, (px, h // 3, px + w // 5, h // 3 + w // 5), _jitter(rng, rng.choice(SATURATED)))
    for k, line in enumerate(lines):
        if y > h - size:
            break
        f = font if k or rng.random() < 0.5 else _font(int(size * 1.6))
        draw.text((x, y), line, fill=fg, font=f, anchor=align)
        y += int(size * rng.uniform(1.3, 1.7))
    return img


def _text(rng: random.Random) -> Image.Image:
    return _card(rng) if rng.random() < 0.4 else _textual(rng)


def _creature(rng: random.Random) -> Image.Image:
    """A random left-right symmetric pixel-art creature (space-invader style), RGBA."""
    cw, ch = rng.choice([5, 6, 8]), rng.choice([8, 10, 12])
    palette = rng.sample(SATURATED[:8], 2) + [(0, 0, 0)]
    img = Image.new("RGBA", (2 * cw, ch), (0, 0, 0, 0))
    px = img.load()
    for y in range(ch):
        for x in range(cw):
            if rng.random() < 0.55:
                c = palette[0] if rng.random() < 0.7 else rng.choice(palette[1:])
                px[x, y] = px[2 * cw - 1 - x, y] = c + (255,)
    return img


def _sprite_picture(
    rng: random.Random, pose: str | None = None, colours_rng: random.Random | None = None
) -> Image.Image:
    """Pixel art, nearest-neighbour upscaled: one sprite on a flat colour, or a sheet."""
    bg = rng.choice(
        [
            (255, 255, 255),
            (0, 0, 0),
            _jitter(rng, (92, 148, 252), 40),
            _jitter(rng, rng.choice(SATURATED), 60),
        ]
    )
    if pose is None and rng.random() < 0.3:  # a sprite sheet
        cols, rows = rng.randint(2, 5), rng.randint(1, 3)
        scale = rng.randint(2, 6)
        cell = 18 * scale
        img = Image.new("RGBA", (cols * cell, rows * cell), bg + (255,))
        for k in range(cols * rows):
            s = (
                _creature(rng)
                if rng.random() < 0.5
                else synthetic._sprite(rng, rng.choice(list(synthetic.POSES)))
            )
            s = s.resize((s.width * scale, s.height * scale), Image.Resampling.NEAREST)
            img.alpha_composite(
                s, ((k % cols) * cell + (cell - s.width) // 2, (k // cols) * cell + (cell - s.height) // 2)
            )
        return img
    if pose is None:
        s = (
            _creature(rng)
            if rng.random() < 0.4
            else synthetic._sprite(rng, rng.choice(list(synthetic.POSES)))
        )
    else:
        s = synthetic._sprite(colours_rng or rng, pose)
    scale = rng.randint(4, 24)
    s = s.resize((s.width * scale, s.height * scale), Image.Resampling.NEAREST)
    left, top, right, bottom = (rng.randint(0, 5) * scale for _ in range(4))
    img = Image.new("RGBA", (s.width + left + right, s.height + top + bottom), bg + (255,))
    img.alpha_composite(s, (left, top))
    if rng.random() < 0.4:  # pixel-art ground or a second, smaller sprite
        g = _creature(rng)
        g = g.resize((g.width * max(1, scale // 2), g.height * max(1, scale // 2)), Image.Resampling.NEAREST)
        img.alpha_composite(g, (rng.randint(0, max(0, img.width - g.width)), max(0, img.height - g.height)))
    return img


def _screenshot(rng: random.Random) -> Image.Image:
    """An application window (title bar, sidebar, text, buttons) or a game screen with a HUD."""
    w = rng.choice([640, 800, 1024, 1280])
    h = int(w * rng.choice([0.5625, 0.625, 0.75]))
    if rng.random() < 0.4:
        img = synthetic._background(rng, rng.choice(["sky", "clouds"]), (w, h))
        s = synthetic._sprite(rng, rng.choice(list(synthetic.POSES)))
        scale = max(2, h // 80)
        s = s.resize((12 * scale, 16 * scale), Image.Resampling.NEAREST)
        img.alpha_composite(s, (rng.randint(0, w - s.width), rng.randint(h // 2, h - s.height)))
        draw = ImageDraw.Draw(img)
        font = _font(h // 24)
        hud = [f"SCORE {rng.randint(0, 999999):06d}", f"COINS x{rng.randint(0, 99):02d}", "WORLD 1-1",
               f"TIME {rng.randint(0, 400)}"]  # fmt: skip
        for k, t in enumerate(hud):
            draw.text((w * k // 4 + 10, 10), t, fill=(255, 255, 255), font=font)
        return img.convert("RGB")
    theme = rng.choice([((240, 240, 240), (30, 30, 30)), ((32, 33, 36), (220, 220, 220))])
    img = Image.new("RGB", (w, h), theme[0])
    draw = ImageDraw.Draw(img)
    accent = rng.choice(SATURATED[:8])
    bar = h // 16
    draw.rectangle(
        (0, 0, w, bar), fill=_jitter(rng, rng.choice(SATURATED + [(60, 60, 70), (20, 20, 20)]), 40)
    )
    for k in range(3):
        draw.ellipse((10 + k * bar, bar // 4, 10 + k * bar + bar // 2, bar // 4 + bar // 2),
                     fill=[(255, 95, 86), (255, 189, 46), (39, 201, 63)][k])  # fmt: skip
    side = int(w * rng.uniform(0.15, 0.3))
    draw.rectangle((0, bar, side, h), fill=tuple(max(0, c - 18) for c in theme[0]))
    font = _font(max(9, h // 45))
    for k in range(rng.randint(6, 14)):
        draw.text((12, bar + 12 + k * h // 22), _words(rng, rng.randint(1, 3)), fill=theme[1], font=font)
    y = bar + 20
    while y < h - h // 10:
        draw.text((side + 20, y), _words(rng, rng.randint(4, 12)), fill=theme[1], font=font)
        y += h // 28
        if rng.random() < 0.2:
            ph = rng.randint(h // 8, h // 3)
            draw.rectangle((side + 20, y, side + 20 + int(ph * 1.5), y + ph), fill=_colour(rng))
            y += ph + 10
    bx = side + 20
    for _ in range(rng.randint(1, 3)):
        draw.rounded_rectangle((bx, h - h // 12, bx + w // 8, h - h // 40), radius=6, fill=accent)
        bx += w // 7
    return img


def _alike(seed: int, j: int) -> Image.Image:
    """Variant j % 3 of series j // 3: alike to the other two, a copy of neither."""
    series, variant = divmod(j, 3)
    base = random.Random(f"dedup-bench-alike:{seed}:{series}")
    kind = base.choice(["pose", "recolour", "drawing", "card", "text"])
    if kind == "pose":
        colours = random.Random(base.random())
        pose = list(synthetic.POSES)[variant % len(synthetic.POSES)]
        return _sprite_picture(random.Random(base.random()), pose=pose, colours_rng=colours)
    if kind == "recolour":
        glyph = base.choice(GLYPHS)
        colours = base.sample(SATURATED, 6)
        state = base.random()
        return _icon(
            random.Random(state), colours=(colours[2 * variant], colours[2 * variant + 1]), glyph=glyph
        )
    if kind == "drawing":
        n = base.randint(5, 9)
        return _lineart(random.Random(base.random()), elements=n, skip=variant)
    if kind == "card":
        suit = base.choice(list(SUITS))
        ranks = base.sample(["2", "3", "4", "5", "6", "7", "8", "9", "10", "J", "Q", "K", "A"], 3)
        return _card(random.Random(base.random()), rank=ranks[variant], suit=suit)
    lines = [_words(base, base.randint(3, 7)) for _ in range(base.randint(3, 6))]
    lines[base.randrange(len(lines))] = _words(random.Random(f"{series}:{variant}"), 5)
    return _textual(random.Random(base.random()), text=lines)


def original(seed: int, i: int) -> tuple[Image.Image, str]:
    rng = random.Random(f"dedup-bench:{seed}:{i}")
    kind = FAMILIES[i % len(FAMILIES)]
    if kind == "photo":
        img = _photo(rng)
    elif kind == "character":
        img, _ = synthetic._character(rng)
    elif kind == "flat":
        img = _flat(rng)
    elif kind == "lineart":
        img = _lineart(rng)
    elif kind == "icon":
        img = _icon(rng)
    elif kind == "flag":
        img = _flag(rng)
    elif kind == "text":
        img = _text(rng)
    elif kind == "sprite":
        img = _sprite_picture(rng)
    elif kind == "screenshot":
        img = _screenshot(rng)
    else:
        img = _alike(seed, i // len(FAMILIES))
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


def _encode(
    img: Image.Image, rng: random.Random, jpeg_quality: int | None, kind: str
) -> tuple[bytes, str, str]:
    """The file bytes, extension and format note ('', 'gif' or 'exif')."""
    buf = io.BytesIO()
    drawn = kind not in ("photo", "character")
    r = rng.random()
    if drawn and jpeg_quality is None and r < 0.12:
        img.convert("P", palette=Image.Palette.ADAPTIVE, colors=rng.choice([16, 64, 256])).save(buf, "GIF")
        return buf.getvalue(), "gif", "gif"
    if drawn and r > 0.92:
        # Stored sideways with EXIF orientation 6 (rotate 90° clockwise to view), as phones do.
        exif = Image.Exif()
        exif[0x0112] = 6
        img.transpose(Image.Transpose.ROTATE_90).save(
            buf, "JPEG", quality=jpeg_quality or rng.randint(80, 95), exif=exif.tobytes()
        )
        return buf.getvalue(), "jpg", "exif"
    if jpeg_quality is None and r < 0.4:
        img.save(buf, "PNG")
        return buf.getvalue(), "png", ""
    img.save(buf, "JPEG", quality=jpeg_quality or rng.randint(80, 95))
    return buf.getvalue(), "jpg", ""


def build(root: Path, originals: int = 2000, seed: int = 0) -> list[dict]:
    """Write the set into `root`/images (reused when root/truth.csv matches); return truth rows."""
    truth_path = root / "truth.csv"
    if truth_path.exists() and (root / "VERSION").exists() and (root / "VERSION").read_text() == VERSION:
        with open(truth_path, newline="") as fh:
            rows = list(csv.DictReader(fh))
        if len({r["original"] for r in rows}) == originals:
            return rows
    (root / "images").mkdir(parents=True, exist_ok=True)
    for old in (root / "images").iterdir():
        old.unlink()
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
            data, ext, note = _encode(im, rng, q, kind)
            name = f"{oid}-{k}.{ext}"
            (root / "images" / name).write_bytes(data)
            rows.append(
                {
                    "file": name,
                    "original": oid,
                    "kind": kind,
                    "transform": "+".join(ops + [note] * bool(note)),
                }
            )
    with open(truth_path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["file", "original", "kind", "transform"])
        writer.writeheader()
        writer.writerows(rows)
    (root / "VERSION").write_text(VERSION)
    return rows
