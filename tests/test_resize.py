import csv

import pytest
from PIL import Image

from pipeline import resize
from pipeline.images import write_csv_atomic
from pipeline.params import params_from_dict
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
    assert out.getpixel((2, 25))[0] > 200


@pytest.mark.parametrize("mode", ["crop", "pad"])
def test_stage_writes_rgb_squares_index_and_contact_sheet(in_tmp, mode):
    raw = in_tmp / "data/raw"
    raw.mkdir(parents=True)
    rgba = Image.new("RGBA", (120, 80), (0, 0, 0, 0))
    rgba.save(raw / "a.png")
    Image.new("L", (90, 300), 50).save(raw / "b.jpg")
    (raw / "c.jpg").write_bytes(b"")  # unreadable: skipped with a warning
    write_csv_atomic(
        "data/curated/accepted.csv",
        ["id", "file"],
        [{"id": i, "file": f} for i, f in [("a", "a.png"), ("b", "b.jpg"), ("c", "c.jpg")]],
    )
    params = params_from_dict({"resize": {"size": 32, "mode": mode, "background": "#0000ff", "workers": 1}})
    rows = resize.run(params)
    assert [r["id"] for r in rows] == ["a", "b"]
    a = Image.open("data/processed/a.png")
    assert a.mode == "RGB" and a.size == (32, 32)
    assert a.getpixel((16, 16)) == (0, 0, 255)  # transparency became the background
    index = list(csv.DictReader(open("data/processed/index.csv")))
    assert index[1]["source_width"] == "90" and index[1]["mode"] == mode
    assert Image.open("data/processed/contact_sheet.png").size[0] > 32
