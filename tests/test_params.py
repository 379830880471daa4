import pytest

from pipeline.params import Params, ParamsError, load_params, params_from_dict
from tests.conftest import ROOT


def test_project_params_load():
    p = load_params(ROOT / "params.yaml")
    assert p.download.source == "synthetic"
    assert p.train.resolution in (32, 64, 128, 256)


def test_missing_sections_take_defaults():
    assert params_from_dict({}) == Params()


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


def test_int_is_accepted_for_float():
    assert params_from_dict({"train": {"kimg": 3}}).train.kimg == 3.0


def test_train_resolution_is_checked_against_resize_size_even_when_only_resize_is_given():
    # The default train.resolution (64) against a smaller resize.size: one line naming both.
    with pytest.raises(ParamsError, match=r"train.resolution: 64 is above resize.size 32; lower"):
        params_from_dict({"resize": {"size": 32}})
    assert params_from_dict({"resize": {"size": 32}, "train": {"resolution": 32}}).train.resolution == 32
