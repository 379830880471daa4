import logging

import pytest
import torch
from PIL import Image

from pipeline import paths, sample
from pipeline.__main__ import main
from pipeline.images import write_csv_atomic
from pipeline.model import Generator
from pipeline.params import params_from_dict

CONFIG = {"resolution": 32, "latent_dim": 8, "channels": 4, "max_channels": 512}
PARAMS = {
    "train": {"device": "cpu"},
    "sample": {"n": 6, "nrow": 3, "seed": 1, "interpolation_points": 3, "interpolation_steps": 4},
}


def weights(seed):
    torch.manual_seed(seed)
    g = Generator(CONFIG["resolution"], CONFIG["latent_dim"], CONFIG["channels"])
    g.eval()
    return g.state_dict()


def save_model(path=paths.MODEL, raw=True):
    """A generator file in the trainer's format: EMA weights, raw weights, config."""
    ckpt = {"config": CONFIG, "state_dict": weights(0), "meta": {}}
    if raw:
        ckpt["raw_state_dict"] = weights(1)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, path)


def make_processed(n=10, size=64, images=None):
    paths.PROCESSED.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        img = images[i] if images else Image.effect_noise((size, size), 40 + i).convert("RGB")
        img.save(paths.PROCESSED / f"x{i}.png")
        rows.append({"id": f"x{i}", "file": f"x{i}.png"})
    write_csv_atomic(paths.PROCESSED / "index.csv", ["id", "file"], rows)


@pytest.fixture
def project(in_tmp):
    make_processed()
    save_model()
    return in_tmp


def test_sample_writes_every_picture(project):
    (paths.SAMPLES / "099.png").parent.mkdir(parents=True)
    (paths.SAMPLES / "099.png").write_bytes(b"left by a run with sample.n 100")
    sample.run(params_from_dict(PARAMS))

    grid = Image.open(paths.SAMPLES / "grid.png")
    assert grid.size == (3 * 34 + 2, 2 * 34 + 2)
    raw = Image.open(paths.SAMPLES / "grid_raw.png")
    assert raw.size == grid.size and raw.tobytes() != grid.tobytes()
    singles = sorted(p.name for p in paths.SAMPLES.glob("[0-9]*.png"))
    assert singles == [f"{i:03d}.png" for i in range(6)]
    # The singles are the grid's images.
    first = Image.open(paths.SAMPLES / "000.png")
    assert first.size == (32, 32)
    assert first.tobytes() == grid.crop((2, 2, 34, 34)).tobytes()

    gif = Image.open(paths.SAMPLES / "interpolation.gif")
    assert gif.n_frames == 3 * 4
    assert gif.info["loop"] == 0
    assert gif.size == ((3 * 34 + 2) * 2, 36 * 2)  # one row of nrow walks, zoomed to 64 px

    nearest = Image.open(paths.SAMPLES / "nearest.png")
    assert nearest.mode == "RGB" and nearest.width > 4 * 2 * 128


def test_same_seed_same_images_other_seed_other_images(project):
    a = sample.generate(paths.MODEL, 4, seed=3, device="cpu")
    assert a.shape == (4, 3, 32, 32) and a.min() >= -1 and a.max() <= 1
    assert torch.equal(a, sample.generate(paths.MODEL, 4, seed=3, device="cpu"))
    assert torch.equal(a[:2], sample.generate(paths.MODEL, 2, seed=3, device="cpu"))  # n only adds images
    assert not torch.equal(a, sample.generate(paths.MODEL, 4, seed=4, device="cpu"))
    raw = sample.generate(paths.MODEL, 4, seed=3, device="cpu", which="raw")
    assert not torch.equal(a, raw)


def test_a_file_without_raw_weights_gives_its_only_weights(in_tmp, caplog):
    make_processed()
    save_model(raw=False)
    assert not sample.has_raw_weights(paths.MODEL)
    with caplog.at_level(logging.INFO):
        sample.run(params_from_dict(PARAMS))
    grid = Image.open(paths.SAMPLES / "grid.png").tobytes()
    assert Image.open(paths.SAMPLES / "grid_raw.png").tobytes() == grid
    assert "has no raw weights" in caplog.text


