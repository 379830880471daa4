import io

import pytest
from PIL import Image

from pipeline.images import ImageError, load_rgb, probe, write_bytes_atomic


def save(path, img, fmt, **kw):
    img.save(path, fmt, **kw)
    return path


def test_alpha_is_flattened_onto_background(tmp_path):
    img = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    img.putpixel((0, 0), (255, 0, 0, 255))
    out = load_rgb(save(tmp_path / "a.png", img, "PNG"), background=(0, 0, 255))
    assert out.mode == "RGB"
    assert out.getpixel((0, 0)) == (255, 0, 0)
    assert out.getpixel((5, 5)) == (0, 0, 255)


def test_palette_png_with_transparent_index(tmp_path):
    img = Image.new("P", (4, 4), 1)
    img.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    img.putpixel((0, 0), 0)
    out = load_rgb(save(tmp_path / "p.png", img, "PNG", transparency=1), background=(9, 9, 9))
    assert out.getpixel((0, 0)) == (255, 0, 0)
    assert out.getpixel((3, 3)) == (9, 9, 9)


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (40, 20), (255, 255, 255))
    img.paste((255, 0, 0), (0, 0, 10, 20))  # red strip on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display needs a 90 degree clockwise turn
    out = load_rgb(save(tmp_path / "r.jpg", img, "JPEG", exif=exif, quality=95))
    assert out.size == (20, 40)
    r, g, b = out.getpixel((10, 2))  # left strip is now on top
    assert r > 200 and g < 60 and b < 60


def test_16bit_png_is_scaled_not_clipped(tmp_path):
    img = Image.new("I;16", (4, 4), 32768)
    out = load_rgb(save(tmp_path / "g16.png", img, "PNG"))
    assert out.getpixel((0, 0))[0] in (127, 128)


def test_animated_gif_gives_first_frame(tmp_path):
    frames = [Image.new("RGB", (6, 6), c) for c in [(255, 0, 0), (0, 0, 255)]]
    path = tmp_path / "a.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
    r, _g, b = load_rgb(path).getpixel((2, 2))
    assert r > 200 and b < 60


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("empty.jpg", b"", "empty file"),
        ("page.jpg", b"<!doctype html><html><body>404</body></html>", "not an image"),
    ],
)
def test_unusable_files_raise_with_reason(tmp_path, name, data, reason):
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(ImageError, match=reason):
        load_rgb(path)


def test_truncated_jpeg_is_rejected(tmp_path):
    buf = io.BytesIO()
    Image.effect_noise((200, 200), 50).convert("RGB").save(buf, "JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ImageError, match="truncated or corrupt"):
        load_rgb(path)


def test_decompression_bomb_is_rejected(tmp_path, monkeypatch):
    path = save(tmp_path / "big.png", Image.new("L", (100, 100)), "PNG")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 5000)
    with pytest.raises(ImageError, match="decompression bomb"):
        probe(path)


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.bin"
    write_bytes_atomic(target, b"old")

    with pytest.raises(TypeError):
        write_bytes_atomic(target, 123)  # type: ignore[arg-type]
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]
