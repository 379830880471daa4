"""Shared image and file I/O: every stage that opens or writes images uses this.

Loading is strict: a file that is empty, not an image (an HTML error page
saved as .jpg, say), truncated or a decompression bomb raises ImageError with
a reason, never returns a half-decoded picture. What loads comes back as
upright sRGB RGB: EXIF orientation applied, an embedded ICC profile converted
to sRGB, CMYK/16-bit/palette/greyscale modes normalised, alpha flattened onto
a background colour, first frame of an animation.

Callers that will shrink the picture anyway (resize, thumbnails) pass
`reduce_for`: JPEGs are then decoded at 1/2, 1/4 or 1/8 scale (libjpeg's DCT
scaling, "draft" mode) and other formats box-reduced, always keeping at least
`reducing_gap` times the final size so that the final Lanczos pass decides
the quality. Callers that box-reduce by the integer factor shorter_side // n
themselves (dedup) pass `box_factor_for=n` instead: a JPEG is then decoded at
the largest power-of-two part of that factor, so the caller's own factor,
computed the same way on the result, completes the same total reduction.

Writing is atomic (temp file + rename), so an interrupted stage never leaves a
corrupt output behind.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import os
import re
import tempfile
import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image, ImageCms, ImageDraw, ImageFile

from pipeline.errors import PipelineError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff"}
RGB = tuple[int, int, int]


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()
FILE_MODE = 0o666 & ~_UMASK  # what open() gives a new file; mkstemp's 0600 is changed to this
Box = tuple[float, float, float, float]

# Keep at least this many times the final size before the last Lanczos pass.
# benchmarks/resize_speed.py measures it against a plain full-resolution resize.
REDUCING_GAP = 2.0

ORIENTATION = 0x0112
# EXIF orientation -> the transpose that makes the picture upright.
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


class ImageError(PipelineError):
    """An image file that cannot be used; `reason` says why in a few words."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


@contextmanager
def atomic_open(path: str | Path, mode: str = "wb", *, durable: bool = True, **kwargs) -> Iterator[IO]:
    """Open a temp file beside `path`; rename it over `path` only on success.

    `durable=False` skips the fsync: still never a half-written file under the
    final name, but a power cut may lose it. For the many files of one stage
    run, which DVC reruns whole if it did not finish.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp makes the file 0600; outputs should get the usual umask-based mode.
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename is None:
            exc.filename = str(path)  # a full disk fails in write() or fsync(), which name no file
        raise


def write_bytes_atomic(path: str | Path, data: bytes, *, durable: bool = True) -> None:
    with atomic_open(path, "wb", durable=durable) as fh:
        fh.write(data)


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_open(path, "w", encoding="utf-8", newline="") as fh:
        fh.write(text)


def write_csv_atomic(path: str | Path, fieldnames: Sequence[str], rows: Iterable[dict]) -> None:
    # With "\n" as its terminator, csv leaves a lone "\r" in a value unquoted and every reader splits
    # the row there; with "\r\n" it quotes it. Each line is written with "\r\n" and ends in "\n".
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(fieldnames), lineterminator="\r\n")

    def line() -> str:
        text = buf.getvalue()[:-2] + "\n"
        buf.seek(0)
        buf.truncate()
        return text

    with atomic_open(path, "w", encoding="utf-8", newline="") as fh:
        writer.writeheader()
        fh.write(line())
        for row in rows:
            writer.writerow(row)
            fh.write(line())


def read_csv(path: str | Path) -> list[dict[str, str]]:
    """Read a CSV written by this project (or by a spreadsheet: BOM and CRLF are fine)."""
    with open(path, encoding="utf-8-sig", newline="") as fh:
        return list(csv.DictReader(fh))


def save_image_atomic(img: Image.Image, path: str | Path, *, durable: bool = True, **save_kwargs) -> None:
    """Encode in memory, then write atomically; the format follows the suffix."""
    buf = io.BytesIO()
    fmt = save_kwargs.pop("format", None) or Image.registered_extensions().get(
        Path(path).suffix.lower(), "PNG"
    )
    img.save(buf, format=fmt, **save_kwargs)
    write_bytes_atomic(path, buf.getvalue(), durable=durable)


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --- reading ---------------------------------------------------------------


def _not_an_image(path: Path) -> str:
    """Name what a file Pillow cannot identify is, when we can tell."""
    with open(path, "rb") as fh:
        head = fh.read(1024).lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if head.startswith((b"<!doctype html", b"<html", b"<head", b"<body")) or b"<html" in head:
        return "not an image: HTML page"
    if b"<svg" in head:
        return "not an image: SVG drawing (vector images are not supported)"
    if head.startswith((b"{", b"[")):
        return "not an image: JSON text"
    return "not an image Pillow can read"


@contextmanager
def _reading(path: Path) -> Iterator[None]:
    """Turn every way Pillow can fail on a bad file into ImageError with a reason."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ImageError(path, "file not found") from None
    if size == 0:
        raise ImageError(path, "empty file (0 bytes)")
    # Another library in the process may have switched this on; we want truncation as an error.
    truncated_ok, ImageFile.LOAD_TRUNCATED_IMAGES = ImageFile.LOAD_TRUNCATED_IMAGES, False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # corrupt EXIF, palette transparency notes: handled here
            # Pillow only warns between 1x and 2x MAX_IMAGE_PIXELS; treat both as bombs.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        found = re.search(r"\((\d+) pixels\)", str(exc))
        pixels = f"{found.group(1)} pixels" if found else "too many pixels"
        raise ImageError(path, f"decompression bomb: {pixels}, limit {Image.MAX_IMAGE_PIXELS}") from None
    except Image.UnidentifiedImageError:
        raise ImageError(path, _not_an_image(path)) from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError) as exc:
        if "truncated" in str(exc) or isinstance(exc, EOFError):
            raise ImageError(path, "truncated or corrupt image: the file ends early") from None
        raise ImageError(path, f"truncated or corrupt image: {exc}") from None
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = truncated_ok