def test_missing_model_is_one_clear_error(in_tmp, capsys):
    assert main(["--params", "nope.yaml", "generate", "--n", "2", "--out", "out"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"error: {paths.MODEL}: not found; train first (`dvc repro train` or `python -m pipeline train`)"
    ]


def test_slerp_ends_at_its_points_and_keeps_the_radius():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, 64, generator=gen), torch.randn(5, 64, generator=gen)
    b = b / b.norm(dim=1, keepdim=True) * a.norm(dim=1, keepdim=True)
    assert torch.allclose(sample.slerp(a, b, 0.0), a, atol=1e-6)
    assert torch.allclose(sample.slerp(a, b, 1.0), b, atol=1e-5)
    mid = sample.slerp(a, b, 0.5)
    assert torch.allclose(mid.norm(dim=1), a.norm(dim=1), rtol=1e-5)  # a straight line would shrink it
    assert torch.allclose(sample.slerp(a, a, 0.3), a, atol=1e-6)  # parallel: no division by zero


def test_walk_passes_every_point_and_loops():
    points = torch.randn(3, 2, 8)
    frames = sample.walk(points, steps=4)
    assert frames.shape == (12, 2, 8)
    for i in range(3):
        assert torch.allclose(frames[4 * i], points[i], atol=1e-5)
    # The last frame is one step before the first point: the GIF loops without a jump.
    assert (frames[-1] - points[0]).norm() < (frames[-2] - points[0]).norm()


def test_nearest_finds_the_training_image_a_sample_copies():
    real = torch.randint(0, 256, (700, 3, 8, 8), dtype=torch.uint8)  # more than one batch of 256
    fake = real[[650, 3, 300]].clone()
    fake[1] = (fake[1].int() + 2).clamp(0, 255).to(torch.uint8)
    index, rms = sample.nearest_neighbours(fake, real)
    assert index.tolist() == [650, 3, 300]
    assert rms[0] == 0 and rms[2] == 0 and 0 < rms[1] <= 2


def test_nearest_sheet_shows_memorised_samples(in_tmp):
    """A generator that copies a training image: nearest.png pairs it with that image, distance 0."""
    make_processed()
    save_model()
    copy = sample.generate(paths.MODEL, 1, seed=1, device="cpu")
    copy_img = Image.fromarray(sample.to_uint8(copy)[0].permute(1, 2, 0).numpy())
    images = [Image.effect_noise((32, 32), 40 + i).convert("RGB") for i in range(5)]
    images[2] = copy_img
    make_processed(n=5, size=32, images=images)
    sample.run(params_from_dict(PARAMS))
    sheet = Image.open(paths.SAMPLES / "nearest.png")
    # The first pair (sample #0 | nearest): both halves equal, each zoomed 4x from 32 px.
    left = sheet.crop((16, 16, 16 + 128, 16 + 128))
    right = sheet.crop((16 + 130, 16, 16 + 258, 16 + 128))
    assert (
        left.tobytes() == right.tobytes() == copy_img.resize((128, 128), Image.Resampling.NEAREST).tobytes()
    )


def test_generate_cli_writes_pngs_and_a_grid(project, capsys):
    out = project / "gen"
    assert main(["generate", "--n", "5", "--seed", "3", "--out", str(out), "--nrow", "5"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [f"{i:03d}.png" for i in range(5)] + ["grid.png"]
    assert Image.open(out / "grid.png").size == (5 * 34 + 2, 36)
    assert "wrote 5 images" in capsys.readouterr().out
    first = (out / "000.png").read_bytes()
    assert main(["generate", "--n", "1", "--seed", "3", "--out", str(out / "again")]) == 0
    assert (out / "again/000.png").read_bytes() == first
    assert main(["generate", "--n", "1", "--seed", "3", "--out", str(out / "t"), "--truncation", "0.5"]) == 0
    assert (out / "t/000.png").read_bytes() != first


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--n", "0"], "generate --n: must be at least 1, got 0"),
        (["--truncation", "0"], "generate --truncation: must be above 0 (try 1.5), got 0.0"),
    ],
)
def test_generate_cli_refuses_bad_values(project, capsys, args, message):
    assert main(["generate", "--out", "gen", *args]) == 2
    assert capsys.readouterr().err.strip() == f"error: {message}"


def test_truncation_bounds_every_latent_and_is_deterministic():
    z = sample.latents(64, 32, torch.Generator().manual_seed(0), truncation=0.7)
    assert z.abs().max() <= 0.7
    assert torch.equal(z, sample.latents(64, 32, torch.Generator().manual_seed(0), truncation=0.7))
    plain = sample.latents(64, 32, torch.Generator().manual_seed(0))
    kept = plain[0].abs() <= 0.7
    assert torch.equal(z[0][kept], plain[0][kept])  # only components beyond the bound are redrawn
