"""pipeline/images.py: one fixture per kind of file an image search returns, each with its exact outcome."""

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageCms, ImageOps

from pipeline.images import (
    ImageError,
    decode,
    load_rgb,
    probe,
    write_bytes_atomic,
)
from pipeline.resize import square

RED, GREEN, BLUE, WHITE, BLACK = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255), (0, 0, 0)


def save(path, img, fmt, **kw):
    img.save(path, fmt, **kw)
    return path


def near(pixel, expected, tol=3):
    return all(abs(a - b) <= tol for a, b in zip(pixel, expected, strict=True))


def quadrants(size=32):
    """Red top-left, green top-right, blue bottom-left, white bottom-right."""
    img = Image.new("RGB", (size, size), WHITE)
    h = size // 2
    img.paste(RED, (0, 0, h, h))
    img.paste(GREEN, (h, 0, size, h))
    img.paste(BLUE, (0, h, h, size))
    return img


def assert_quadrants(out, size=32, tol=3):
    q, r = size // 4, 3 * size // 4
    assert out.mode == "RGB" and out.size == (size, size)
    got = [out.getpixel(xy) for xy in [(q, q), (r, q), (q, r), (r, r)]]
    assert all(near(g, e, tol) for g, e in zip(got, [RED, GREEN, BLUE, WHITE], strict=True)), got


# --- formats that load -------------------------------------------------------


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    img = Image.new("CMYK", (32, 16), (0, 255, 255, 0))  # red
    img.paste((0, 0, 0, 255), (16, 0, 32, 16))  # black
    out = load_rgb(save(tmp_path / "cmyk.jpg", img, "JPEG", quality=95))
    assert Image.open(tmp_path / "cmyk.jpg").mode == "CMYK"
    assert out.mode == "RGB"
    assert near(out.getpixel((4, 8)), RED) and near(out.getpixel((28, 8)), BLACK)


def test_progressive_jpeg(tmp_path):
    path = save(tmp_path / "prog.jpg", quadrants(), "JPEG", quality=95, progressive=True)
    assert Image.open(path).info.get("progressive")
    assert_quadrants(load_rgb(path), tol=6)


def test_palette_png_with_transparent_index(tmp_path):
    img = Image.new("P", (4, 4), 1)
    img.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    img.putpixel((0, 0), 0)
    out = load_rgb(save(tmp_path / "p.png", img, "PNG", transparency=1), background=(9, 9, 9))
    assert out.getpixel((0, 0)) == RED
    assert out.getpixel((3, 3)) == (9, 9, 9)


def test_rgba_png_alpha_is_flattened_onto_background(tmp_path):
    img = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    img.putpixel((0, 0), (255, 0, 0, 255))
    img.putpixel((1, 0), (255, 0, 0, 128))
    out = load_rgb(save(tmp_path / "a.png", img, "PNG"), background=BLUE)
    assert out.mode == "RGB"
    assert out.getpixel((0, 0)) == RED
    assert out.getpixel((5, 5)) == BLUE  # fully transparent: the background, not the hidden black
    assert near(out.getpixel((1, 0)), (128, 0, 127), tol=1)  # half red over blue


def test_la_png_alpha_is_flattened_onto_background(tmp_path):
    img = Image.new("LA", (4, 1), (200, 0))
    img.putpixel((0, 0), (200, 255))
    img.putpixel((1, 0), (200, 128))
    out = load_rgb(save(tmp_path / "la.png", img, "PNG"), background=BLUE)
    assert out.getpixel((0, 0)) == (200, 200, 200)
    assert near(out.getpixel((1, 0)), (100, 100, 227), tol=1)
    assert out.getpixel((3, 0)) == BLUE


def test_16bit_png_is_scaled_not_clipped(tmp_path):
    img = Image.new("I;16", (4, 1))
    for x, v in enumerate([0, 25700, 32768, 65535]):
        img.putpixel((x, 0), v)
    path = save(tmp_path / "g16.png", img, "PNG")
    assert Image.open(path).mode.startswith("I")
    out = load_rgb(path)
    assert [out.getpixel((x, 0)) for x in range(4)] == [(v, v, v) for v in (0, 100, 128, 255)]


def test_animated_gif_gives_first_frame(tmp_path):
    frames = [Image.new("RGB", (6, 6), c) for c in [RED, BLUE]]
    path = tmp_path / "a.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
    assert Image.open(path).n_frames == 2
    assert load_rgb(path).getpixel((2, 2)) == RED