def probe(path: str | Path) -> tuple[str, int, int]:
    """Fully decode `path` and return (format, width, height) as stored; raises ImageError.

    JPEGs are decoded at 1/8 scale: every byte is still read, so truncation is
    still caught, at a fraction of the cost.
    """
    path = Path(path)
    with _reading(path), Image.open(path) as img:
        fmt, size = img.format or "unknown", img.size
        img.draft(None, (1, 1))
        img.load()
    return (fmt, size[0], size[1])


@dataclass(frozen=True)
class Decoded:
    """An upright RGB picture; `box` is the region of `image` that holds the whole source.

    After reduced decoding the last row/column may cover only part of a source
    block, so `box` can end at a fraction of a pixel; pass it as
    `Image.resize(box=...)` to keep the geometry exact.
    """

    image: Image.Image
    box: Box
    size: tuple[int, int]  # upright source size, before any reduction
    format: str
    mode: str  # the source's Pillow mode: "CMYK", "P", "I;16", ...


def _to_working_mode(img: Image.Image) -> Image.Image:
    """Any Pillow mode to L, LA, RGB, RGBA, CMYK or LAB: the modes the rest handles."""
    mode = img.mode
    if mode in ("L", "LA", "RGB", "RGBA", "CMYK", "LAB"):
        return img
    if mode.startswith("I") or mode == "F":
        a = np.asarray(img).astype(np.float64)
        if mode.startswith("I;16") or mode == "I":
            a = a / 257.0  # 16-bit range to 8 bits, rounded, not clipped
        elif a.size and a.max() <= 1.0:
            a = a * 255.0  # float images are usually 0..1
        return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L")
    if mode in ("P", "PA"):
        return img.convert("RGBA" if mode == "PA" or "transparency" in img.info else "RGB")
    if mode == "La":
        return img.convert("LA")
    if mode == "RGBa":
        return img.convert("RGBA")
    if mode == "1":
        return img.convert("L")
    return img.convert("RGB")  # RGBX, YCbCr, HSV


