import json
import logging
import sys
import types

import pytest
import torch

from pipeline import evaluate, paths
from pipeline.errors import PipelineError
from pipeline.params import ParamsError, params_from_dict
from tests.test_sample import make_processed, save_model

SMALL = {"n": 8, "seed": 5, "patches_per_image": 16, "projections": 32}


def params(**evaluate_params):
    return params_from_dict({"train": {"device": "cpu"}, "evaluate": SMALL | evaluate_params})


@pytest.fixture
def project(in_tmp):
    make_processed(n=10)
    save_model()
    return in_tmp


def test_writes_swd_the_floor_and_their_ratio(project):
    metrics = evaluate.run(params())
    written = json.loads(evaluate.METRICS.read_text())
    assert written == metrics
    # Grouped, so `dvc exp show` columns read swd.avg, floor.avg, ... and one regex picks a group.
    assert set(written) == {"swd", "floor", "images"}
    swd, floor = written["swd"], written["floor"]
    assert set(swd) == {"32", "16", "avg", "over_floor"} and set(floor) == {"32", "16", "avg"}
    assert written["images"] == {"generated": 8, "real": 10}
    assert swd["avg"] == pytest.approx((swd["32"] + swd["16"]) / 2)
    assert swd["over_floor"] == pytest.approx(swd["avg"] / floor["avg"])
    assert swd["avg"] > 0 and floor["avg"] > 0


def test_same_model_and_seed_same_numbers(project):
    first = evaluate.run(params())
    assert evaluate.run(params()) == first
    assert evaluate.run(params(seed=6))["swd"]["avg"] != first["swd"]["avg"]


def test_uses_the_ema_weights(project, monkeypatch):
    seen = []
    real_load = evaluate.load
    monkeypatch.setattr(
        evaluate, "load", lambda path, device, which: seen.append(which) or real_load(path, device, which)
    )
    evaluate.run(params())
    assert seen == ["ema"]


def test_halves_are_disjoint_and_equal():
    real = torch.arange(11).view(11, 1, 1, 1).expand(11, 3, 16, 16)
    a, b = evaluate.split_halves(real, seed=0)
    ids_a, ids_b = set(a[:, 0, 0, 0].tolist()), set(b[:, 0, 0, 0].tolist())
    assert len(ids_a) == len(ids_b) == 5 and not ids_a & ids_b


def test_needs_two_training_images(in_tmp):
    make_processed(n=1)
    save_model()
    with pytest.raises(PipelineError, match="at least 2 training images"):
        evaluate.run(params())


def test_fid_is_skipped_with_one_line_without_weights(project, caplog):
    with caplog.at_level(logging.INFO):
        metrics = evaluate.run(params())
    assert "inception" not in metrics
    assert "FID/KID skipped: set evaluate.inception_weights" in caplog.text


def test_missing_weights_file_is_a_params_error(project):
    with pytest.raises(
        PipelineError, match=r"params.yaml: evaluate.inception_weights: nope.pth is not a file"
    ):
        evaluate.run(params(inception_weights="nope.pth"))


def test_weights_without_torch_fidelity_skip_with_one_line(project, caplog, monkeypatch):
    (project / "inception.pth").write_bytes(b"weights")
    monkeypatch.setitem(sys.modules, "torch_fidelity", None)  # import fails
    with caplog.at_level(logging.INFO):
        metrics = evaluate.run(params(inception_weights="inception.pth"))
    assert "inception" not in metrics
    assert "torch-fidelity is not installed" in caplog.text


def test_fid_and_kid_come_from_torch_fidelity_with_the_local_weights(project, monkeypatch):
    (project / "inception.pth").write_bytes(b"weights")
    calls = {}

    def calculate_metrics(**kwargs):
        calls.update(kwargs)
        return {
            "frechet_inception_distance": 12.5,
            "kernel_inception_distance_mean": 0.01,
            "kernel_inception_distance_std": 0.002,
        }

    monkeypatch.setitem(
        sys.modules, "torch_fidelity", types.SimpleNamespace(calculate_metrics=calculate_metrics)
    )
    metrics = evaluate.run(params(inception_weights="inception.pth"))
    assert metrics["inception"] == {"fid": 12.5, "kid": 0.01, "kid_std": 0.002}
    assert calls["feature_extractor_weights_path"] == "inception.pth"
    assert len(calls["input1"]) == 8 and len(calls["input2"]) == 10
    assert calls["input1"][0].dtype == torch.uint8 and calls["input1"][0].shape == (3, 32, 32)
    assert calls["kid_subset_size"] == 8


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("n", 0, "params.yaml: evaluate.n: must be at least 1, got 0"),
        ("projections", 0, "params.yaml: evaluate.projections: must be at least 1, got 0"),
        ("patches_per_image", -1, "params.yaml: evaluate.patches_per_image: must be at least 1, got -1"),
        ("inception_weights", None, "params.yaml: evaluate.inception_weights: must be a string, got None"),
    ],
)
def test_bad_evaluate_params_are_refused(key, value, message):
    with pytest.raises(ParamsError) as exc:
        params_from_dict({"evaluate": {key: value}})
    assert str(exc.value) == message


def test_model_missing_is_a_clear_error(in_tmp):
    make_processed()
    with pytest.raises(PipelineError, match=f"{paths.MODEL}: not found; train first"):
        evaluate.run(params())
