import csv

import numpy as np
import pytest
from PIL import Image, ImageOps

from pipeline import resize
from pipeline.errors import PipelineError
from pipeline.images import write_csv_atomic
from pipeline.params import ParamsError, params_from_dict
from pipeline.resize import square


def test_pad_letterboxes_with_background():
    img = Image.new("RGB", (200, 100), (255, 0, 0))
    out = square(img, 64, "pad", (0, 255, 0))
    assert out.size == (64, 64)
    assert out.getpixel((32, 2)) == (0, 255, 0)
    assert out.getpixel((32, 32)) == (255, 0, 0)


def test_crop_keeps_the_centre():
    img = Image.new("RGB", (300, 100), (0, 0, 255))
    img.paste((255, 0, 0), (100, 0, 200, 100))
    out = square(img, 50, "crop", (0, 0, 0))
    assert out.size == (50, 50)
    assert out.getpixel((2, 25))[0] > 250 and out.getpixel((47, 25))[0] > 250


def test_fit_stretches_everything_in():
    img = Image.new("RGB", (300, 100), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 150, 100))
    out = square(img, 50, "fit", (0, 0, 0))
    assert out.size == (50, 50)
    assert out.getpixel((5, 25)) == (255, 0, 0) and out.getpixel((45, 25)) == (0, 0, 255)


@pytest.mark.parametrize("size", [(640, 480), (333, 777), (1001, 999), (50, 300), (257, 255)])
def test_full_size_geometry_is_exactly_pillows(size):
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    lanczos = Image.Resampling.LANCZOS
    pad = ImageOps.pad(img, (64, 64), lanczos, color=(1, 2, 3))
    assert np.array_equal(np.asarray(square(img, 64, "pad", (1, 2, 3))), np.asarray(pad))
    crop = ImageOps.fit(img, (64, 64), lanczos)
    assert np.array_equal(np.asarray(square(img, 64, "crop", (0, 0, 0))), np.asarray(crop))


