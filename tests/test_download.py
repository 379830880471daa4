import csv
import hashlib
from pathlib import Path

from pipeline import download, synthetic
from pipeline.images import sha256_file
from pipeline.params import params_from_dict


def test_writes_images_index_and_ground_truth(in_tmp):
    rows = download.run(params_from_dict({"download": {"count": 25, "seed": 3}}))
    assert len(rows) == 25
    index = list(csv.DictReader(open("data/raw/index.csv")))
    assert [r["id"] for r in index] == [f"syn-{i:05d}" for i in range(25)]
    for r in index:
        assert sha256_file(f"data/raw/{r['file']}") == r["sha256"]
        assert r["format"] in ("JPEG", "PNG")
        assert 64 <= int(r["width"]) <= 960
    truth = list(csv.DictReader(open("data/raw/ground_truth.csv")))
    assert len(truth) == 25
    assert not list(in_tmp.glob("data/raw/.*.tmp"))


def test_synthetic_files_are_exactly_the_generators(in_tmp):
    rows = download.run(params_from_dict({"download": {"count": 12, "seed": 0}}))
    for i, r in enumerate(rows):
        item = synthetic.render(0, i)
        assert r["file"] == f"{item.id}.{item.ext}"
        assert r["sha256"] == hashlib.sha256(item.data).hexdigest()
        assert r["origin"] == f"synthetic://seed-0/{i}" and r["source"] == "synthetic"
        assert r["fetched_at"] == ""  # the index stays byte-for-byte reproducible
    assert sorted(p.name for p in Path("data/raw").iterdir()) == sorted(
        [r["file"] for r in rows] + ["index.csv", "ground_truth.csv"]
    )
    assert not Path(".cache").exists()