@pytest.mark.parametrize(
    ("name", "fmt", "kw"),
    [("q.webp", "WEBP", {"lossless": True}), ("q.bmp", "BMP", {}), ("q.tif", "TIFF", {})],
)
def test_webp_bmp_tiff(tmp_path, name, fmt, kw):
    out = load_rgb(save(tmp_path / name, quadrants(), fmt, **kw))
    assert np.array_equal(np.asarray(out), np.asarray(quadrants()))


def test_webp_with_alpha(tmp_path):
    img = Image.new("RGBA", (8, 8), (0, 255, 0, 0))
    img.paste((255, 0, 0, 255), (0, 0, 4, 8))
    out = load_rgb(save(tmp_path / "a.webp", img, "WEBP", lossless=True), background=WHITE)
    assert out.getpixel((1, 4)) == RED and out.getpixel((6, 4)) == WHITE


def test_exif_rotated_jpeg_is_upright(tmp_path):
    img = Image.new("RGB", (40, 20), WHITE)
    img.paste(RED, (0, 0, 10, 20))  # red strip on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display needs a 90 degree clockwise turn
    d = decode(save(tmp_path / "r.jpg", img, "JPEG", exif=exif, quality=95))
    assert d.image.size == (20, 40) and d.size == (20, 40)
    assert near(d.image.getpixel((10, 2)), RED, tol=40)  # the left strip is now on top
    assert near(d.image.getpixel((10, 37)), WHITE, tol=40)
    assert "exif" not in d.image.info  # applied once: nobody may rotate it again


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_matches_pillow(tmp_path, orientation):
    img = Image.fromarray(np.arange(5 * 3 * 3, dtype=np.uint8).reshape(3, 5, 3) * 5)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = save(tmp_path / "o.png", img, "PNG", exif=exif)
    expected = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
    assert np.array_equal(np.asarray(load_rgb(path)), np.asarray(expected))


def _swapped_primaries_profile() -> bytes:
    """sRGB with its red and green primaries swapped: a profile that must change pixels."""
    raw = bytearray(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    tags = {}
    for i in range(struct.unpack(">I", raw[128:132])[0]):
        tags[bytes(raw[132 + 12 * i : 136 + 12 * i])] = 136 + 12 * i
    r, g = tags[b"rXYZ"], tags[b"gXYZ"]
    raw[r : r + 8], raw[g : g + 8] = raw[g : g + 8], raw[r : r + 8]
    for name in (b"sRGB built-in", "sRGB built-in".encode("utf-16-be")):
        raw = raw.replace(name, name.replace(b"s", b"x", 1))  # so it is not mistaken for sRGB
    return bytes(raw)


def test_icc_profile_is_converted_to_srgb(tmp_path):
    img = Image.new("RGB", (4, 4), RED)
    img.putpixel((1, 1), (10, 200, 30))
    out = load_rgb(save(tmp_path / "icc.png", img, "PNG", icc_profile=_swapped_primaries_profile()))
    assert near(out.getpixel((0, 0)), GREEN, tol=1)
    assert near(out.getpixel((1, 1)), (200, 10, 30), tol=1)
    assert "icc_profile" not in out.info


def test_broken_or_srgb_profile_leaves_pixels_alone(tmp_path):
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    for name, icc in [("junk.png", b"not a profile" * 20), ("srgb.png", srgb)]:
        out = load_rgb(save(tmp_path / name, quadrants(), "PNG", icc_profile=icc))
        assert np.array_equal(np.asarray(out), np.asarray(quadrants())), name


# --- files that are rejected, with the reason ----------------------------------


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def test_decompression_bomb_is_rejected(tmp_path):
    # 40000 x 40000 RGB claimed in a 100-byte file: rejected before any pixel is allocated.
    ihdr = struct.pack(">IIBBBBB", 40000, 40000, 8, 2, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
    path = tmp_path / "bomb.png"
    path.write_bytes(data + _png_chunk(b"IEND", b""))
    with pytest.raises(ImageError) as err:
        load_rgb(path)
    assert err.value.reason == f"decompression bomb: 1600000000 pixels, limit {Image.MAX_IMAGE_PIXELS}"
    with pytest.raises(ImageError, match="decompression bomb"):
        probe(path)


def test_bomb_between_one_and_two_times_the_limit_is_rejected_too(tmp_path, monkeypatch):
    path = save(tmp_path / "big.png", Image.new("L", (90, 100)), "PNG")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 5000)  # Pillow only warns below 2x
    with pytest.raises(ImageError) as err:
        load_rgb(path)
    assert err.value.reason == "decompression bomb: 9000 pixels, limit 5000"


def _encoded(img, fmt, **kw):
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


NOISE = Image.effect_noise((200, 200), 50).convert("RGB")


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("cut.jpg", _encoded(NOISE, "JPEG")),
        ("cut-progressive.jpg", _encoded(NOISE, "JPEG", progressive=True)),
        ("cut.png", _encoded(NOISE, "PNG")),
    ],
)
@pytest.mark.parametrize("reduced", [False, True])
def test_truncated_file_is_rejected_not_half_black(tmp_path, name, data, reduced):
    path = tmp_path / name
    path.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(ImageError) as err:
        decode(path, reduce_for=16 if reduced else None)
    assert err.value.reason == "truncated or corrupt image: the file ends early"
    with pytest.raises(ImageError, match="the file ends early"):
        probe(path)


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("empty.jpg", b"", "empty file (0 bytes)"),
        ("page.jpg", b"<!DOCTYPE html>\n<html><body>404 Not Found</body></html>", "not an image: HTML page"),
        ("bom.jpg", b"\xef\xbb\xbf  <html><head></head></html>", "not an image: HTML page"),
        (
            "logo.png",
            b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>',
            "not an image: SVG drawing (vector images are not supported)",
        ),
        ("api.jpg", b'{"error": "rate limited"}', "not an image: JSON text"),
        ("noise.jpg", bytes(range(256)) * 4, "not an image Pillow can read"),
    ],
)
def test_unusable_files_raise_with_reason(tmp_path, name, data, reason):
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(ImageError) as err:
        load_rgb(path)
    assert err.value.reason == reason
    assert str(path) in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(ImageError) as err:
        probe(tmp_path / "gone.jpg")
    assert err.value.reason == "file not found"


