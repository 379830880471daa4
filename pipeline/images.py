"""Shared image and file I/O: every stage that opens or writes images uses this.

Loading is strict: a file that is empty, not an image, truncated or a
decompression bomb raises ImageError with a reason, never returns a
half-decoded picture. Writing is atomic (temp file + rename), so an
interrupted stage never leaves a corrupt output behind.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import os
import tempfile
import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from PIL import Image, ImageDraw, ImageOps

from pipeline.errors import PipelineError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff"}
RGB = tuple[int, int, int]


class ImageError(PipelineError):
    """An image file that cannot be used; `reason` says why in a few words."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


@contextmanager
def atomic_open(path: str | Path, mode: str = "wb", **kwargs) -> Iterator[IO]:
    """Open a temp file beside `path`; rename it over `path` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    with atomic_open(path, "wb") as fh:
        fh.write(data)


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_open(path, "w", encoding="utf-8", newline="") as fh:
        fh.write(text)


def write_csv_atomic(path: str | Path, fieldnames: Sequence[str], rows: Iterable[dict]) -> None:
    with atomic_open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(fieldnames), lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow(row)


def read_csv(path: str | Path) -> list[dict[str, str]]:
    """Read a CSV written by this project (or by a spreadsheet: BOM and CRLF are fine)."""
    with open(path, encoding="utf-8-sig", newline="") as fh:
        return list(csv.DictReader(fh))


def save_image_atomic(img: Image.Image, path: str | Path, **save_kwargs) -> None:
    """Encode in memory, then write atomically; the format follows the suffix."""
    buf = io.BytesIO()
    fmt = save_kwargs.pop("format", None) or Image.registered_extensions().get(
        Path(path).suffix.lower(), "PNG"
    )
    img.save(buf, format=fmt, **save_kwargs)
    write_bytes_atomic(path, buf.getvalue())


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _open_checked(path: Path) -> Image.Image:
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ImageError(path, "file not found") from None
    if size == 0:
        raise ImageError(path, "empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            # Pillow only warns between 1x and 2x MAX_IMAGE_PIXELS; treat both as bombs.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(path)
            img.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(path, "decompression bomb: too many pixels") from None
    except Image.UnidentifiedImageError:
        raise ImageError(path, "not an image Pillow can read") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(path, f"truncated or corrupt image ({exc})") from None
    return img


def probe(path: str | Path) -> tuple[str, int, int]:
    """Fully decode `path` and return (format, width, height); raises ImageError."""
    with _open_checked(Path(path)) as img:
        return (img.format or "unknown", img.width, img.height)


def load_rgb(path: str | Path, background: RGB = (255, 255, 255)) -> Image.Image:
    """Decode any supported image into upright RGB, alpha flattened onto `background`.

    Animated files give their first frame; EXIF orientation is applied.
    Raises ImageError with the reason when the file cannot be used.
    """
    path = Path(path)
    img = _open_checked(path)
    with img:
        img.seek(0)
        img = ImageOps.exif_transpose(img)
        if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
            # 16-bit and float greyscale: scale to 8 bits instead of clipping.
            img = img.point(lambda v: v / 256).convert("L")
        has_alpha = img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info)
        if has_alpha:
            rgba = img.convert("RGBA")
            canvas = Image.new("RGBA", rgba.size, background + (255,))
            canvas.alpha_composite(rgba)
            return canvas.convert("RGB")
        return img.convert("RGB")


def contact_sheet(
    items: Sequence[tuple[Image.Image, str]],
    thumb: int = 96,
    cols: int | None = None,
    background: RGB = (32, 32, 32),
) -> Image.Image:
    """Lay out labelled thumbnails in a grid, for a person to look at."""
    n = max(len(items), 1)
    cols = cols or max(1, min(n, math.ceil(math.sqrt(n * 1.3))))
    rows = math.ceil(n / cols)
    label_h = 14
    pad = 4
    cell_w, cell_h = thumb + pad, thumb + label_h + pad
    sheet = Image.new("RGB", (cols * cell_w + pad, rows * cell_h + pad), background)
    draw = ImageDraw.Draw(sheet)
    for i, (img, label) in enumerate(items):
        r, c = divmod(i, cols)
        x, y = pad + c * cell_w, pad + r * cell_h
        t = img.copy()
        t.thumbnail((thumb, thumb), Image.Resampling.LANCZOS)
        sheet.paste(t, (x + (thumb - t.width) // 2, y + (thumb - t.height) // 2))
        draw.text((x, y + thumb + 1), label[:18], fill=(230, 230, 230))
    return sheet
