"""The train stage: outputs, every loss and option, checkpoint/resume, NaN stop, signals, DDP, params."""

import csv
import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from pipeline import distributed, live, loss, paths, tensors, train
from pipeline.errors import PipelineError
from pipeline.images import write_csv_atomic
from pipeline.model import load_generator
from pipeline.params import ParamsError, params_from_dict
from tests.conftest import ROOT, env, merge

# 32 px, 4 channels, 8 images a step: a step takes milliseconds.
TINY = {
    "resize": {"size": 64},
    "train": {
        "resolution": 32,
        "channels": 4,
        "batch_size": 8,
        "kimg": 0.08,
        "log_kimg": 0.016,
        "sample_kimg": 0.04,
        "checkpoint_kimg": 0.04,
        "threads": 1,
        # What these tests were written against (params.yaml's choices differ; it is the one source
        # of defaults, so the tests pin theirs).
        "upsample": "deconv",
        "diffaugment": "color,translation,cutout",
        "eval_kimg": 0,
    },
}


def tiny(**train_params) -> dict:
    return merge(TINY, {"train": train_params})


def make_processed(n=10, size=64):
    paths.PROCESSED.mkdir(parents=True)
    rows = []
    for i in range(n):
        noise = torch.randint(0, 256, (size, size, 3), generator=torch.Generator().manual_seed(i))
        Image.fromarray(noise.to(torch.uint8).numpy()).save(paths.PROCESSED / f"x{i}.png")
        rows.append({"id": f"x{i}", "file": f"x{i}.png"})
    write_csv_atomic(paths.PROCESSED / "index.csv", ["id", "file"], rows)


def checkpoint() -> dict:
    return torch.load(train.CHECKPOINT, weights_only=True)


def test_train_writes_generator_checkpoint_and_logs(in_tmp):
    make_processed()
    metrics = train.run(params_from_dict(TINY))
    assert set(metrics) >= {
        "train/loss_d",
        "train/loss_g",
        "train/d_real",
        "train/d_fake",
        "train/img_per_sec",
    }
    g_ema, config = load_generator(paths.MODEL)
    g_raw, _ = load_generator(paths.MODEL, which="raw")
    assert config == {
        "resolution": 32,
        "latent_dim": 100,
        "channels": 4,
        "max_channels": 512,
        "upsample": "deconv",
    }
    assert not g_ema.training
    z = torch.randn(3, 100)
    assert g_ema(z).shape == (3, 3, 32, 32)
    assert not torch.equal(g_ema(z), g_raw(z))  # two different sets of weights
    saved = torch.load(paths.MODEL, weights_only=True)
    assert set(saved) == {"config", "state_dict", "raw_state_dict", "meta"}
    assert saved["meta"]["steps"] == 10

    state = checkpoint()
    assert state["step"] == 10 and state["nimg"] == 80
    assert set(state) >= {"G", "D", "G_ema", "opt_G", "opt_D", "rng", "torch_rng", "params"}

    logged = json.loads((paths.DVCLIVE / "metrics.json").read_text())
    assert {"loss_d", "loss_g", "d_real", "d_fake", "img_per_sec", "lr_g", "lr_d"} <= set(logged["train"])
    images = paths.DVCLIVE / "plots/images"
    assert Image.open(images / "fixed_noise_ema.png").size == (8 * 34 + 2, 8 * 34 + 2)
    assert (images / "fixed_noise_raw.png").exists()
    curve = (paths.DVCLIVE / "plots/metrics/train/loss_g.tsv").read_text().splitlines()
    assert len(curve) == 1 + 5  # header + one row per log_kimg


def test_load_generator_rejects_an_unknown_choice(in_tmp):
    make_processed()
    train.run(params_from_dict(tiny(kimg=0.016)))
    with pytest.raises(ValueError, match="which"):
        load_generator(paths.MODEL, which="best")