# --- reduced decoding ----------------------------------------------------------


def psnr(a: Image.Image, b: Image.Image) -> float:
    mse = np.mean((np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


@pytest.fixture(scope="module")
def photo_jpeg(tmp_path_factory):
    """An odd-sized photo-like JPEG (so reduced decodes end mid-block), one file per orientation."""
    rng = np.random.default_rng(0)
    small = Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8))
    img = small.resize((1601, 1203), Image.Resampling.BICUBIC)
    img.paste(RED, (200, 300, 900, 700))
    folder = tmp_path_factory.mktemp("photo")
    paths = {}
    for orientation in (1, 3, 6, 7):
        exif = Image.Exif()
        exif[0x0112] = orientation
        paths[orientation] = save(folder / f"o{orientation}.jpg", img, "JPEG", quality=92, exif=exif)
    return paths


@pytest.mark.parametrize("orientation", [1, 3, 6, 7])
@pytest.mark.parametrize("mode", ["crop", "pad", "fit"])
def test_reduced_decode_matches_full_resolution(photo_jpeg, orientation, mode):
    path = photo_jpeg[orientation]
    full = load_rgb(path)
    exact = square(full, 64, mode, WHITE)
    d = decode(path, reduce_for=64, cover=mode != "pad", reducing_gap=2.0)
    assert d.size == full.size
    assert max(d.image.size) < max(full.size) / 3  # it really was decoded reduced
    fast = square(d.image, 64, mode, WHITE, box=d.box, reducing_gap=2.0, source_size=d.size)
    assert psnr(fast, exact) >= 40


def test_reduced_decode_then_resize_is_close_to_the_full_resize(photo_jpeg):
    # resize.py's path: decode at a reduced JPEG scale for the target, then finish with Lanczos.
    d = decode(photo_jpeg[6], (255, 255, 255), reduce_for=100)
    assert max(d.image.size) < 1601  # decoded reduced
    thumb = d.image.resize((75, 100), Image.Resampling.LANCZOS, box=d.box, reducing_gap=2.0)
    expected = load_rgb(photo_jpeg[6]).resize((75, 100), Image.Resampling.LANCZOS)
    assert psnr(thumb, expected) >= 40


def test_probe_reports_stored_size_and_format(photo_jpeg):
    assert probe(photo_jpeg[6]) == ("JPEG", 1601, 1203)


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.bin"
    write_bytes_atomic(target, b"old")

    with pytest.raises(TypeError):
        write_bytes_atomic(target, 123)  # type: ignore[arg-type]
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_atomic_writes_get_normal_permissions(tmp_path):
    import os

    from pipeline.images import write_bytes_atomic as write

    target = tmp_path / "perm.bin"
    write(target, b"x")
    mask = os.umask(0)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask
