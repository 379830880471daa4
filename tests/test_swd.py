import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from pipeline.swd import HASH_SEED, multiscale_swd, resolutions

SMALL = {"patches_per_image": 16, "projections": 32}


def noise(n, size=32, seed=0):
    return torch.randint(0, 256, (n, 3, size, size), generator=torch.Generator().manual_seed(seed)).to(
        torch.uint8
    )


PALETTE = torch.tensor([[0.8, 0.1, 0.1], [0.1, 0.2, 0.7], [0.9, 0.7, 0.5], [0.4, 0.2, 0.1]])


def blobs(n, size=32, seed=0):
    """Sprite-like pictures: soft discs in a few palette colours on white, like the processed set."""
    gen = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    out = torch.empty(n, 3, size, size)
    for i in range(n):
        img = torch.ones(3, size, size)
        for _ in range(4):
            cy, cx = (0.25 + torch.rand(2, generator=gen) / 2) * size
            r = size / 10 + torch.rand(1, generator=gen) * size / 6
            mask = torch.sigmoid((r - ((yy - cy) ** 2 + (xx - cx) ** 2).sqrt()) / 1.5)
            colour = PALETTE[torch.randint(0, 4, (1,), generator=gen)].view(3, 1, 1)
            img = img * (1 - mask) + colour * mask
        out[i] = img
    return (out * 255).round().to(torch.uint8)


def blur(x, sigma):
    if sigma == 0:
        return x
    r = math.ceil(3 * sigma)
    k = torch.exp(-(torch.arange(-r, r + 1.0) ** 2) / (2 * sigma**2))
    k = k / k.sum()
    y = F.pad(x.float().reshape(-1, 1, *x.shape[2:]), (r, r, r, r), mode="replicate")
    y = F.conv2d(F.conv2d(y, k.view(1, 1, 1, -1)), k.view(1, 1, -1, 1))
    return y.reshape(x.shape).round().clamp(0, 255).to(torch.uint8)


# --- a slow reference, written from the Progressive GAN description with plain loops ---

KERNEL = [[a * b / 256.0 for b in (1, 4, 6, 4, 1)] for a in (1, 4, 6, 4, 1)]


def mirror(i, n):
    if i < 0:
        return -i
    if i >= n:
        return 2 * n - 2 - i
    return i


def ref_blur(img, gain=1.0):
    h, w = len(img), len(img[0])
    return [
        [
            gain
            * sum(
                KERNEL[dy + 2][dx + 2] * img[mirror(y + dy, h)][mirror(x + dx, w)]
                for dy in range(-2, 3)
                for dx in range(-2, 3)
            )
            for x in range(w)
        ]
        for y in range(h)
    ]


