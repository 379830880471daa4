import csv
import json

import pytest

from pipeline import curate, dedup, download
from pipeline.__main__ import main
from pipeline.curate import Manifest, ManifestError, parse_manifest, read_manifest, write_manifest
from pipeline.errors import PipelineError
from pipeline.params import params_from_dict
from tests.conftest import ROOT, write_params


def test_spreadsheet_style_file_is_read():
    text = "\ufeffid , Decision,note,rating\r\nsyn-00001, Accept ,nice,5\r\n\r\nsyn-00002,reject,,1\r\nsyn-00003,,,\r\n"
    m = parse_manifest(text)
    assert m.decision("syn-00001") == "accept"
    assert m.decision("syn-00002") == "reject"
    assert m.decision("syn-00003") == ""
    assert m.fields == ["id", "decision", "note", "rating"]
    assert m.rows["syn-00001"]["rating"] == "5"


def test_unknown_decision_names_the_line():
    with pytest.raises(ManifestError, match=r"m.csv:3: unknown decision 'acept' for b"):
        parse_manifest("id,decision,note\na,accept,\nb,acept,\n", "m.csv")


def test_duplicate_id_names_both_lines():
    with pytest.raises(ManifestError, match=r"m.csv:4: duplicate id a \(also on line 2\)"):
        parse_manifest("id,decision,note\na,accept,\nb,reject,\na,reject,\n", "m.csv")


def test_header_is_required():
    with pytest.raises(ManifestError, match="header must name the columns id and decision"):
        parse_manifest("syn-1,accept\n", "m.csv")


def test_write_is_sorted_and_keeps_extra_columns(tmp_path):
    m = parse_manifest("id,decision,note,who\nb,reject,,me\na,accept,x,you\n")
    write_manifest(tmp_path / "m.csv", m)
    assert (tmp_path / "m.csv").read_text() == "id,decision,note,who\na,accept,x,you\nb,reject,,me\n"
    assert read_manifest(tmp_path / "m.csv").rows == m.rows


@pytest.fixture
def with_candidates(in_tmp):
    write_params(in_tmp, {"download": {"count": 20}})
    params = params_from_dict({"download": {"count": 20}})
    download.run(params)
    dedup.run(params)
    ids = [r["id"] for r in csv.DictReader(open("data/dedup/candidates.csv"))]
    return params, ids


def test_accepted_pending_and_rejected(with_candidates):
    params, ids = with_candidates
    write_manifest(curate.paths.MANIFEST, Manifest())
    curate.decide(params, "accept", ids[:3])
    curate.decide(params, "reject", ids[3:5], note="not mario")
    s = curate.run(params)
    assert s.accepted == ids[:3] and s.rejected == ids[3:5] and s.pending == ids[5:]
    used = [r["id"] for r in csv.DictReader(open("data/curated/accepted.csv"))]
    assert used == ids[:3]
    with_pending = params_from_dict({"download": {"count": 20}, "curate": {"include_pending": True}})
    curate.run(with_pending)
    used = [r["id"] for r in csv.DictReader(open("data/curated/accepted.csv"))]
    assert used == [i for i in ids if i not in ids[3:5]]


def test_zero_accepted_says_how_to_curate(with_candidates):
    params, _ = with_candidates
    with pytest.raises(PipelineError, match="no accepted images.*curate accept"):
        curate.run(params)


def test_cli_sync_accept_reject_status(with_candidates, capsys):
    _, ids = with_candidates
    assert main(["curate", "sync"]) == 0
    assert len(read_manifest(curate.paths.MANIFEST).rows) == len(ids)
    assert main(["curate", "accept", ids[0], ids[1], "--note", "good"]) == 0
    assert main(["curate", "reject", ids[2]]) == 0
    assert main(["curate", "status"]) == 0
    assert f"accepted 2, rejected 1, pending {len(ids) - 3}, orphaned 0" in capsys.readouterr().out
    assert main(["curate", "accept", "--all-pending"]) == 0
    m = read_manifest(curate.paths.MANIFEST)
    assert m.rows[ids[0]]["note"] == "good"
    assert sum(m.decision(i) == "accept" for i in ids) == len(ids) - 1
    assert main(["curate", "accept", "syn-99999"]) == 2
    assert "unknown image id syn-99999" in capsys.readouterr().err


