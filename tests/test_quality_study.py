"""benchmarks/quality_study.py in --tiny mode: the same code paths as the real study, in seconds."""

import dataclasses
import functools
import importlib.util
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[1]
TINY_SWD = {"patches_per_image": 16, "projections": 64}  # as --tiny


def _study():
    spec = importlib.util.spec_from_file_location("quality_study", ROOT / "benchmarks" / "quality_study.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tiny_study_measures_budget_then_screens_and_continues(tmp_path, capsys):
    study = _study()
    out = tmp_path / "q"
    args = ["--tiny", "--out", str(out), "--params", str(ROOT / "params.yaml")]
    assert study.main(args) == 0
    lines = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    budget, runs = lines[0], lines[1:]
    assert budget["budget_cpu_s"] > 0 and budget["floor"] > 0
    # The unit (defaults, seed 0, to train.kimg) is measured first, then every tiny config once.
    assert runs[0]["round"] == "final" and runs[0].get("defines_budget")
    screened = [r for r in runs if r["round"] == "screen"]
    assert {r["config"] for r in screened} == set(study.TINY_CONFIGS)
    for r in screened:
        # Stopped by CPU time, not by kimg: at least the budget, at most a few steps more.
        assert r["cpu_s"] >= budget["budget_cpu_s"]
        assert r["kimg"] > 0 and r["swd"] > 0 and r["nn_rms_median"] > 0
        assert r["curve"], "the in-training SWD curve was recorded"
        assert (out / f"screen_{r['config']}_s0.png").stat().st_size > 0
    printed = capsys.readouterr().out
    assert "| defaults |" in printed and "ratio:" in printed
    # A second call finds every run done: nothing is trained again, the table is the same.
    assert study.main(args) == 0
    assert len((out / "results.jsonl").read_text().splitlines()) == len(lines)
    # --round full is a view: every whole-budget run, across rounds; nothing is trained.
    capsys.readouterr()
    assert study.main(["--round", "full", "--out", str(out)]) == 0
    assert "round full:" in capsys.readouterr().out
    assert len((out / "results.jsonl").read_text().splitlines()) == len(lines)
    # So is a round without --configs (training every config takes hours: it needs `--configs all`).
    assert study.main(["--round", "final", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("round final:")  # that round's table: only the budget run, no screen rows
    assert "| defaults |" in printed and "| new_mirror |" not in printed
    assert len((out / "results.jsonl").read_text().splitlines()) == len(lines)
    with pytest.raises(SystemExit):
        study.main(["--round", "my_round", "--out", str(out)])  # grid names split on "_"
    pytest.importorskip("matplotlib")
    assert study.main(["--plot", "defaults,ttur", "--round", "screen", "--out", str(out)]) == 0
    assert (out / "swd_vs_minutes.png").stat().st_size > 0
    assert (out / "grids_side_by_side.png").stat().st_size > 0


def test_study_only_overrides_reach_the_optimisers():
    study = _study()
    data = study.tiny_data(n=4)
    base = study.load_params(ROOT / "params.yaml").train
    p = dataclasses.replace(base, resolution=32, channels=8, d_channels=4, batch_size=4)
    t = study.build(p, {"lr_g": 1e-4, "lr_d": 3e-4, "ema_rampup": 0.2, "lr_decay": 0.5}, data)
    assert t.opt_g.param_groups[0]["lr"] == 1e-4
    assert t.opt_d.param_groups[0]["lr"] == 3e-4
    assert t.ema_rampup == 0.2 and t.lr_decay == 0.5
    first = next(t.d.parameters())
    assert first.shape[0] == 4  # D's first conv has d_channels filters
    assert any(q is first for g in t.opt_d.param_groups for q in g["params"])
    # lr_decay: constant for the first half of the budget, then linear to 0 at its end.
    budget = 1.0
    study.train(t, budget, None, 0, None)
    assert 0 < t.opt_d.param_groups[0]["lr"] < 3e-4 and t.opt_d.param_groups[0]["base_lr"] == 3e-4


def test_configs_are_overrides_of_the_study_base_and_new_glr6_is_params_yaml():
    study = _study()
    yaml_train = study.load_params(ROOT / "params.yaml").train
    base = study.study_base(ROOT / "params.yaml")
    defaults, extra = study.config_params("defaults", 0, base)
    assert not extra and defaults.d_width == defaults.channels
    assert (defaults.diffaugment, defaults.precision, defaults.kimg) == ("color,translation", "fp32", 45)
    # rows recorded before g_lr_ratio existed stay comparable, and so do all rows if params.yaml's width moves
    assert (defaults.g_lr_ratio, defaults.channels, defaults.shift) == (1.0, 32, 0.125)
    # The study's winner is what params.yaml holds now, but for precision (auto is bf16 on the
    # study's CPU) and kimg (a budget run stops on CPU time, not on kimg). It screened G's learning
    # rate as a study knob (lr_g = 3 x lr), which params.yaml now sets as g_lr_ratio.
    new, extra = study.config_params("new_glr6", yaml_train.seed, base)
    local = {"threads": yaml_train.threads, "device": yaml_train.device, "eval_kimg": yaml_train.eval_kimg}
    same = dict(precision="auto", kimg=yaml_train.kimg, g_lr_ratio=yaml_train.g_lr_ratio, **local)
    assert dataclasses.replace(new, **same) == yaml_train
    data = study.tiny_data(n=4)
    studied = study.build(dataclasses.replace(new, resolution=32), extra, data)
    yaml_trainer = study.Trainer(dataclasses.replace(yaml_train, resolution=32), data, studied.device)
    for a, b in ((studied.opt_g, yaml_trainer.opt_g), (studied.opt_d, yaml_trainer.opt_d)):
        assert a.param_groups[0]["lr"] == pytest.approx(b.param_groups[0]["lr"])
    ch24, _ = study.config_params("ch24", 0, base)
    assert ch24.channels == ch24.d_width == 24
    d16, _ = study.config_params("d16", 0, base)
    assert (d16.channels, d16.d_width) == (base.channels, 16)


def test_unknown_config_is_one_clear_error(tmp_path):
    study = _study()
    with pytest.raises(SystemExit):
        study.main(["--configs", "nope", "--out", str(tmp_path), "--params", str(ROOT / "params.yaml")])


@functools.cache
def _study_once():
    """One shared copy, for tests that only call pure functions of the script."""
    return _study()


def _tiny(study, **overrides):
    """params.yaml's train section at 32 px, 8 channels, batch 8, fp32: a step takes milliseconds."""
    base = study.load_params(ROOT / "params.yaml").train
    return dataclasses.replace(base, resolution=32, channels=8, batch_size=8, precision="fp32", **overrides)


def _trains(t, weight, opt):
    """`weight` is in `opt` and one step of the Trainer changes it."""
    import torch

    assert any(q is weight for g in opt.param_groups for q in g["params"])
    before = weight.detach().clone()
    t.step()
    return not torch.equal(before, weight)


def test_mirror_flips_about_half_of_the_real_images_and_nothing_else():
    study = _study()
    import torch

    data, p = study.tiny_data(n=8), _tiny(study)
    plain, mirrored = study.build(p, {}, data), study.build(p, {"mirror": True}, data)
    flipped = kept = 0
    for _ in range(16):  # the same index draws: the mirror has its own generator
        a, b = plain._next_real(), mirrored._next_real()
        for x, y in zip(a, b, strict=True):
            if torch.equal(x, y):
                kept += 1
            else:
                assert torch.equal(x.flip(2), y), "each image is either kept or x-flipped"
                flipped += 1
    assert 40 <= flipped <= 88 and flipped + kept == 128  # 64 expected; binomial sd 5.7


def test_minibatch_std_adds_one_feature_map_and_d_still_trains():
    study = _study()
    import torch

    x = torch.randn(8, 5, 4, 4)
    y = study.MinibatchStd()(x)
    assert y.shape == (8, 6, 4, 4) and torch.equal(y[:, :5], x)
    same = study.MinibatchStd()(torch.ones(8, 5, 4, 4))[:, 5]  # no spread: sqrt(0 + 1e-8)
    assert torch.allclose(same, torch.full((8, 4, 4), 1e-4))
    t = study.build(_tiny(study), {"mbstd": True}, study.tiny_data(n=8))
    last = list(t.d.main)[-1]
    assert last.in_channels == 8 * 2 * 2 + 1  # D's last conv reads the extra map
    assert _trains(t, last.weight, t.opt_d) and t.d(t._next_real()).shape == (8,)


def test_truncation_sweep_reports_each_value_and_writes_its_grid(tmp_path, capsys):
    study = _study()
    import torch

    from pipeline.model import Generator

    torch.manual_seed(0)
    g = Generator(32, 16, 4, upsample="nearest").eval()
    table = study.truncation_sweep(g, 16, study.tiny_data(n=8), tmp_path, [None, 0.5], n=16, swd_kw=TINY_SWD)
    rows = {line.split(" | ")[0]: line for line in table.splitlines() if line.startswith("| ")}
    assert set(rows) >= {"| none", "| 0.5"}
    assert rows["| none"].split(" | ")[1:] != rows["| 0.5"].split(" | ")[1:], "T changes the latents"
    grids = [(tmp_path / f"truncation_{t}.png").read_bytes() for t in ("none", "0.5")]
    assert grids[0] != grids[1]
    assert (tmp_path / "real.png").stat().st_size > 0


def test_truncation_of_a_missing_model_is_one_clear_error(tmp_path, capsys):
    study = _study()
    with pytest.raises(SystemExit):
        study.main(["--truncation", str(tmp_path / "nope.pt"), "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "nope.pt: not found; train first" in err


def test_skip_layer_excitation_gates_the_fine_blocks_and_trains():
    study = _study()
    import torch

    t = study.build(_tiny(study, upsample="nearest"), {"sle": True}, study.tiny_data(n=8))
    assert isinstance(t.g, study.SLEGenerator) and isinstance(t.g_ema, study.SLEGenerator)
    assert t.g.pairs == [(2, 10)]  # 32 px: the 4x4 block gates the 16x16 one
    assert _trains(t, t.g.excite[0][1].weight, t.opt_g), "the excitation's weights train"
    # Closing the gates (a very negative last conv) zeroes the gated block: the gate is in the path.
    with torch.no_grad():
        out_open = t.g(t.fixed_z[:8])
        t.g.excite[0][3].weight.fill_(-50.0)
        assert not torch.allclose(out_open, t.g(t.fixed_z[:8]))
    assert t.sample(t.fixed_z[:4]).shape == (4, 3, 32, 32)


def test_skip_generator_sums_an_rgb_output_per_block_and_trains():
    study = _study()
    import torch

    t = study.build(_tiny(study, upsample="nearest"), {"skip": True}, study.tiny_data(n=8))
    assert isinstance(t.g, study.SkipGenerator) and isinstance(t.g_ema, study.SkipGenerator)
    assert [r.in_channels for r in t.g.rgb] == [32, 16, 8]  # 32 px: blocks at 4, 8 and 16 px
    assert _trains(t, t.g.rgb[0].weight, t.opt_g), "the RGB outputs train"
    with torch.no_grad():
        out = t.g(t.fixed_z[:8])
        assert out.abs().max() <= 1
        t.g.rgb[0].weight.add_(1.0)  # the 4x4 block's picture reaches the output
        assert not torch.allclose(out, t.g(t.fixed_z[:8]))
    assert t.sample(t.fixed_z[:4]).shape == (4, 3, 32, 32)


def test_relativistic_losses_match_their_definitions_and_g_reuses_ds_real_outputs():
    study = _study()
    import torch
    import torch.nn.functional as F

    r, f = torch.tensor([2.0, -1.0, 0.5]), torch.tensor([0.0, 1.0, -3.0])
    bce = F.binary_cross_entropy_with_logits
    one, zero = torch.ones(3), torch.zeros(3)
    t = study.build(_tiny(study), {"rel": "avg"}, study.tiny_data(n=8))
    assert isinstance(t, study.RelativisticTrainer) and t.rel == "avg"
    # RaSGAN as Jolicoeur-Martineau (2018) writes it, with sigmoid cross-entropies
    want_d = bce(r - f.mean(), one) + bce(f - r.mean(), zero)
    want_g = bce(f - r.mean(), one) + bce(r - f.mean(), zero)
    assert torch.allclose(t.d_loss(r, f), want_d) and torch.allclose(t.g_loss(f), want_g)
    # G's loss takes D's real outputs from the D step; a new fake batch alone changes it
    assert not torch.allclose(t.g_loss(f + 1), want_g)
    t.rel = "pair"  # RpGAN: pair i against pair i
    assert torch.allclose(t.d_loss(r, f), bce(r - f, one))
    assert torch.allclose(t.g_loss(f), bce(f - r, one))
    t = study.build(_tiny(study), {"rel": "pair"}, study.tiny_data(n=8))
    assert _trains(t, next(t.g.parameters()), t.opt_g)


def test_blur_in_matches_torchvision_and_fades_to_nothing():
    study = _study()
    import torch
    from torchvision.transforms.v2 import functional as TF

    x = torch.rand(3, 3, 16, 16) * 2 - 1
    for sigma in (0.5, 1.0, 2.0):  # the kernel spans 3 sigma each side
        ref = TF.gaussian_blur(x, kernel_size=2 * int(sigma * 3) + 1, sigma=sigma)
        assert torch.allclose(study.gaussian_blur(x, sigma), ref, atol=1e-5)
    assert study.gaussian_blur(x, 2.0).std() < 0.5 * x.std()  # it does smooth
    assert torch.equal(study.gaussian_blur(x, 0.3), x)  # under 1/3 px: untouched
    assert study.gaussian_blur(torch.rand(2, 3, 4, 4), 50.0).shape == (2, 3, 4, 4)  # kernel capped

    data, p = study.tiny_data(n=8), _tiny(study)
    plain, blurred = study.build(p, {}, data), study.build(p, {"blur": (2.0, 1)}, data)
    real = plain._next_real()
    assert torch.equal(blurred._next_real(), real)  # only what D sees changes, not the data
    state = plain.gen_dev.get_state()
    aug = plain._augment(real)
    blurred.gen_dev.set_state(state)  # the same translations
    seen = blurred._augment(real)
    assert torch.allclose(seen, study.gaussian_blur(aug, 2.0), atol=1e-6)
    blurred.nimg = 500  # half-way through the fade: sigma 1
    blurred.gen_dev.set_state(state)
    assert torch.allclose(blurred._augment(real), study.gaussian_blur(aug, 1.0), atol=1e-6)
    blurred.nimg = 1000
    blurred.gen_dev.set_state(state)
    assert torch.equal(blurred._augment(real), aug)
    assert _trains(blurred, blurred.d.main[0].weight, blurred.opt_d)


def test_d_without_batchnorm_judges_each_image_alone_and_trains_with_r1():
    study = _study()
    import dataclasses

    import torch

    data = study.tiny_data(n=8)
    p = dataclasses.replace(_tiny(study), r1_gamma=0.05)
    t = study.build(p, {"d_bn": False}, data)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in t.d.modules())
    assert {id(q) for g in t.opt_d.param_groups for q in g["params"]} == {id(q) for q in t.d.parameters()}
    t.d.train()
    x = t._next_real()
    alone = t.d(x[:1])
    assert torch.allclose(t.d(x)[:1], alone, atol=1e-5)  # no batch statistics: the rest do not matter
    t.step_count = 15  # the next step is a lazy R1 step
    assert _trains(t, t.d.main[0].weight, t.opt_d)


def test_full_size_block_gives_g_features_at_its_own_size_and_trains():
    study = _study()
    import torch

    t = study.build(_tiny(study), {"g_top": 8}, study.tiny_data(n=8))
    convs = [m for m in t.g.main if isinstance(m, torch.nn.Conv2d)]
    assert (convs[-2].out_channels, convs[-1].in_channels, convs[-1].out_channels) == (8, 8, 3)
    assert isinstance(t.g.main[-1], torch.nn.Tanh)
    z = torch.randn(4, t.p.latent_dim)
    assert t.g(z).shape == (4, 3, t.p.resolution, t.p.resolution)
    assert not any(q is convs[-1].weight for q in t.g_ema.parameters())  # EMA is a copy
    assert len(list(t.g_ema.parameters())) == len(list(t.g.parameters()))
    assert _trains(t, convs[-1].weight, t.opt_g)


def test_ada_probability_follows_ds_sign_on_real_images_and_gates_the_extra_ops():
    study = _study()
    import torch

    data, p = study.tiny_data(n=8), _tiny(study)
    t = study.build(p, {"ada": ("cutout", 0.6, 0.032)}, data)  # 4 steps x 8 images move p by 1
    plain = study.build(p, {}, data)
    sure, unsure = torch.ones(8), torch.tensor([1.0, -1, 1, -1, 1, -1, 1, -1])  # r_t 1 and 0
    x = t._next_real()
    state = t.gen_dev.get_state()
    plain.gen_dev.set_state(state)
    assert torch.equal(t._augment(x), plain._augment(x))  # p = 0: translation only, same draws
    for _ in range(3):
        t.d_loss(sure, -sure)
    assert t.ada["p"] == 0.0  # moves only every 4 D steps
    t.d_loss(sure, -sure)
    assert t.ada["p"] == 1.0  # clamped
    t.gen_dev.set_state(state)
    plain.gen_dev.set_state(state)
    ones = torch.ones_like(x)
    cut = t._augment(ones) != plain._augment(ones)  # the same translations; p = 1: cutout on every image
    assert bool(cut.flatten(1).any(1).all())
    for _ in range(8):
        t.d_loss(unsure, -sure)
    assert t.ada["p"] == 0.0 and t.ada["p_max"] == 1.0
    t.gen_dev.set_state(state)
    plain.gen_dev.set_state(state)
    assert torch.equal(t._augment(x), plain._augment(x))
    slow = study.build(p, {"ada": ("cutout", 0.6, 20)}, data)
    for _ in range(4):
        slow.d_loss(sure, -sure)
    assert abs(slow.ada["p"] - 4 * 8 / 20000) < 1e-12  # ADA's speed: batch x interval / (kimg x 1000)
    assert _trains(slow, slow.d.main[0].weight, slow.opt_d)


def test_label_smoothing_aims_d_at_the_target_on_real_images_only():
    study = _study()
    import math

    import torch

    from pipeline import loss

    t = study.build(_tiny(study), {"smooth": 0.9}, study.tiny_data(n=8))
    r, f = torch.tensor([0.3, -1.2]), torch.tensor([0.5, -2.0])
    # by hand: -(0.9 log s(r) + 0.1 log(1 - s(r))) averaged, plus the unchanged fake term
    s = torch.sigmoid(r)
    by_hand = -(0.9 * s.log() + 0.1 * (1 - s).log()).mean() - (1 - torch.sigmoid(f)).log().mean()
    assert math.isclose(float(t.d_loss(r, f)), float(by_hand), rel_tol=1e-6)
    assert float(t.d_loss(r, f)) != float(loss.d_loss("bce", r, f))
    assert float(t.g_loss(f)) == float(loss.g_loss("bce", f))  # G's loss is untouched
    assert _trains(t, t.d.main[0].weight, t.opt_d)


def test_reconstruction_d_rebuilds_the_real_batch_from_8x8_features_and_trains_its_decoder():
    study = _study()
    import torch
    import torch.nn.functional as F

    from pipeline import loss

    t = study.build(_tiny(study), {"recon": 0.5}, study.tiny_data(n=8))
    decoder = t.d.decoder
    assert {id(q) for g in t.opt_d.param_groups for q in g["params"]} == {id(q) for q in t.d.parameters()}
    assert any(q is decoder[1].weight for q in t.d.parameters())
    real, fake = t._next_real(), torch.rand(8, 3, 32, 32) * 2 - 1
    out_real, out_fake = t.d(real), t.d(fake)  # as a D step calls it: real, then fake
    got = t.d_loss(out_real, out_fake)
    features = t.d.main[:5](real)  # 32 px: conv, lrelu, conv, BN, lrelu -> 8x8
    assert features.shape[-1] == 8
    target = F.adaptive_avg_pool2d(real, 4 * 8)  # 4x the features' size: at 32 px, the image itself
    want = loss.d_loss("bce", out_real, out_fake) + 0.5 * F.mse_loss(decoder(features), target)
    assert torch.allclose(got, want, atol=1e-5)
    before = decoder[1].weight.detach().clone()
    t.step()
    assert not torch.equal(before, decoder[1].weight) and torch.isfinite(t.recon_mse)


def test_bcr_pulls_d_on_augmented_images_towards_d_on_the_plain_ones():
    study = _study()
    import torch
    import torch.nn.functional as F

    from pipeline import loss

    t = study.build(_tiny(study), {"bcr": 10.0}, study.tiny_data(n=8))
    t.d.eval()  # BatchNorm on running stats, so D of one batch does not depend on the others
    real, fake = t._next_real(), torch.rand(8, 3, 32, 32) * 2 - 1
    a_real, a_fake = t._augment(real), t._augment(fake)  # as a D step: real, then fake
    out_real, out_fake = t.d(a_real), t.d(a_fake)
    got = t.d_loss(out_real, out_fake)
    reg = F.mse_loss(t.d(real), out_real) + F.mse_loss(t.d(fake), out_fake)
    assert float(reg.detach()) > 0  # translation changed what D saw
    want = loss.d_loss("bce", out_real, out_fake) + 10.0 * reg
    assert torch.allclose(got, want, atol=1e-5)
    t.d.train()
    assert _trains(t, t.d.main[0].weight, t.opt_d)


def test_closing_ratio_names_the_best_config_with_the_most_seeds_not_a_lucky_single_seed():
    study = _study()

    def row(config, seed, ratio):
        run = {"round": "r", "config": config, "seed": seed, "fraction": 1.0, "img_per_cpu_s": 100.0}
        return run | {"kimg": 45.0, "swd": 29.0 * ratio, "swd_over_floor": ratio, "nn_rms_median": 60.0}

    rows = [row("defaults", s, 1.4) for s in range(3)] + [row("new_glr6", s, 0.9) for s in range(3)]
    rows += [row("new_blur", 0, 0.8)]  # lower mean, but one seed
    text = study.table(rows, "r", {"budget_cpu_s": 441.6, "kimg": 45, "floor": 29.0})
    assert text.splitlines()[4].startswith("| new_blur |")  # the table itself is sorted by mean
    assert text.splitlines()[-1].startswith(f"ratio: {0.9 / 1.4:.3f} (SWD/floor, new_glr6 / defaults")


def test_self_attention_matches_sagans_formula_and_starts_as_the_identity():
    study = _study()
    import torch

    torch.manual_seed(0)
    block = study.SelfAttention(16)
    x = torch.randn(2, 16, 4, 4)
    assert torch.equal(block(x), x), "gamma starts at 0: the block is the identity"
    with torch.no_grad():
        for conv in (block.q, block.k, block.v, block.out):
            conv.weight.normal_()
        block.gamma.fill_(0.5)
    # SAGAN, written out: per image, s_ij = q_i . k_j over the 16 positions, softmax over j, no scaling
    q, k, v = (
        torch.einsum("oc,bchw->bohw", c.weight[:, :, 0, 0], x).flatten(2) for c in (block.q, block.k, block.v)
    )
    assert q.shape[1] == 2 and v.shape[1] == 8  # C/8 and C/2
    attn = torch.softmax(torch.einsum("bci,bcj->bij", q, k), dim=-1)
    o = torch.einsum("bij,bcj->bci", attn, v).view(2, 8, 4, 4)
    expected = x + 0.5 * torch.einsum("oc,bchw->bohw", block.out.weight[:, :, 0, 0], o)
    assert torch.allclose(block(x), expected, atol=1e-4)
    # every position reaches every other: changing one input pixel changes the far corner
    y = x.clone()
    y[:, :, 0, 0] += 5.0
    assert not torch.allclose(block(y)[:, :, 3, 3], block(x)[:, :, 3, 3])


def test_attention_goes_after_g_and_ds_blocks_at_the_asked_size_and_trains():
    study = _study()
    import torch

    t = study.build(_tiny(study, upsample="nearest"), {"attn": 8}, study.tiny_data(n=8))
    for net, width in ((t.g, 16), (t.d, 16)):  # 32 px, channels 8: both nets are 16 wide at 8x8
        layers = list(net.main)
        at = [i for i, m in enumerate(layers) if isinstance(m, study.SelfAttention)]
        assert len(at) == 1 and layers[at[0]].q.in_channels == width
        assert isinstance(layers[at[0] - 1], (torch.nn.ReLU, torch.nn.LeakyReLU))
    g_attn = next(m for m in t.g.main if isinstance(m, study.SelfAttention))
    d_attn = next(m for m in t.d.main if isinstance(m, study.SelfAttention))
    assert any(isinstance(m, study.SelfAttention) for m in t.g_ema.main), "the EMA copy has it too"
    assert _trains(t, g_attn.gamma, t.opt_g) and _trains(t, d_attn.gamma, t.opt_d)
    assert t.sample(t.fixed_z[:4]).shape == (4, 3, 32, 32)
    with pytest.raises(ValueError, match="3x3"):
        study.build(_tiny(study), {"attn": 3}, study.tiny_data(n=8))


def test_pixel_norm_g_scales_each_position_alone_and_trains():
    study = _study()
    import torch

    x = torch.randn(3, 6, 5, 5) * 7
    y = study.PixelNorm()(x)
    assert torch.allclose(y.square().mean(dim=1), torch.ones(3, 5, 5), atol=1e-4)
    assert torch.allclose(y * x.square().mean(dim=1, keepdim=True).sqrt(), x, atol=1e-4)
    t = study.build(_tiny(study), {"g_norm": "pixel"}, study.tiny_data(n=8))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in t.g.modules())
    assert sum(isinstance(m, study.PixelNorm) for m in t.g.main) == 3  # one per block at 32 px
    t.g.train()
    z = t.fixed_z[:8]
    assert torch.allclose(t.g(z)[:1], t.g(z[:1]), atol=1e-5), "one image no longer depends on its batch"
    conv = next(m for m in t.g.main if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)))
    assert _trains(t, conv.weight, t.opt_g)


def test_topk_g_loss_uses_only_the_fakes_d_scores_highest_and_k_shrinks_to_its_floor():
    study = _study()
    import torch

    # Sinha et al. 2020: k = max(nu * B, gamma^epoch * B)
    assert study.topk_count(32, 0, 0.99, 0.5) == 32
    assert study.topk_count(32, 10, 0.99, 0.5) == int(0.99**10 * 32) == 28
    assert study.topk_count(32, 500, 0.99, 0.5) == 16
    assert study.topk_count(1, 500, 0.99, 0.25) == 1
    t = study.build(_tiny(study), {"topk": (0.5, 0.25)}, study.tiny_data(n=8))
    t.nimg = 2 * t.n  # two epochs: k = 0.5^2 x 8 = 2
    out = torch.tensor([0.1, 3.0, -2.0, 1.5, -0.3, 0.0, 2.0, -1.0], requires_grad=True)
    loss = t.g_loss(out)
    ones = torch.ones(2)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(torch.tensor([3.0, 2.0]), ones)
    assert t.topk_k == 2 and torch.allclose(loss, expected)
    loss.backward()
    assert (out.grad != 0).nonzero().flatten().tolist() == [1, 6], "only the two best fakes teach G"
    conv = next(m for m in t.g.main if isinstance(m, torch.nn.ConvTranspose2d))
    assert _trains(t, conv.weight, t.opt_g)


@settings(max_examples=60, deadline=None)
@given(
    logits=st.lists(st.floats(-50, 50), min_size=1, max_size=40),
    k_frac=st.floats(0.01, 1.0),
    temperature=st.sampled_from([0.0, 0.5, 1.0, 2.0, 100.0]),
    seed=st.integers(0, 2**31),
)
def test_d_resample_keeps_k_distinct_images_in_order(logits, k_frac, temperature, seed):
    study = _study_once()
    import torch

    x = torch.tensor(logits)
    k = max(1, int(k_frac * len(logits)))
    keep = study.d_resample(x, k, temperature, torch.Generator().manual_seed(seed))
    assert keep.tolist() == sorted(set(keep.tolist())) and len(keep) == k
    assert int(keep.min()) >= 0 and int(keep.max()) < len(logits)
    if temperature == 0:  # the k highest: nothing left out scores above anything kept
        left = torch.ones(len(logits), dtype=torch.bool)
        left[keep] = False
        assert not left.any() or float(x[left].max()) <= float(x[keep].min())


def test_d_resample_draws_in_proportion_to_exp_logit_over_temperature():
    study = _study()
    import torch

    # Gumbel top-1 is a draw from softmax(logit / T): logits 0 and log 9 give 1 : 9 at T = 1,
    # and 1 : 3 at T = 2; at T = 0 the higher one always
    gen = torch.Generator().manual_seed(0)
    x = torch.tensor([0.0, float(torch.log(torch.tensor(9.0)))])
    for temperature, share in ((1.0, 0.9), (2.0, 0.75)):
        picks = [int(study.d_resample(x, 1, temperature, gen)) for _ in range(4000)]
        assert abs(sum(picks) / len(picks) - share) < 0.025
    assert int(study.d_resample(x, 1, 0.0, gen)) == 1
    with pytest.raises(ValueError, match="k must be in 1..2"):
        study.d_resample(x, 3, 1.0, gen)
    with pytest.raises(ValueError, match="temperature must be >= 0"):
        study.d_resample(x, 1, -1.0, gen)


def test_drs_sweep_scores_a_checkpoints_samples_with_its_d_and_writes_a_grid_per_temperature(tmp_path):
    study = _study()
    import torch

    from pipeline import checkpoint

    data = study.tiny_data(n=8)
    t = study.build(_tiny(study, latent_dim=16), {}, data)
    for _ in range(3):
        t.step()
    path = tmp_path / "checkpoint.pt"
    torch.save(checkpoint.capture(t, checkpoint.fingerprint(data)), path)
    table = study.drs_sweep(path, data, tmp_path, [None, 1.0, 0.0], n=16, pool=2, swd_kw=TINY_SWD)
    assert "32 samples, 16 kept" in table.splitlines()[0]
    rows = {line.split(" | ")[0]: line.split(" | ") for line in table.splitlines() if line.startswith("| ")}
    assert set(rows) >= {"| none", "| 1", "| top"}
    mean_kept = {k: float(v[-1].rstrip(" |")) for k, v in rows.items() if k in ("| none", "| 1", "| top")}
    assert mean_kept["| top"] >= mean_kept["| 1"] and mean_kept["| top"] >= mean_kept["| none"]
    grids = {label: (tmp_path / f"drs_{label}.png").read_bytes() for label in ("none", "1", "top")}
    assert grids["none"] != grids["top"]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("nope.pt", None, "nope.pt: not a file; give a training checkpoint"),
        ("page.pt", b"<!doctype html><title>404</title>", "page.pt: not a readable torch file"),
        ("generator.pt", "generator", "generator.pt: not a training checkpoint (it holds no D"),
    ],
)
def test_drs_of_anything_but_a_training_checkpoint_is_one_clear_error(
    tmp_path, capsys, name, content, message
):
    study = _study()
    import torch

    from pipeline.model import Generator, generator_config

    path = tmp_path / name
    if content == "generator":  # what `--truncation` takes, and the sample stage writes: G only
        torch.save(
            {"config": generator_config(32, 16, 4), "state_dict": Generator(32, 16, 4).state_dict()}, path
        )
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(SystemExit):
        study.main(["--drs", str(path), "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1] and "Traceback" not in "\n".join(err)


def test_shift_moves_each_image_by_at_most_its_fraction_of_the_size():
    study = _study()
    import torch

    # A single bright pixel in the centre of a 32 px image lands within +-shift x 32 px of it.
    for shift, most in ((1 / 4, 8), (1 / 16, 2)):
        t = study.build(_tiny(study, shift=shift), {}, study.tiny_data(n=8))
        x = torch.zeros(256, 3, 32, 32)
        x[:, :, 16, 16] = 1.0
        where = t._augment(x)[:, 0].flatten(1).argmax(dim=1)
        dy, dx = where // 32 - 16, where % 32 - 16
        assert max(dy.abs().max(), dx.abs().max()) == most, shift


def test_noise_inputs_start_silent_then_learn_a_strength_per_channel():
    study = _study()
    import torch

    t = study.build(_tiny(study), {"noise": True}, study.tiny_data(n=8))
    noises = [m for m in t.g.main if isinstance(m, study.NoiseInput)]
    bns = [m for m in t.g.main if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(noises) == len(bns) == 3  # one before each BatchNorm at 32 px
    assert all(n.strength.shape[1] == b.num_features for n, b in zip(noises, bns, strict=True))
    assert all(not n.strength.any() for n in noises), "strength 0: no noise at the start"
    x = torch.randn(2, noises[0].strength.shape[1], 3, 3)
    assert torch.equal(noises[0](x), x)
    assert _trains(t, noises[-1].strength, t.opt_g)
    assert noises[-1].strength.abs().sum() > 0
    assert any(isinstance(m, study.NoiseInput) for m in t.g_ema.main), "the EMA copy has them too"


def test_residual_g_adds_a_block_per_size_that_passes_its_input_through_and_trains():
    study = _study()
    import torch

    t = study.build(_tiny(study), {"res": True}, study.tiny_data(n=8))
    blocks = [m for m in t.g.main if isinstance(m, study.Residual)]
    assert len(blocks) == 3  # after the 4, 8 and 16 px ReLUs at 32 px
    probe, sizes = t.fixed_z[:2].view(2, -1, 1, 1), []
    t.g.eval()
    with torch.no_grad():
        for m in t.g.main:
            probe = m(probe)
            if isinstance(m, study.Residual):
                sizes.append(probe.shape[-1])
    assert sizes == [4, 8, 16]
    x = torch.randn(2, 5, 4, 4)
    block = study.Residual(5).eval()
    torch.nn.init.zeros_(block.body[0].weight)
    torch.nn.init.constant_(block.body[1].bias, 0.5)  # BN of a zero conv is its bias: x + ReLU(0.5)
    assert torch.allclose(block(x), x + 0.5)
    t.g.train()
    assert _trains(t, blocks[0].body[0].weight, t.opt_g)