def ref_pyramid(channel, levels):
    pyramid = [channel]
    for _ in range(1, levels):
        low = [row[::2] for row in ref_blur(pyramid[-1])[::2]]
        h, w = len(pyramid[-1]), len(pyramid[-1][0])
        up = [[low[y // 2][x // 2] if y % 2 == 0 and x % 2 == 0 else 0.0 for x in range(w)] for y in range(h)]
        up = ref_blur(up, gain=4.0)
        pyramid[-1] = [[pyramid[-1][y][x] - up[y][x] for x in range(w)] for y in range(h)]
        pyramid.append(low)
    return pyramid


def ref_order(images):
    gen = torch.Generator().manual_seed(HASH_SEED)
    w = torch.randint(0, 2**31, (images[0].numel(),), generator=gen).tolist()
    keys = [sum(int(v) * wi for v, wi in zip(img.flatten().tolist(), w, strict=True)) for img in images]
    return sorted(range(len(images)), key=lambda i: keys[i])


def ref_w1(a, b):
    """W1 between two 1-D samples as the area between their CDFs (not via quantiles)."""
    points = sorted(set(a) | set(b))
    area = 0.0
    for lo, hi in itertools.pairwise(points):
        fa = sum(v <= lo for v in a) / len(a)
        fb = sum(v <= lo for v in b) / len(b)
        area += abs(fa - fb) * (hi - lo)
    return area


def reference_swd(a, b, seed, patches_per_image, projections):
    sizes = resolutions(a.shape[-1])
    sets = []
    for x in (a, b):
        imgs = [x[i] for i in ref_order(list(x))]
        # per image, per channel: the pyramid as nested lists
        sets.append([[ref_pyramid(img[c].double().tolist(), len(sizes)) for c in range(3)] for img in imgs])
    gen = torch.Generator().manual_seed(seed)
    k, h = patches_per_image, 3
    out = {}
    for level, size in enumerate(sizes):
        ys = torch.randint(h, size - h, (max(len(a), len(b)) * k,), generator=gen).tolist()
        xs = torch.randint(h, size - h, (max(len(a), len(b)) * k,), generator=gen).tolist()
        dirs = torch.randn(3 * 49, projections, generator=gen, dtype=torch.float64).tolist()
        descs = []
        for pyramids in sets:
            rows = []
            for r, chans in enumerate(pyramids):
                for j in range(r * k, (r + 1) * k):
                    rows.append(
                        [
                            chans[c][level][ys[j] + dy][xs[j] + dx]
                            for c in range(3)
                            for dy in range(-h, h + 1)
                            for dx in range(-h, h + 1)
                        ]
                    )
            for c in range(3):
                values = [row[d] for row in rows for d in range(c * 49, (c + 1) * 49)]
                mean = sum(values) / len(values)
                std = max(math.sqrt(sum((v - mean) ** 2 for v in values) / len(values)), 1e-8)
                for row in rows:
                    for d in range(c * 49, (c + 1) * 49):
                        row[d] = (row[d] - mean) / std
            descs.append(rows)
        total = 0.0
        for p in range(projections):
            norm = math.sqrt(sum(dirs[d][p] ** 2 for d in range(147)))
            proj = [[sum(row[d] * dirs[d][p] for d in range(147)) / norm for row in rows] for rows in descs]
            total += ref_w1(proj[0], proj[1])
        out[f"swd_{size}"] = total / projections * 1e3
    out["swd_avg"] = sum(out.values()) / len(sizes)
    return out


@pytest.mark.parametrize("nb", [3, 2])
def test_matches_the_loop_reference(nb):
    a, b = blobs(3, seed=1), blobs(nb, seed=2)
    fast = multiscale_swd(a, b, seed=5, patches_per_image=4, projections=8)
    slow = reference_swd(a, b, 5, 4, 8)
    assert fast.keys() == slow.keys() == {"swd_32", "swd_16", "swd_avg"}
    for key in fast:
        assert fast[key] == pytest.approx(slow[key], abs=1e-6)


def test_same_set_is_zero():
    x = blobs(6)
    assert all(v == 0 for v in multiscale_swd(x, x.clone(), **SMALL).values())


def test_order_of_images_and_of_sets_does_not_matter():
    a, b = blobs(6, seed=1), blobs(5, seed=2)
    base = multiscale_swd(a, b, **SMALL)
    assert base["swd_avg"] > 0
    assert multiscale_swd(a[torch.randperm(6)], b[torch.randperm(5)], **SMALL) == pytest.approx(
        base, rel=1e-12
    )
    assert multiscale_swd(b, a, **SMALL) == pytest.approx(base, rel=1e-12)


def test_same_seed_same_number_and_seed_matters():
    a, b = blobs(6, seed=1), blobs(6, seed=2)
    assert multiscale_swd(a, b, seed=3, **SMALL) == multiscale_swd(a, b, seed=3, **SMALL)
    assert multiscale_swd(a, b, seed=3, **SMALL) != multiscale_swd(a, b, seed=4, **SMALL)


def test_real_vs_noise_is_far_above_real_vs_real():
    real = blobs(64, seed=0)
    floor = multiscale_swd(real[:32], real[32:], projections=64)
    vs_noise = multiscale_swd(real[:32], noise(32), projections=64)
    assert all(vs_noise[k] > 3 * floor[k] for k in floor), (vs_noise, floor)


def test_grows_as_images_are_blurred_more():
    real = blobs(16, size=64, seed=0)
    values = [multiscale_swd(real, blur(real, s), **SMALL) for s in (0, 0.5, 1, 2, 4)]
    avg = [v["swd_avg"] for v in values]
    assert avg[0] == 0
    assert all(x < y for x, y in itertools.pairwise(avg)), avg
    # Blur removes fine detail first: the finest level sees it most.
    assert values[1]["swd_64"] > values[1]["swd_16"]


def test_levels_follow_the_image_size():
    x = noise(2, size=64)
    assert set(multiscale_swd(x, x, **SMALL)) == {"swd_64", "swd_32", "swd_16", "swd_avg"}
    x = noise(2, size=16)
    assert set(multiscale_swd(x, x, **SMALL)) == {"swd_16", "swd_avg"}


@pytest.mark.parametrize(
    ("a", "b", "message"),
    [
        (noise(2, 32), noise(2, 64), "same image size"),
        (noise(2, 8), noise(2, 8), "power-of-two side >= 16"),
        (noise(2, 48), noise(2, 48), "power-of-two"),
        (noise(0, 32), noise(2, 32), "at least one image"),
    ],
)
def test_bad_inputs_are_refused(a, b, message):
    with pytest.raises(ValueError, match=message):
        multiscale_swd(a, b, **SMALL)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_agrees_with_cpu():
    a, b = blobs(8, seed=1), blobs(8, seed=2)
    cpu = multiscale_swd(a, b, **SMALL)
    assert multiscale_swd(a.cuda(), b.cuda(), **SMALL) == pytest.approx(cpu, rel=1e-9)
