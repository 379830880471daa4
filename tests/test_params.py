import dataclasses
import inspect
import re
import typing

import pytest
import yaml

from pipeline.fetch import Fetcher
from pipeline.params import (
    DownloadParams,
    Params,
    ParamsError,
    defaults,
    load_params,
    params_from_dict,
    params_from_yaml,
)
from tests.conftest import ROOT

PROJECT = (ROOT / "params.yaml").read_text(encoding="utf-8")
SECTIONS = typing.get_type_hints(Params)  # {section: its dataclass}
KEYS = [(section, f.name) for section, cls in SECTIONS.items() for f in dataclasses.fields(cls)]


def test_project_params_load():
    p = load_params(ROOT / "params.yaml")
    assert p.download.source == "synthetic"
    assert p.train.resolution in (32, 64, 128, 256)


def test_params_yaml_sets_exactly_the_declared_fields():
    data = yaml.safe_load(PROJECT)
    assert list(data) == list(SECTIONS)
    declared = {}
    for section, key in KEYS:
        declared.setdefault(section, []).append(key)
    assert {s: sorted(v) for s, v in data.items()} == {s: sorted(v) for s, v in declared.items()}


def test_defaults_live_only_in_params_yaml():
    for cls in SECTIONS.values():
        for f in dataclasses.fields(cls):
            assert f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING, (
                f"{cls.__name__}.{f.name} has a default in code; set it in params.yaml only"
            )
    # Fetcher's limits are the download section's: no second set of defaults in its signature.
    names = {f.name for f in dataclasses.fields(DownloadParams)}
    shared = {n: p for n, p in inspect.signature(Fetcher).parameters.items() if n in names}
    assert set(shared) == {
        "workers",
        "per_host",
        "timeout",
        "retries",
        "max_bytes",
        "min_side",
        "ca_bundle",
        "user_agent",
    }
    assert all(p.default is inspect.Parameter.empty for p in shared.values())


def test_params_from_dict_is_params_yaml_with_overrides():
    assert params_from_dict({}) == load_params(ROOT / "params.yaml")
    assert defaults() == yaml.safe_load(PROJECT)
    p = params_from_dict({"train": {"lr": 0.001}})
    assert p.train.lr == 0.001 and p.train.upsample == yaml.safe_load(PROJECT)["train"]["upsample"]


def _without(section: str, key: str | None) -> str:
    """The project's params.yaml text with one setting's line (or a whole section) deleted, as a user would."""
    lines = PROJECT.splitlines(keepends=True)
    start = lines.index(f"{section}:\n")
    end = next((i for i in range(start + 1, len(lines)) if re.match(r"\S", lines[i])), len(lines))
    if key is None:
        return "".join(lines[:start] + lines[end:])
    hit = [i for i in range(start + 1, end) if re.match(rf"  {key}:", lines[i])]
    assert len(hit) == 1
    return "".join(lines[: hit[0]] + lines[hit[0] + 1 :])


@pytest.mark.parametrize(("section", "key"), KEYS, ids=[f"{s}.{k}" for s, k in KEYS])
def test_every_missing_key_is_one_line_naming_it(section, key):
    with pytest.raises(ParamsError) as err:
        params_from_yaml(_without(section, key).encode())
    message = str(err.value)
    assert message.startswith(
        f"params.yaml: {section}.{key}: missing; add `{key}: <value>` under `{section}:`"
    )
    assert "\n" not in message


@pytest.mark.parametrize("section", list(SECTIONS))
def test_every_missing_section_is_one_line_naming_it(section):
    with pytest.raises(ParamsError, match=rf"^params.yaml: {section}: missing section") as err:
        params_from_yaml(_without(section, None).encode())
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"train": {"resolution": 48}}, "train.resolution: must be a power of two"),
        ({"train": {"resolution": 512}}, "train.resolution"),
        ({"train": {"lr": "fast"}}, "train.lr: must be a number"),
        ({"train": {"batch_size": 1.5}}, "train.batch_size: must be a whole number"),
        ({"train": {"learning_rate": 0.1}}, "train.learning_rate: unknown setting"),
        ({"trian": {}}, "trian: unknown section"),
        ({"resize": {"mode": "stretch"}}, "resize.mode: must be one of crop, pad"),
        ({"resize": {"background": "blue-ish"}}, "resize.background"),
        ({"dedup": {"threshold": 64}}, "dedup.threshold"),
        ({"curate": {"include_pending": "yes"}}, "curate.include_pending: must be true or false"),
        ({"download": {"source": "altavista"}}, "download.source: must be one of"),
        ({"download": {"count": 0}}, "download.count"),
        ({"train": []}, "train: must be a mapping of settings"),
    ],
)
def test_bad_values_name_the_param(data, needle):
    with pytest.raises(ParamsError) as err:
        params_from_dict(data)
    assert needle in str(err.value)
    assert "\n" not in str(err.value)


def test_bad_yaml_names_the_line(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("train:\n  lr: [0.1\n")
    with pytest.raises(ParamsError, match=r"params.yaml:\d+: not valid YAML"):
        load_params(path)


def test_int_is_accepted_for_float_and_whole_float_for_int():
    assert params_from_dict({"train": {"kimg": 3}}).train.kimg == 3.0
    assert params_from_dict({"download": {"max_bytes": 2e7}}).download.max_bytes == 20_000_000


def test_train_resolution_is_checked_against_resize_size_even_when_only_resize_is_given():
    # params.yaml's train.resolution (64) against a smaller resize.size: one line naming both.
    with pytest.raises(ParamsError, match=r"train.resolution: 64 is above resize.size 32; lower"):
        params_from_dict({"resize": {"size": 32}})
    assert params_from_dict({"resize": {"size": 32}, "train": {"resolution": 32}}).train.resolution == 32


def _gpu_recipe() -> list[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("### A real Mario run on a GPU", 1)[1].split("\n#", 1)[0]
    block = re.search(r"```sh\n(dvc exp run .*?)```", section, re.S)
    assert block, "README's GPU recipe is a `dvc exp run -S ...` block"
    return re.findall(r"-S (\S+)", block.group(1))


def test_readme_gpu_recipe_is_a_valid_set_of_overrides():
    # The GPU recipe is overrides on params.yaml, not code defaults: each one names a real key, and
    # together they load.
    overrides: dict = {}
    for item in _gpu_recipe():
        key, value = item.split("=", 1)
        section, name = key.split(".")
        assert name in defaults()[section], f"README GPU recipe: {key} is not in params.yaml"
        overrides.setdefault(section, {})[name] = yaml.safe_load(value)
    p = params_from_dict(overrides)
    assert p.train.resolution == 256 and p.resize.size == 256
