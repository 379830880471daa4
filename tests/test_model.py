import pytest
import torch

from pipeline.model import Discriminator, Generator, widths


@pytest.mark.parametrize("res", [32, 64, 128, 256])
def test_shapes_for_every_resolution(res):
    g, d = Generator(res, latent_dim=16, channels=4), Discriminator(res, channels=4)
    x = g(torch.randn(2, 16))
    assert x.shape == (2, 3, res, res)
    assert x.min() >= -1 and x.max() <= 1
    assert d(x).shape == (2,)


def test_widths_follow_pytorch_examples():
    assert widths(64, 64) == [512, 256, 128, 64]
    assert widths(256, 64, max_channels=512) == [512, 512, 512, 256, 128, 64]


def test_rejects_non_power_of_two():
    with pytest.raises(ValueError):
        widths(48, 8)
