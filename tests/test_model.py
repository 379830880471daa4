import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from pipeline.diffaugment import cutout, diff_augment, parse_policy, translation
from pipeline.model import Discriminator, Generator, build_generator, generator_config, load_generator, widths


@pytest.mark.parametrize("upsample", ["deconv", "nearest"])
@pytest.mark.parametrize("res", [32, 64, 128, 256, 512])
def test_shapes_for_every_resolution(res, upsample):
    g = Generator(res, latent_dim=16, channels=2, max_channels=16, upsample=upsample)
    d = Discriminator(res, channels=2, max_channels=16, spectral_norm=upsample == "nearest")
    x = g(torch.randn(2, 16))
    assert x.shape == (2, 3, res, res)
    assert x.min() >= -1 and x.max() <= 1
    assert d(x).shape == (2,)


def test_widths_follow_pytorch_examples():
    assert widths(64, 64) == [512, 256, 128, 64]
    assert widths(256, 64, max_channels=512) == [512, 512, 512, 256, 128, 64]
    assert widths(512, 32, max_channels=256) == [256, 256, 256, 256, 128, 64, 32]


def test_rejects_non_power_of_two():
    with pytest.raises(ValueError):
        widths(48, 8)


def test_spectral_norm_replaces_batchnorm_in_d():
    plain, sn = Discriminator(64, 4), Discriminator(64, 4, spectral_norm=True)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in plain.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in sn.modules())
    assert sum(hasattr(m, "parametrizations") for m in sn.modules()) == 5  # every conv


def test_nearest_upsampling_has_no_transposed_convs_after_the_first():
    g = Generator(64, 16, 4, upsample="nearest")
    kinds = [type(m).__name__ for m in g.main]
    assert kinds.count("ConvTranspose2d") == 1 and kinds.count("Upsample") == 4


def test_load_generator_reads_ema_or_raw_and_old_files(tmp_path):
    config = generator_config(32, 8, 2, upsample="nearest")
    ema, raw = build_generator(config), build_generator(config)
    path = tmp_path / "generator.pt"
    torch.save({"config": config, "state_dict": ema.state_dict(), "raw_state_dict": raw.state_dict()}, path)
    z = torch.randn(2, 8)
    g, loaded = load_generator(path)
    assert loaded == config and not g.training
    assert torch.equal(g(z), ema.eval()(z))
    g, _ = load_generator(path, which="raw")
    assert torch.equal(g(z), raw.eval()(z))
    torch.save({"config": config, "state_dict": ema.state_dict()}, path)  # written before EMA existed
    g, _ = load_generator(path, which="raw")
    assert torch.equal(g(z), ema(z))


def test_diffaugment_keeps_gradients_flowing():
    x = torch.rand(4, 3, 16, 16, requires_grad=True)
    out = diff_augment(x * 2 - 1, parse_policy("color,translation,cutout"), torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    out.square().sum().backward()
    assert torch.isfinite(x.grad).all()
    assert (x.grad != 0).float().mean() > 0.3  # cutout and the shift border block only part of it


def test_diffaugment_is_reproducible_from_its_generator_and_differs_per_image():
    x = torch.rand(8, 3, 16, 16)
    policy = parse_policy("color,translation,cutout")
    a = diff_augment(x, policy, torch.Generator().manual_seed(1))
    assert torch.equal(a, diff_augment(x, policy, torch.Generator().manual_seed(1)))
    assert not torch.equal(a, diff_augment(x, policy, torch.Generator().manual_seed(2)))
    same = diff_augment(x[:1].expand(8, -1, -1, -1), policy, torch.Generator().manual_seed(1))
    assert not torch.equal(same[0], same[1])


@settings(max_examples=30, deadline=None)
@given(size=st.sampled_from([8, 16, 32, 64]), shift=st.floats(0.01, 0.5), seed=st.integers(0, 2**31 - 1))
def test_diff_augment_translation_moves_images_up_to_shift_and_no_further(size, shift, seed):
    # One lit pixel per image at a random spot: after the policy's translation it is either gone
    # (shifted off the edge) or within round(shift x size) px of where it was on each axis, and
    # over 512 images some move that far.
    most = int(size * shift + 0.5)
    assume(most >= 1)  # train.shift refuses values that move nothing
    n = 512
    gen = torch.Generator().manual_seed(seed)
    ys, xs = torch.randint(0, size, (n,), generator=gen), torch.randint(0, size, (n,), generator=gen)
    x = torch.zeros(n, 1, size, size)
    x[torch.arange(n), 0, ys, xs] = 1.0
    out = diff_augment(x, parse_policy("translation"), gen, shift)
    kept = torch.nonzero(out.flatten(1).amax(dim=1) > 0).flatten()
    where = out[kept].flatten(1).argmax(dim=1)
    dy, dx = (where // size - ys[kept]).abs(), (where % size - xs[kept]).abs()
    assert int(torch.maximum(dy, dx).max()) == most


def test_translation_shifts_and_fills_with_zero():
    x = torch.arange(64.0).view(1, 1, 8, 8).repeat(64, 1, 1, 1) + 1
    out = translation(x, torch.Generator().manual_seed(0))
    for img in out:
        rows, cols = (img[0] != 0).any(1), (img[0] != 0).any(0)
        kept = img[0][rows][:, cols]
        # The surviving block is a contiguous, unscaled piece of the input.
        top, left = int(kept[0, 0] - 1) // 8, int(kept[0, 0] - 1) % 8
        assert torch.equal(kept, x[0, 0, top : top + kept.shape[0], left : left + kept.shape[1]])
    assert (out == 0).any()  # some images were shifted


def test_cutout_zeroes_at_most_a_quarter():
    out = cutout(torch.ones(32, 3, 16, 16), torch.Generator().manual_seed(0))
    zero = (out == 0).float().mean(dim=(1, 2, 3))
    assert (zero > 0).all() and (zero <= 0.25).all()


def test_unknown_augmentation_is_refused():
    assert parse_policy("none") == () and parse_policy("") == ()
    with pytest.raises(ValueError, match="colour"):
        parse_policy("colour")
