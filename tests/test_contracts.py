"""pipeline/contracts.py: the declared files agree with dvc.yaml and with what the stages really write."""

import ast
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import contracts
from pipeline.contracts import DEDUP_GROUPS, RAW_INDEX, TABLES, Table
from pipeline.errors import PipelineError
from tests.conftest import ROOT

STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def outs(stage: str) -> list[str]:
    return [next(iter(o)) if isinstance(o, dict) else o for o in STAGES[stage].get("outs", [])]


@pytest.mark.parametrize("table", TABLES, ids=[str(t.path) for t in TABLES])
def test_each_table_is_an_output_of_the_stage_said_to_write_it(table):
    assert any(table.path == Path(o) or Path(o) in table.path.parents for o in outs(table.stage))


def test_each_table_is_read_only_by_stages_that_depend_on_it():
    # Where a stage lists a folder or file as a dep, every table inside it comes from an upstream stage.
    order = list(STAGES)
    for stage, spec in STAGES.items():
        for dep in spec.get("deps", []):
            for table in TABLES:
                if table.path == Path(dep) or Path(dep) in table.path.parents:
                    assert order.index(table.stage) < order.index(stage), (stage, table.path)


cells = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
group_rows = st.lists(
    st.fixed_dictionaries(
        {
            "id": cells,
            "group": cells,
            "kept": st.booleans(),
            "distance": st.integers(0, 256) | st.none(),
            "score": st.floats(allow_nan=False, allow_infinity=False) | st.none(),
            "colour_diff": st.floats(0, 255),
            "match": st.sampled_from(["kept", "exact", "near"]),
            "file": cells,
        }
    ),
    max_size=5,
)


@settings(max_examples=60, deadline=None)
@given(rows=group_rows)
def test_typed_rows_round_trip(tmp_path_factory, rows):
    root = tmp_path_factory.mktemp("t")
    DEDUP_GROUPS.write(rows, root)
    back = DEDUP_GROUPS.read(root)
    assert back == rows
    assert all(type(b["kept"]) is bool and type(b["colour_diff"]) is float for b in back)


def test_booleans_are_spelled_once():
    assert contracts.encode_bool(True) == "true" and contracts.decode_bool("false") is False
    for bad in ("True", "yes", "1", " true"):
        with pytest.raises(ValueError):
            contracts.decode_bool(bad)


def test_bad_files_are_one_line_naming_file_line_and_stage(tmp_path):
    with pytest.raises(
        PipelineError, match=r"^data/dedup/groups.csv: not found; run `dvc repro dedup` first$"
    ):
        DEDUP_GROUPS.read(tmp_path)
    path = tmp_path / DEDUP_GROUPS.path
    path.parent.mkdir(parents=True)
    path.write_text("id,group,kept,distance,score,colour_diff,match\n")
    with pytest.raises(PipelineError, match=r"^data/dedup/groups.csv:1: no column 'file'"):
        DEDUP_GROUPS.read(tmp_path)
    path.write_text(
        "id,group,kept,distance,score,colour_diff,match,file\na,a,true,0,1.0,0.0,kept,a.png\nb,a,yes,1,,,near,b.png\n"
    )
    with pytest.raises(PipelineError) as err:
        DEDUP_GROUPS.read(tmp_path)
    assert str(err.value) == (
        "data/dedup/groups.csv:3: kept: 'yes' is not a bool; run `dvc repro --force dedup`"
    )


def test_an_index_from_before_the_licence_columns_still_reads(tmp_path):
    (tmp_path / "data/raw").mkdir(parents=True)
    head = ",".join(RAW_INDEX.columns)
    (tmp_path / RAW_INDEX.path).write_text(f"{head}\nx,synthetic,,o,,x.png,ab,10,64,48,PNG,t\n")
    (row,) = RAW_INDEX.read(tmp_path)
    assert row["width"] == 64 and row["bytes"] == 10 and row["license"] == "" and row["attribution"] == ""


def test_writing_a_row_without_a_declared_column_is_a_bug(tmp_path):
    with pytest.raises(ValueError, match="has no 'file'"):
        Table(Path("x.csv"), "dedup", ("id", "file")).write([{"id": "a"}], tmp_path)


def test_the_stages_write_exactly_the_declared_columns(in_tmp):
    from pipeline import curate, dedup, download, resize
    from pipeline.params import params_from_dict

    params = params_from_dict(
        {
            "download": {"count": 12},
            "dedup": {"workers": 1},
            "curate": {"include_pending": True},
            "resize": {"workers": 1},
        }
    )
    download.run(params)
    dedup.run(params)
    curate.run(params)
    resize.run(params)
    for table in TABLES:
        if table.path.exists():
            header = table.path.read_text(encoding="utf-8").splitlines()[0].split(",")
            assert header == table.fields or header == list(table.columns), table.path
            table.read()  # every value decodes
    web_only = {contracts.RAW_URLS.path, contracts.RAW_REJECTED.path, contracts.PROCESSED_ATTRIBUTION.path}
    assert {t.path for t in TABLES if not t.path.exists()} <= web_only  # the synthetic source has no URLs
    assert len(contracts.PROCESSED_INDEX.read()) == len(DEDUP_GROUPS.read()) - sum(
        not r["kept"] for r in DEDUP_GROUPS.read()
    )


# Modules that still spell a contract file's name by hand (not yet moved to pipeline/contracts.py).
# Remove a module from this list when it adopts the declarations; do not add to it.
HAND_SPELLED: set[str] = set()  # every stage module uses contracts.py


def test_no_other_module_spells_a_contract_file_name():
    names = {t.path.name for t in TABLES} | {"report.json", "metrics.json", "manifest.csv"}
    offenders = []
    for path in sorted([*(ROOT / "pipeline").glob("*.py"), *(ROOT / "flows").glob("*.py")]):
        if path.name in {"contracts.py", "paths.py"} | HAND_SPELLED:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            text = node.value if isinstance(node, ast.Constant) else None
            if isinstance(text, str) and any(text == n or text.endswith("/" + n) for n in names):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}")
    assert not offenders, "use pipeline/contracts.py: " + "; ".join(offenders)