def make_raw(root):
    """Accepted files of several kinds, one of them unusable."""
    raw = root / "data/raw"
    raw.mkdir(parents=True)
    Image.new("RGBA", (120, 80), (0, 0, 0, 0)).save(raw / "a.png")
    Image.new("L", (90, 300), 50).save(raw / "b.jpg", quality=95)
    (raw / "c.jpg").write_bytes(b"<html><body>Forbidden</body></html>")
    big = Image.new("RGB", (1600, 1200), (0, 200, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated: 1200 x 1600
    big.save(raw / "d.jpg", quality=90, exif=exif)
    write_csv_atomic(
        root / "data/curated/accepted.csv",
        ["id", "file"],
        [{"id": i, "file": f} for i, f in [("a", "a.png"), ("b", "b.jpg"), ("c", "c.jpg"), ("d", "d.jpg")]],
    )


@pytest.mark.parametrize("mode", ["crop", "pad", "fit"])
def test_stage_writes_rgb_squares_index_skip_list_and_contact_sheet(in_tmp, mode):
    make_raw(in_tmp)
    params = params_from_dict(
        {
            "train": {"resolution": 32},
            "resize": {"size": 32, "mode": mode, "background": "#0000ff", "workers": 1},
        }
    )
    rows = resize.run(params)
    assert [r["id"] for r in rows] == ["a", "b", "d"]
    a = Image.open("data/processed/a.png")
    assert a.mode == "RGB" and a.size == (32, 32)
    assert a.getpixel((16, 16)) == (0, 0, 255)  # transparency became the background
    b = Image.open("data/processed/b.png")
    assert b.mode == "RGB"
    corner = b.getpixel((0, 0))
    assert corner == ((0, 0, 255) if mode == "pad" else (50, 50, 50))  # letterbox only in pad mode
    index = list(csv.DictReader(open("data/processed/index.csv")))
    assert [r["id"] for r in index] == ["a", "b", "d"]
    assert index[1] == {
        "id": "b",
        "file": "b.png",
        "source_width": "90",
        "source_height": "300",
        "source_format": "JPEG",
        "source_mode": "L",
        "mode": mode,
        "size": "32",
    }
    assert (index[2]["source_width"], index[2]["source_height"]) == ("1200", "1600")  # upright
    skipped = list(csv.DictReader(open("data/processed/skipped.csv")))
    assert skipped == [{"id": "c", "file": "c.jpg", "reason": "not an image: HTML page"}]
    sheet = Image.open("data/processed/contact_sheet.png")
    cell = resize.THUMB + 4
    assert sheet.size == (2 * cell + 4, 18 + 2 * (cell + 14) + 4)  # title line, 2 x 2 grid
    assert sheet.getpixel((4 + cell // 2, 22 + cell // 2)) == (0, 0, 255)  # image a, first cell
    assert sorted(p.name for p in (in_tmp / "data/processed").iterdir()) == [
        "ATTRIBUTION.csv",
        "a.png",
        "b.png",
        "contact_sheet.png",
        "d.png",
        "index.csv",
        "skipped.csv",
    ]


def test_parallel_workers_give_the_same_files_as_one(in_tmp):
    make_raw(in_tmp)
    resize.run(params_from_dict({"train": {"resolution": 32}, "resize": {"size": 32, "workers": 1}}))
    one = {p.name: p.read_bytes() for p in (in_tmp / "data/processed").glob("[abd].png")}
    resize.run(params_from_dict({"train": {"resolution": 32}, "resize": {"size": 32, "workers": 2}}))
    two = {p.name: p.read_bytes() for p in (in_tmp / "data/processed").glob("[abd].png")}
    assert one == two and len(one) == 3


def test_contact_sheet_pages_and_stale_outputs(in_tmp, monkeypatch):
    make_raw(in_tmp)
    out = in_tmp / "data/processed"
    out.mkdir(parents=True)
    (out / "gone.png").write_bytes(b"left from an earlier run")
    (out / "contact_sheet_9.png").write_bytes(b"old page")
    monkeypatch.setattr(resize, "PAGE", 2)
    resize.run(params_from_dict({"train": {"resolution": 32}, "resize": {"size": 32, "workers": 1}}))
    pages = sorted(p.name for p in out.glob("contact_sheet*.png"))
    assert pages == ["contact_sheet.png", "contact_sheet_2.png"]
    assert not (out / "gone.png").exists()
    # Page 1 holds two thumbnails side by side, page 2 one.
    assert Image.open(out / "contact_sheet.png").width > Image.open(out / "contact_sheet_2.png").width


def test_missing_accepted_list_says_what_to_run(in_tmp):
    with pytest.raises(PipelineError, match=r"accepted.csv: not found; run `dvc repro curate` first"):
        resize.run(params_from_dict({}))


@pytest.mark.parametrize(
    ("resize_params", "message"),
    [
        ({"mode": "stretch"}, "params.yaml: resize.mode: must be one of crop, pad, fit, got 'stretch'"),
        ({"filter": "cubic"}, "params.yaml: resize.filter: must be one of lanczos, bicubic"),
        ({"reducing_gap": 0.5}, "params.yaml: resize.reducing_gap: must be 0 .* or at least 1.0, got 0.5"),
    ],
)
def test_bad_resize_params_name_the_key(resize_params, message):
    with pytest.raises(ParamsError, match=message):
        params_from_dict({"resize": resize_params})


def test_attribution_csv_carries_each_training_images_licence(in_tmp):
    make_raw(in_tmp)
    licence = {
        "source": "openverse",
        "origin": "https://x/a.png",
        "page_url": "https://x/landing/a",
        "title": 'Mario, "a"',
        "license": "by-sa",
        "license_version": "4.0",
        "license_url": "https://creativecommons.org/licenses/by-sa/4.0/",
        "creator": "Ana",
        "attribution": '"Mario" by Ana is licensed under CC BY-SA 4.0.',
    }
    raw_index = [{"id": "a", "file": "a.png", **licence}, {"id": "b", "file": "b.jpg", "source": "bing"}]
    write_csv_atomic(in_tmp / "data/raw/index.csv", ["id", "file", *licence], raw_index)
    resize.run(params_from_dict({"train": {"resolution": 32}, "resize": {"size": 32, "workers": 1}}))
    rows = list(csv.DictReader(open("data/processed/ATTRIBUTION.csv", encoding="utf-8")))
    assert [r["id"] for r in rows] == ["a", "b", "d"]  # the training set: c was skipped
    assert rows[0] == {"id": "a", "file": "a.png", **licence}
    assert rows[1]["source"] == "bing" and rows[1]["license"] == "" and rows[1]["file"] == "b.png"
    assert set(rows[2].values()) == {"d", "d.png", ""}  # not in the raw index: empty, not invented