def test_resolution_above_processed_size_is_an_error(in_tmp):
    params = params_from_dict({"resize": {"size": 64}})
    params = dataclasses.replace(params, train=dataclasses.replace(params.train, resolution=128))
    with pytest.raises(PipelineError, match="train.resolution: 128 is above resize.size 64"):
        train.run(params)


def test_empty_training_set_is_an_error(in_tmp):
    make_processed(n=0)
    with pytest.raises(PipelineError, match="no training images"):
        train.run(params_from_dict(TINY))


OPTIONS = [
    {"loss": "hinge"},
    {"spectral_norm": True},
    {"upsample": "nearest"},
    {"r1_gamma": 1.0},
    {"diffaugment": "none"},
    {"diffaugment": "translation"},
    {"ema_kimg": 0.0},
    {"precision": "bf16"},
    {"max_channels": 4, "channels": 4},
    {"loss": "hinge", "spectral_norm": True, "upsample": "nearest", "r1_gamma": 0.5},
]


@pytest.mark.parametrize("option", OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_a_few_steps_of_each_loss_and_option(option, monkeypatch):
    monkeypatch.setattr(loss, "R1_INTERVAL", 2)  # so that R1 runs within the few steps
    p = params_from_dict(tiny(**option)).train
    data = torch.randint(0, 256, (12, 3, 32, 32), dtype=torch.uint8)
    t = train.Trainer(p, data, torch.device("cpu"))
    g0 = [q.detach().clone() for q in t.g.parameters()]
    d0 = [q.detach().clone() for q in t.d.parameters()]
    e0 = [q.detach().clone() for q in t.g_ema.parameters()]
    for _ in range(4):
        t.step()
    (loss_d, loss_g, d_real, d_fake), steps = t.take_stats()
    assert steps == 4
    assert all(map(torch.isfinite, map(torch.tensor, (loss_d, loss_g)))), (loss_d, loss_g)
    assert 0 < d_real < 1 and 0 < d_fake < 1
    assert any(not torch.equal(a, b) for a, b in zip(g0, t.g.parameters(), strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(d0, t.d.parameters(), strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(e0, t.g_ema.parameters(), strict=True))
    assert t.sample(t.fixed_z[:4]).shape == (4, 3, 32, 32)


def test_g_lr_ratio_sets_gs_learning_rate_and_leaves_ds_at_lr():
    p = params_from_dict(tiny(lr=3e-4, g_lr_ratio=2.5)).train
    t = train.Trainer(p, torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8), torch.device("cpu"))
    assert t.opt_g.param_groups[0]["lr"] == pytest.approx(7.5e-4)
    assert t.opt_d.param_groups[0]["lr"] == pytest.approx(3e-4)


@pytest.mark.parametrize(
    ("avx512_bf16", "amx", "want"),
    [(False, False, "fp32"), (True, False, "bf16"), (False, True, "bf16"), ("raise", "raise", "fp32")],
)
def test_auto_precision_is_bf16_only_where_the_cpu_has_it(avx512_bf16, amx, want, monkeypatch):
    from pipeline import trainer

    def probe(value):
        def check():
            if value == "raise":
                raise RuntimeError("no cpuinfo")
            return value

        return check

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", probe(avx512_bf16), raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", probe(amx), raising=False)
    assert trainer.auto_precision(torch.device("cpu")) == want
    assert trainer.auto_precision(torch.device("cuda")) == "bf16"
    assert trainer.auto_precision(torch.device("mps")) == "fp32"
    data = torch.randint(0, 256, (12, 3, 32, 32), dtype=torch.uint8)
    t = train.Trainer(params_from_dict(tiny(precision="auto")).train, data, torch.device("cpu"))
    assert t.precision == want
    t.step()
    assert t.finite_so_far()


def test_auto_precision_without_the_private_probes_is_fp32(monkeypatch):
    from pipeline import trainer

    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported", raising=False)
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported", raising=False)
    assert trainer.auto_precision(torch.device("cpu")) == "fp32"


def test_ema_lags_the_raw_generator_and_zero_ema_follows_it():
    data = torch.randint(0, 256, (12, 3, 32, 32), dtype=torch.uint8)

    def gap(ema_kimg):
        t = train.Trainer(params_from_dict(tiny(ema_kimg=ema_kimg)).train, data, torch.device("cpu"))
        for _ in range(3):
            t.step()
        return max(
            (a - b).abs().max().item() for a, b in zip(t.g_ema.parameters(), t.g.parameters(), strict=True)
        )

    assert gap(0.0) == 0.0
    assert gap(10.0) > 0.0


def test_interrupt_and_resume_give_the_same_state_as_one_run(tmp_path, monkeypatch):
    params = params_from_dict(tiny(kimg=0.12, checkpoint_kimg=0.08))  # 15 steps, checkpoints at 10, 15
    (tmp_path / "whole").mkdir()
    monkeypatch.chdir(tmp_path / "whole")
    make_processed()
    train.run(params)
    whole = checkpoint()

    (tmp_path / "parts").mkdir()
    monkeypatch.chdir(tmp_path / "parts")
    make_processed()
    real_step = train.Trainer.step

    def step_then_interrupt(self):
        real_step(self)
        if self.step_count == 6:  # between checkpoints: only the signal handler saves this state
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(train.Trainer, "step", step_then_interrupt)
    # Under CI's background shell SIGINT starts out ignored, not default_int_handler.
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(train.TrainingStopped, match="SIGINT at step 6 .*saved models/checkpoint.pt.*resume"):
        train.run(params)
    assert checkpoint()["step"] == 6
    assert not paths.MODEL.exists()
    assert signal.getsignal(signal.SIGINT) == before  # handlers restored

    monkeypatch.setattr(train.Trainer, "step", real_step)
    train.run(params)
    parts = checkpoint()
    assert parts["step"] == whole["step"] == 15
    for key in ("G", "D", "G_ema"):
        for name, value in whole[key].items():
            torch.testing.assert_close(parts[key][name], value, rtol=1e-5, atol=1e-6, msg=f"{key}.{name}")
    torch.testing.assert_close(parts["opt_G"]["state"], whole["opt_G"]["state"], rtol=1e-5, atol=1e-6)


def test_resume_only_with_matching_params_and_data(in_tmp, caplog):
    caplog.set_level(logging.INFO, logger="pipeline.train")
    make_processed()
    train.run(params_from_dict(TINY))
    assert checkpoint()["step"] == 10

    caplog.clear()
    train.run(params_from_dict(tiny(kimg=0.16, log_kimg=0.04)))  # more images: continue
    assert "resuming from models/checkpoint.pt at step 10" in caplog.text
    assert checkpoint()["step"] == 20

    caplog.clear()
    train.run(params_from_dict(tiny(kimg=0.16, lr=0.001)))  # another lr: the old state does not apply
    assert "for other settings (train.lr); starting fresh" in caplog.text
    assert "resuming" not in caplog.text

    caplog.clear()
    train.run(params_from_dict(tiny(kimg=0.24, lr=0.001, resume=False)))
    assert "train.resume is false; starting fresh" in caplog.text

    caplog.clear()
    Image.new("RGB", (64, 64), "red").save(paths.PROCESSED / "x0.png")
    train.run(params_from_dict(tiny(kimg=0.32, lr=0.001)))
    assert "for other settings (training images); starting fresh" in caplog.text


@pytest.mark.parametrize(
    ("name", "before", "other"),
    [
        ("g_lr_ratio", 1.0, 3.0),  # before the param existed, G learnt at lr
        ("shift", 0.125, 0.0625),  # and translation moved images by up to 1/8
    ],
)
def test_a_checkpoint_from_before_a_param_resumes_only_at_the_value_it_trained_with(
    in_tmp, caplog, name, before, other
):
    caplog.set_level(logging.INFO, logger="pipeline.train")
    make_processed()
    train.run(params_from_dict(tiny(**{name: before})))
    state = checkpoint()
    del state["resume_key"][name]  # as written before the param existed
    torch.save(state, paths.CHECKPOINT)

    caplog.clear()
    train.run(params_from_dict(tiny(kimg=0.16, **{name: other})))
    assert f"for other settings (train.{name}); starting fresh" in caplog.text

    torch.save(state, paths.CHECKPOINT)
    caplog.clear()
    train.run(params_from_dict(tiny(kimg=0.16, **{name: before})))
    assert "resuming from models/checkpoint.pt at step 10" in caplog.text


def test_a_finished_checkpoint_is_not_resumed(in_tmp, caplog):
    caplog.set_level(logging.INFO, logger="pipeline.train")
    make_processed()
    train.run(params_from_dict(TINY))
    caplog.clear()
    train.run(params_from_dict(tiny(sample_kimg=0.08)))
    assert "already reached 0.1 kimg; training again from scratch" in caplog.text
    assert (paths.DVCLIVE / "metrics.json").exists()


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(in_tmp, monkeypatch):
    make_processed()
    real_loss = train.Trainer.d_loss

    def nan_after_step_6(self, out_real, out_fake):
        loss = real_loss(self, out_real, out_fake)
        return loss * float("nan") if self.step_count >= 6 else loss

    monkeypatch.setattr(train.Trainer, "d_loss", nan_after_step_6)
    with pytest.raises(
        train.TrainingStopped,
        match=r"loss became nan or inf at step 7; stopped, models/checkpoint.pt \(step 5\) is kept; lower train.lr",
    ):
        train.run(params_from_dict(tiny(log_kimg=0.008, checkpoint_kimg=0.04)))
    state = checkpoint()
    assert state["step"] == 5
    assert all(torch.isfinite(v).all() for v in state["G"].values() if v.is_floating_point())
    assert not paths.MODEL.exists()


def test_nan_before_any_checkpoint_says_so(in_tmp, monkeypatch):
    make_processed()
    monkeypatch.setattr(train.Trainer, "g_loss", lambda self, out: out.mean() * float("nan"))
    with pytest.raises(train.TrainingStopped, match="between step 1 and 2; stopped, no checkpoint yet"):
        train.run(params_from_dict(TINY))
    assert not train.CHECKPOINT.exists()


def write_params(extra: dict) -> None:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    (paths.PROCESSED.parent.parent / "params.yaml").write_text(yaml.safe_dump(merge(params, extra)))


def test_sigterm_saves_a_checkpoint_and_exits_with_one_line(in_tmp):
    make_processed()
    write_params(tiny(kimg=1000, log_kimg=0.008, checkpoint_kimg=1000))
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "train"],
        env=env() | {"PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not (paths.DVCLIVE / "metrics.json").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "SIGTERM at step" in errors[0] and "resume" in errors[0], err
    assert checkpoint()["step"] >= 1


def test_two_process_ddp_on_cpu(in_tmp):
    make_processed(n=12)
    write_params(tiny(kimg=0.064, log_kimg=0.016, sample_kimg=0.032, checkpoint_kimg=0.032))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    proc = subprocess.run(
        [*cmd, "-m", "pipeline", "train"],
        env=env() | {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "on cpu x2" in proc.stderr
    assert "ranks disagree" not in proc.stderr
    assert proc.stderr.count("-> models/generator.pt") == 1  # one writer
    state = checkpoint()
    assert state["step"] == 8 and state["nimg"] == 64  # global batch 8 = 2 ranks x 4
    assert len(state["rng"]) == 2
    assert not torch.equal(state["rng"][0]["perm"], state["rng"][1]["perm"])
    logged = json.loads((paths.DVCLIVE / "metrics.json").read_text())
    assert logged["step"] == 8
    load_generator(paths.MODEL)


def test_ranks_with_different_checkpoints_stop_with_one_line(in_tmp, monkeypatch):
    # Several machines: another rank's disk holds a checkpoint at step 5, this one none.
    make_processed()
    monkeypatch.setattr(distributed, "gather", lambda obj, world: [obj, 5])
    with pytest.raises(
        PipelineError, match=r"ranks found different models/checkpoint.pt \(step by rank: \[None, 5\]\)"
    ):
        train.run(params_from_dict(TINY))
    assert not paths.MODEL.exists()


def test_ddp_needs_a_batch_that_splits(in_tmp, monkeypatch):
    make_processed()
    monkeypatch.setattr(distributed, "init", lambda device: (0, 3, device))
    with pytest.raises(PipelineError, match="train.batch_size: 8 does not split over 3 ranks"):
        train.run(params_from_dict(TINY))


@pytest.mark.parametrize(
    ("train_params", "needle"),
    [
        ({"resolution": 48}, "train.resolution: must be a power of two from 32 to 512, got 48"),
        ({"resolution": 1024}, "train.resolution: must be a power of two from 32 to 512"),
        ({"resolution": 512}, "train.resolution: 512 is above resize.size 256"),
        (
            {"channels": 64, "max_channels": 32},
            "train.max_channels: must be at least train.channels and train.d_channels (64)",
        ),
        ({"d_channels": 64, "max_channels": 32}, "train.d_channels (64), got 32"),
        ({"d_channels": -1}, "train.d_channels: must be 0 (as train.channels) or 1..1024, got -1"),
        ({"upsample": "bilinear"}, "train.upsample: must be one of deconv, nearest"),
        ({"loss": "wgan"}, "train.loss: must be one of bce, hinge"),
        ({"diffaugment": "color,colour"}, "train.diffaugment: unknown augmentation 'colour'"),
        ({"shift": 0}, "train.shift: must be above 0 and at most 0.5"),
        ({"shift": 0.75}, "train.shift: must be above 0 and at most 0.5 (a fraction of the image size"),
        (
            {"shift": 0.005},
            "train.shift: 0.005 moves images by 0 px at train.resolution 64; use at least 0.0078125",
        ),
        ({"ema_kimg": -1}, "train.ema_kimg: must be 0 (no EMA) or more"),
        ({"r1_gamma": -0.1}, "train.r1_gamma: must be 0 (off) or more"),
        ({"batch_size": 1}, "train.batch_size: must be at least 2"),
        ({"checkpoint_kimg": 0}, "train.checkpoint_kimg: must be positive"),
        ({"sample_kimg": -2}, "train.sample_kimg: must be positive"),
        ({"eval_kimg": -1}, "train.eval_kimg: must be 0 (off) or more"),
        ({"precision": "fp16"}, "train.precision: must be one of auto, fp32, bf16"),
        ({"compile": True, "r1_gamma": 1.0}, "train.compile: cannot be combined with train.r1_gamma"),
        ({"resume": "yes"}, "train.resume: must be true or false"),
        ({"g_lr_ratio": 0}, "train.g_lr_ratio: must be above 0 and at most 100"),
        ({"g_lr_ratio": 1000}, "train.g_lr_ratio: must be above 0 and at most 100 (G's learning rate"),
        ({"g_lr_ratio": float("nan")}, "train.g_lr_ratio: must be a finite number, got nan"),
    ],
)
def test_bad_train_params_fail_at_load_with_one_line(train_params, needle):
    with pytest.raises(ParamsError) as err:
        params_from_dict({"train": train_params})
    assert needle in str(err.value)
    assert str(err.value).startswith("params.yaml: train.")
    assert "\n" not in str(err.value)


def test_a_shift_too_small_to_move_a_pixel_is_refused_only_when_translation_is_on():
    with pytest.raises(ParamsError, match="train.shift: 0.005 moves images by 0 px"):
        params_from_dict({"train": {"shift": 0.005, "diffaugment": "color,translation"}})
    assert params_from_dict({"train": {"shift": 0.005, "diffaugment": "color"}}).train.shift == 0.005
    assert params_from_dict({"train": {"shift": 1 / 128}}).train.shift == 1 / 128  # half a pixel at 64: 1 px


def test_project_train_params_are_valid():
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    p = params_from_dict(params).train
    assert p.diffaugment and p.resume
    assert os.path.basename(train.CHECKPOINT) == "checkpoint.pt"


def test_resumed_curves_drop_the_steps_after_the_checkpoint(tmp_path):
    tsv = tmp_path / "train" / "loss_g.tsv"
    tsv.parent.mkdir()
    rows = "".join(f"{100 + s}\t{s}\t0.5\n" for s in range(0, 40, 4))
    tsv.write_text("timestamp\tstep\tloss_g\n" + rows + "140\t4")  # a row torn by kill -9
    live.trim_curves(tmp_path, 17)
    assert [r["step"] for r in csv.DictReader(tsv.open(), delimiter="\t")] == ["0", "4", "8", "12", "16"]


def test_a_fresh_run_clears_the_previous_curves_even_without_dvclive(in_tmp, monkeypatch):
    old = paths.DVCLIVE / "plots" / "metrics" / "train" / "loss_g.tsv"
    old.parent.mkdir(parents=True)
    old.write_text("timestamp\tstep\tloss_g\n1\t500\t0.5\n")
    (paths.DVCLIVE / "metrics.json").write_text('{"step": 500}')
    monkeypatch.setitem(sys.modules, "dvclive", None)  # `import dvclive` now fails
    live.Logger(enabled=True, resume_step=0)
    assert not old.exists() and not (paths.DVCLIVE / "metrics.json").exists()


@pytest.mark.e2e
def test_dvc_repro_after_ctrl_c_resumes_from_the_checkpoint(tmp_path):
    from tests.conftest import make_project, sh

    root = make_project(tmp_path / "proj", {"train": {"kimg": 6, "log_kimg": 0.016, "checkpoint_kimg": 100}})
    first = subprocess.Popen(
        ["dvc", "repro"], cwd=root, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    metrics = root / "dvclive/metrics.json"
    deadline = time.monotonic() + 300
    while not metrics.exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    os.killpg(first.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
    out, _ = first.communicate(timeout=120)
    assert first.returncode != 0, out
    assert "SIGINT at step" in out, out
    stopped_at = torch.load(root / "models/checkpoint.pt", weights_only=True)["step"]

    again = sh("dvc", "repro", cwd=root)
    text = again.stdout + again.stderr
    assert f"resuming from models/checkpoint.pt at step {stopped_at}" in text
    assert torch.load(root / "models/checkpoint.pt", weights_only=True)["step"] == 375  # 6 kimg / 16
    assert (root / "models/generator.pt").exists()
    # The loss curve runs from the first run's first step to the end, each step once.
    curve = next((root / "dvclive/plots/metrics").rglob("loss_g.tsv"))
    steps = [int(row["step"]) for row in csv.DictReader(curve.open(), delimiter="\t")]
    assert steps == sorted(set(steps)) and steps[0] <= stopped_at and steps[-1] == 375, steps


def test_load_dataset_gives_pil_s_pixels_and_names_a_broken_file(in_tmp):
    """PIL's convert("RGB") and Lanczos resize in every PNG mode; a broken file is one line naming it."""
    make_processed(n=4)
    modes = ["RGB", "RGBA", "L", "P"]
    for i, mode in enumerate(modes):
        img = Image.open(paths.PROCESSED / f"x{i}.png").convert(mode)
        img.save(paths.PROCESSED / f"x{i}.png")
    for resolution in (64, 32):
        data = tensors.load_dataset(paths.PROCESSED, resolution)
        for i in range(len(modes)):
            img = Image.open(paths.PROCESSED / f"x{i}.png").convert("RGB")
            img = img.resize((resolution, resolution), Image.Resampling.LANCZOS)
            want = torch.from_numpy(np.array(img)).permute(2, 0, 1)
            assert torch.equal(data[i], want), (modes[i], resolution)
    (paths.PROCESSED / "x2.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(PipelineError, match=r"x2.png: cannot be decoded .*run `dvc repro resize` again"):
        tensors.load_dataset(paths.PROCESSED, 32)
