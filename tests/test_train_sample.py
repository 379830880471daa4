import json

import pytest
import torch
from PIL import Image

from pipeline import paths, sample, train
from pipeline.errors import PipelineError
from pipeline.images import write_csv_atomic
from pipeline.model import load_generator
from pipeline.params import params_from_dict

TINY = {
    "resize": {"size": 64},
    "train": {"resolution": 32, "channels": 4, "batch_size": 8, "kimg": 0.04, "log_kimg": 0.02},
    "sample": {"n": 6, "nrow": 3},
}


def make_processed(n=10, size=64):
    paths.PROCESSED.mkdir(parents=True)
    rows = []
    for i in range(n):
        Image.effect_noise((size, size), 40 + i).convert("RGB").save(paths.PROCESSED / f"x{i}.png")
        rows.append({"id": f"x{i}", "file": f"x{i}.png"})
    write_csv_atomic(paths.PROCESSED / "index.csv", ["id", "file"], rows)


def test_train_then_sample(in_tmp):
    make_processed()
    params = params_from_dict(TINY)
    metrics = train.run(params)
    assert set(metrics) >= {"train/loss_d", "train/loss_g", "train/img_per_sec"}
    _g, config = load_generator(str(paths.MODEL))
    assert config["resolution"] == 32
    logged = json.loads((paths.DVCLIVE / "metrics.json").read_text())
    assert "loss_g" in logged["train"]
    assert (paths.DVCLIVE / "plots/images/fixed_noise.png").exists()

    sample.run(params)
    grid = Image.open(paths.SAMPLES / "grid.png")
    assert grid.size == (3 * 34 + 2, 2 * 34 + 2)
    singles = sorted(p.name for p in paths.SAMPLES.glob("[0-9]*.png"))
    assert singles == [f"{i:03d}.png" for i in range(6)]
    again = sample.generate(str(paths.MODEL), 6, params.sample.seed, "cpu")
    assert torch.equal(again, sample.generate(str(paths.MODEL), 6, params.sample.seed, "cpu"))


def test_resolution_above_processed_size_is_an_error(in_tmp):
    params = params_from_dict({"resize": {"size": 64}, "train": {"resolution": 128}})
    with pytest.raises(PipelineError, match="train.resolution: 128 is above resize.size 64"):
        train.run(params)


def test_empty_training_set_is_an_error(in_tmp):
    make_processed(n=0)
    with pytest.raises(PipelineError, match="no training images"):
        train.run(params_from_dict(TINY))


def test_nan_loss_stops_with_a_clear_error(in_tmp, monkeypatch):
    make_processed()
    real = torch.nn.functional.binary_cross_entropy_with_logits
    monkeypatch.setattr(
        train.F, "binary_cross_entropy_with_logits", lambda *a, **k: real(*a, **k) * float("nan")
    )
    with pytest.raises(PipelineError, match="loss became nan at step 1; lower train.lr"):
        train.run(params_from_dict(TINY))
    assert not paths.MODEL.exists()