_SRGB = ImageCms.createProfile("sRGB")
_TRANSFORMS: dict[tuple[bytes, str], ImageCms.ImageCmsTransform | None] = {}
_PROFILE_MODE = {"RGB ": "RGB", "GRAY": "L", "CMYK": "CMYK", "Lab ": "LAB"}


def _to_srgb(icc: bytes | None, mode: str) -> ImageCms.ImageCmsTransform | None:
    """The transform from an embedded profile to sRGB, or None to leave pixels as they are.

    Broken profiles, profiles that do not match the pixels and sRGB itself give
    None: the picture is still usable, and a wrong conversion would be worse
    than none. Transforms are cached per profile: building one costs more than
    applying it to a thumbnail.
    """
    if mode == "LAB" and not icc:
        key = (b"", mode)
        if key not in _TRANSFORMS:
            _TRANSFORMS[key] = ImageCms.buildTransform(ImageCms.createProfile("LAB"), _SRGB, "LAB", "RGB")
        return _TRANSFORMS[key]
    if not icc:
        return None
    key = (hashlib.sha1(icc).digest(), mode)
    if key not in _TRANSFORMS:
        transform = None
        try:
            profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            space = _PROFILE_MODE.get(profile.profile.xcolor_space)
            is_srgb = "srgb" in (profile.profile.profile_description or "").lower()
            if space == mode and not is_srgb:
                transform = ImageCms.buildTransform(profile, _SRGB, mode, "RGB", ImageCms.Intent.PERCEPTUAL)
        except (OSError, ImageCms.PyCMSError, TypeError, ValueError):
            transform = None
        _TRANSFORMS[key] = transform
    return _TRANSFORMS[key]


def _colour_to_srgb(img: Image.Image, icc: bytes | None) -> Image.Image:
    """Convert to sRGB through the embedded profile; alpha is kept aside and put back."""
    alpha = img.getchannel("A") if img.mode in ("RGBA", "LA") else None
    base = img.convert(img.mode[:-1]) if alpha is not None else img
    transform = _to_srgb(icc, base.mode)
    if transform is not None:
        base = ImageCms.applyTransform(base, transform)
    elif base.mode in ("CMYK", "LAB"):
        base = base.convert("RGB")
    if alpha is not None:
        base = base.convert("RGBA" if base.mode == "RGB" else "LA")
        base.putalpha(alpha)
    return base


def _orientation(img: Image.Image) -> int:
    try:
        value = img.getexif().get(ORIENTATION, 1)
    except Exception:  # EXIF in the wild is often broken; the pixels are still fine
        return 1
    return value if value in _UPRIGHT else 1


def _transpose_box(box: Box, size: tuple[int, int], method: Image.Transpose) -> Box:
    """Where `box` lands when an image of `size` is transposed by `method`."""
    x0, y0, x1, y1 = box
    w, h = size
    T = Image.Transpose
    return {
        T.FLIP_LEFT_RIGHT: (w - x1, y0, w - x0, y1),
        T.FLIP_TOP_BOTTOM: (x0, h - y1, x1, h - y0),
        T.ROTATE_180: (w - x1, h - y1, w - x0, h - y0),
        T.ROTATE_90: (y0, w - x1, y1, w - x0),
        T.ROTATE_270: (h - y1, x0, h - y0, x1),
        T.TRANSPOSE: (y0, x0, y1, x1),
        T.TRANSVERSE: (h - y1, w - x1, h - y0, w - x0),
    }[method]


