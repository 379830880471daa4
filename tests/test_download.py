import csv

from pipeline import download
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
