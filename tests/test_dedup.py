import csv
import itertools
import json

import imagehash
import numpy as np
import pytest
from PIL import Image

from pipeline import dedup, download
from pipeline.dedup import Entry, group
from pipeline.params import params_from_dict


def entry(name, bits, pixels, sha=None, thumb=0):
    h = imagehash.ImageHash(np.array([b == "1" for b in bits.ljust(64, "0")]).reshape(8, 8))
    return Entry(name, sha or name, pixels, h, np.full((8, 8, 3), thumb, np.uint8))


def test_exact_and_near_duplicates_join_the_largest():
    entries = [
        entry("small", "1111", 100),
        entry("big", "1111", 900),
        entry("copy", "0000", 50, sha="big"),
        entry("other", "1" * 40, 500),
    ]
    got = {m.id: (m.group, m.match) for m in group(entries, threshold=6)}
    assert got == {
        "big": ("big", "kept"),
        "small": ("big", "phash"),
        "copy": ("big", "exact"),
        "other": ("other", "kept"),
    }


def test_no_chaining_through_a_middle_image():
    # A~B (4 bits) and B~C (4 bits) but A and C are 8 bits apart.
    a, b, c = entry("a", "11110000", 900), entry("b", "11111111", 400), entry("c", "1111111111110000", 100)
    got = {m.id: m.group for m in group([a, b, c], threshold=5)}
    assert got["b"] == "a"
    assert got["c"] == "c"


def test_colour_check_separates_same_shape_different_colour():
    red, green = entry("red", "1111", 900, thumb=0), entry("green", "1111", 800, thumb=0)
    green = Entry(
        "green",
        "green",
        800,
        green.hash,
        np.dstack([np.zeros((8, 8)), np.full((8, 8), 200), np.zeros((8, 8))]).astype(np.uint8),
    )
    got = {m.id: m.group for m in group([red, green], threshold=6, max_colour_diff=8)}
    assert got == {"red": "red", "green": "green"}


@pytest.fixture(scope="module")
def synthetic_dedup(tmp_path_factory):
    import os

    cwd = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("dedup"))
    try:
        params = params_from_dict({})
        download.run(params)
        dedup.run(params)
        truth = {r["id"]: r for r in csv.DictReader(open("data/raw/ground_truth.csv"))}
        groups = {r["id"]: r for r in csv.DictReader(open("data/dedup/groups.csv"))}
        yield truth, groups
    finally:
        os.chdir(cwd)


def test_default_params_find_the_planted_duplicates(synthetic_dedup):
    truth, groups = synthetic_dedup
    root = {i: t["duplicate_of"] or i for i, t in truth.items()}
    tp = fp = fn = 0
    for a, b in itertools.combinations(sorted(groups), 2):
        same, grouped = root[a] == root[b], groups[a]["group"] == groups[b]["group"]
        tp += same and grouped
        fp += grouped and not same
        fn += same and not grouped
    precision, recall = tp / (tp + fp), tp / (tp + fn)
    assert precision >= 0.9, (precision, recall)
    assert recall >= 0.9, (precision, recall)
    exact = [i for i, t in truth.items() if t["transform"] == "exact"]
    assert exact and all(groups[i]["match"] == "exact" for i in exact)


def test_largest_image_is_kept(synthetic_dedup, tmp_path):
    _, groups = synthetic_dedup
    for gid in {g["group"] for g in groups.values()}:
        assert groups[gid]["kept"] == "true"


def test_unreadable_files_are_reported_not_fatal(in_tmp):
    params = params_from_dict({"download": {"count": 12}})
    download.run(params)
    index = list(csv.DictReader(open("data/raw/index.csv")))
    (in_tmp / "data/raw" / index[0]["file"]).write_bytes(b"")
    (in_tmp / "data/raw" / index[1]["file"]).write_bytes(b"GIF89a garbage")
    members = dedup.run(params)
    report = json.loads(open("data/dedup/report.json").read())
    assert {u["id"] for u in report["unreadable"]} == {index[0]["id"], index[1]["id"]}
    assert len(members) == 10
    assert Image.open("data/dedup/groups.png").size[0] > 0