def decode(
    path: str | Path,
    background: RGB = (255, 255, 255),
    *,
    reduce_for: int | None = None,
    cover: bool = False,
    reducing_gap: float = REDUCING_GAP,
    box_factor_for: int | None = None,
) -> Decoded:
    """Decode any supported image into upright sRGB RGB, alpha flattened onto `background`.

    With `reduce_for=n` the caller promises to downscale so that the longer
    side (with `cover=True`, the shorter side) becomes `n` pixels; decoding
    may then shrink the picture while that side stays at least
    `reducing_gap * n`. Raises ImageError with the reason when the file cannot
    be used. With `box_factor_for=n` (and no `reduce_for`) a JPEG is decoded at
    1/k, k the largest power of two (up to 8) that divides min(size) // n.
    """
    path = Path(path)
    with _reading(path), Image.open(path) as img:
        fmt, stored, src_mode = img.format or "unknown", img.size, img.mode
        icc = img.info.get("icc_profile")
        box: Box = (0.0, 0.0, float(stored[0]), float(stored[1]))
        keep = 0.0
        if reduce_for and reducing_gap:
            keep = reducing_gap * reduce_for
            side = min(stored) if cover else max(stored)
            r = keep / side
            if r < 0.5:
                drafted = img.draft(None, (math.ceil(stored[0] * r), math.ceil(stored[1] * r)))
                if drafted is not None:
                    box = drafted[1]
        elif box_factor_for and img.format == "JPEG":
            f = min(stored) // box_factor_for
            k = min(f & -f, 8)
            if k >= 2:
                # Pillow picks the largest scale s with stored // s >= the size asked for.
                drafted = img.draft(None, (stored[0] // k, stored[1] // k))
                if drafted is not None:
                    box = drafted[1]
        img.load()
        orientation = _orientation(img)
        out = _to_working_mode(img)
        if keep:
            side = min(box[2] - box[0], box[3] - box[1]) if cover else max(box[2] - box[0], box[3] - box[1])
            factor = int(side // keep)
            if factor >= 2:
                out = out.reduce(factor)
                box = (box[0] / factor, box[1] / factor, box[2] / factor, box[3] / factor)
        out = _colour_to_srgb(out, icc)
        size = stored
        if orientation != 1:
            method = _UPRIGHT[orientation]
            box = _transpose_box(box, out.size, method)
            out = out.transpose(method)
            if orientation >= 5:  # the four orientations that swap width and height
                size = (stored[1], stored[0])
        if out.mode in ("RGBA", "LA"):
            canvas = Image.new("RGB", out.size, background)
            canvas.paste(out.convert("RGB"), mask=out.getchannel("A"))
            out = canvas
        elif out.mode != "RGB":
            out = out.convert("RGB")
        out.info = {}  # orientation and profile are applied: never apply them twice
    return Decoded(image=out, box=box, size=size, format=fmt, mode=src_mode)


def load_rgb(path: str | Path, background: RGB = (255, 255, 255)) -> Image.Image:
    """Decode any supported image at full size into upright sRGB RGB, alpha flattened onto `background`.

    Animated files give their first frame. Raises ImageError with the reason
    when the file cannot be used.
    """
    return decode(path, background).image


def contact_sheet(
    items: Sequence[tuple[Image.Image, str]],
    thumb: int = 96,
    cols: int | None = None,
    background: RGB = (32, 32, 32),
    title: str | None = None,
) -> Image.Image:
    """Lay out labelled thumbnails in a grid, for a person to look at."""
    n = max(len(items), 1)
    cols = cols or max(1, min(n, math.ceil(math.sqrt(n * 1.3))))
    rows = math.ceil(n / cols)
    label_h = 14
    pad = 4
    top = 18 if title else 0
    cell_w, cell_h = thumb + pad, thumb + label_h + pad
    sheet = Image.new("RGB", (cols * cell_w + pad, top + rows * cell_h + pad), background)
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((pad, 3), title, fill=(255, 255, 255))
    for i, (img, label) in enumerate(items):
        r, c = divmod(i, cols)
        x, y = pad + c * cell_w, top + pad + r * cell_h
        t = img if max(img.size) <= thumb else img.copy()
        if t is not img:
            t.thumbnail((thumb, thumb), Image.Resampling.LANCZOS)
        sheet.paste(t, (x + (thumb - t.width) // 2, y + (thumb - t.height) // 2))
        draw.text((x, y + thumb + 1), label[:18], fill=(230, 230, 230))
    return sheet