def test_cli_bad_manifest_is_one_line(with_candidates, capsys):
    curate.paths.MANIFEST.parent.mkdir(parents=True, exist_ok=True)
    curate.paths.MANIFEST.write_text("id,decision,note\nsyn-00000,maybe,\n")
    assert main(["curate"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "error: data/curation/manifest.csv:2: unknown decision 'maybe' for syn-00000 "
        "(use accept or reject, or leave it blank for pending)"
    )


def test_shipped_manifest_matches_ground_truth(in_tmp):
    """The manifest in git decides every default candidate as a person would."""
    params = params_from_dict({})
    download.run(params)
    dedup.run(params)
    truth = {r["id"]: r for r in csv.DictReader(open("data/raw/ground_truth.csv"))}
    manifest = read_manifest(ROOT / "data/curation/manifest.csv")
    for image_id, row in manifest.rows.items():
        expected = "accept" if truth[image_id]["kind"] == "character" else "reject"
        assert row["decision"] == expected, image_id
    candidates = [r["id"] for r in csv.DictReader(open("data/dedup/candidates.csv"))]
    assert all(manifest.decision(i) for i in candidates), "pending candidates in the shipped manifest"


def test_excel_line_numbers_and_extra_cells():
    with pytest.raises(ManifestError, match=r"m.csv:3: unknown decision 'nope' for b"):
        parse_manifest("\ufeffid,decision\r\na,accept\r\nb,nope\r\n", "m.csv")
    with pytest.raises(ManifestError, match=r"m.csv:2: 4 cells but the header names 3 columns"):
        parse_manifest("id,decision,note\na,accept,,oops\n", "m.csv")
    m = parse_manifest("id,decision,note\na,accept,,\nb , reject  ,  \n", "m.csv")
    assert m.decision("a") == "accept" and m.decision("b") == "reject"


def test_decisions_follow_duplicate_groups():
    groups = {"a": "a", "a2": "a", "b": "b", "b2": "b", "c": "c", "c2": "c", "c3": "c", "d": "d"}
    m = parse_manifest(
        "id,decision,note\na2,accept,\nb,reject,\nb2,accept,\nc2,accept,\nc3,reject,\ngone,accept,\n"
    )
    s = curate.summarize(m, ["a", "b", "c", "d"], groups)
    assert s.accepted == ["a"], "a duplicate's decision applies to the kept image"
    assert s.rejected == ["b", "c"], "the kept image's own row wins; disagreeing duplicates reject"
    assert s.pending == ["d"]
    assert s.orphaned == ["gone"], "rows of duplicates are not orphans"
    assert s.inherited == {"a": "a2", "c": "c3"} and s.conflicts == ["c"]


@pytest.fixture
def duplicate(with_candidates):
    groups = list(csv.DictReader(open("data/dedup/groups.csv")))
    member = next(r for r in groups if r["group"] != r["id"])
    return member["id"], member["group"]


def test_cli_decision_on_a_duplicate_goes_to_its_kept_image(with_candidates, duplicate, capsys):
    params, _ = with_candidates
    member, kept = duplicate
    assert main(["curate", "accept", member]) == 0
    assert {i: r["decision"] for i, r in read_manifest(curate.paths.MANIFEST).rows.items()} == {
        kept: "accept"
    }
    s = curate.run(params)
    assert s.accepted == [kept]


def test_hand_edited_duplicate_row_decides_the_kept_image(with_candidates, duplicate):
    params, ids = with_candidates
    member, kept = duplicate
    curate.paths.MANIFEST.parent.mkdir(parents=True, exist_ok=True)
    curate.paths.MANIFEST.write_text(f"id,decision,note\n{member},accept,old scrape kept this copy\n")
    s = curate.run(params)
    assert s.accepted == [kept] and s.inherited == {kept: member} and s.orphaned == []
    report = json.loads(open("data/curated/report.json").read())
    assert report["inherited_from_duplicates"] == {kept: member}
    assert main(["curate", "sync"]) == 0
    m = read_manifest(curate.paths.MANIFEST)
    assert kept not in m.rows, "sync adds rows only for pending candidates"
    assert len(m.rows) == len(ids)


def test_orphan_rows_are_kept_and_counted(with_candidates, capsys):
    _, ids = with_candidates
    curate.paths.MANIFEST.parent.mkdir(parents=True, exist_ok=True)
    curate.paths.MANIFEST.write_text(f"id,decision,note\nzzz-old,accept,from last year\n{ids[0]},accept,\n")
    assert main(["curate", "sync"]) == 0
    assert main(["curate", "reject", ids[1]]) == 0
    assert main(["curate", "accept", "--all-pending"]) == 0
    m = read_manifest(curate.paths.MANIFEST)
    assert m.rows["zzz-old"] == {"id": "zzz-old", "decision": "accept", "note": "from last year"}
    assert list(m.rows) == sorted(m.rows), "rows are written sorted by id"
    capsys.readouterr()
    assert main(["curate", "status"]) == 0
    assert capsys.readouterr().out.strip() == f"accepted {len(ids) - 1}, rejected 1, pending 0, orphaned 1"
