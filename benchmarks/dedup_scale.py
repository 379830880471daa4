"""Dedup at scale: group 1,000,000 hashes with planted near pairs (target: under 60 s on 2 cores).

Random 64-bit hashes stand in for pHashes (each with a centre-crop probe hash a few
bits away) and for the average hashes of the second candidate source, and 10% of the
images are planted copies about 0-10 bits from another (0-6 in the average hash). The
timed part is what the stage does after hashing: multi-index search of all three passes
(hash-hash, probe-hash, average hash), then best-first grouping with the real thumbnail
verification on every candidate pair that reaches a kept image (thumbnails drawn
from a pool, so the verification cost is real but its verdict is not).

The baseline, measured side by side on a subset, is numpy brute force: XOR and
popcount of every pair, in blocks. Ends with `ratio: X`, brute force's time over
ours on that subset.

    python benchmarks/dedup_scale.py [--n 1000000] [--workers 2] [--subset 100000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.dedup_index import (
    SECOND_THRESHOLD,
    candidate_pairs,
    group,
    hamming,
    pack,
    verify_pairs,
    wide_threshold,
)
from pipeline.params import DedupParams, from_defaults


def planted(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(n, 2, 64) bool hashes, (n, 64) bool average hashes; the planted (original, copy) pairs."""
    rng = np.random.default_rng(seed)
    own = rng.random((n, 64)) < 0.5
    copies = rng.choice(n, size=n // 10, replace=False)
    originals = rng.integers(0, n, size=len(copies))
    originals = np.where(originals == copies, (originals + 1) % n, originals)
    flips = rng.random((len(copies), 64)) < rng.uniform(0, 10 / 64, (len(copies), 1))
    own[copies] = own[originals] ^ flips
    probe = own ^ (rng.random((n, 64)) < 0.05)
    second = rng.random((n, 64)) < 0.5
    flips = rng.random((len(copies), 64)) < rng.uniform(0, SECOND_THRESHOLD / 64, (len(copies), 1))
    second[copies] = second[originals] ^ flips
    return np.stack([own, probe], axis=1), second, originals, copies


def ours(
    hashes: np.ndarray, second: np.ndarray, workers: int, threshold: int = 8
) -> tuple[float, float, tuple, object]:
    pool = np.random.default_rng(1).integers(0, 256, (1000, 2, 32, 32, 3), dtype=np.uint8)

    def verifier(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return verify_pairs(pool, a % len(pool), b % len(pool), workers)

    t0 = time.perf_counter()
    pairs = candidate_pairs(hashes, threshold, workers, second=second)
    t1 = time.perf_counter()
    g = group(np.arange(len(hashes)), pairs, verifier, -1.0, 255.0, threshold)
    return t1 - t0, time.perf_counter() - t1, pairs, g


def brute_force(
    hashes: np.ndarray, second: np.ndarray, threshold: int = 8, block: int = 2048
) -> tuple[float, int]:
    t0 = time.perf_counter()
    own, probe, avg = pack(hashes[:, 0]), pack(hashes[:, 1]), pack(second)
    found = 0
    for s in range(0, len(own), block):
        a = own[s : s + block, None]
        d = np.minimum(hamming(a, own[None]), hamming(probe[s : s + block, None], own[None]))
        d = np.minimum(d, hamming(a, probe[None]))
        near = hamming(avg[s : s + block, None], avg[None]) <= SECOND_THRESHOLD
        hit = (d <= threshold) | (near & (d <= wide_threshold(threshold)))
        found += int(np.triu(hit, s + 1).sum())
    return time.perf_counter() - t0, found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--subset", type=int, default=50_000)
    ap.add_argument("--threshold", type=int, default=from_defaults(DedupParams).threshold)
    args = ap.parse_args()
    t = args.threshold

    print(f"threshold {t} bits, {args.workers} workers")
    print(f"{'method':28} {'hashes':>9} {'search s':>9} {'group s':>8} {'total s':>8} {'pairs':>8}")
    hashes, second, originals, copies = planted(args.n)
    search_s, group_s, pairs, g = ours(hashes, second, args.workers, t)
    found = set(zip(pairs[0].tolist(), pairs[1].tolist(), strict=True))
    packed = pack(hashes[:, 0])
    close = hamming(packed[originals], packed[copies]) <= t  # the planted pairs that count
    want = {
        (min(a, b), max(a, b)) for a, b in zip(originals[close].tolist(), copies[close].tolist(), strict=True)
    }
    print(
        f"{'multi-index + group':28} {args.n:9d} {search_s:9.1f} {group_s:8.1f} "
        f"{search_s + group_s:8.1f} {len(found):8d}"
    )
    missed = len(want - found)
    print(
        f"planted pairs within {t} bits found: {len(want) - missed} of {len(want)}; groups with copies: ",
        end="",
    )
    print(int((np.bincount(g.leader, minlength=args.n) > 1).sum()))

    sub, sub_second = hashes[: args.subset], second[: args.subset]
    s_search, s_group, s_pairs, _ = ours(sub, sub_second, args.workers, t)
    bf_s, bf_pairs = brute_force(sub, sub_second, t)
    print(
        f"{'multi-index + group':28} {args.subset:9d} {s_search:9.1f} {s_group:8.1f} "
        f"{s_search + s_group:8.1f} {len(s_pairs[0]):8d}"
    )
    print(f"{'brute force (numpy)':28} {args.subset:9d} {bf_s:9.1f} {'':8} {bf_s:8.1f} {bf_pairs:8d}")
    assert bf_pairs == len(s_pairs[0]), "multi-index search must find exactly brute force's pairs"
    print(f"target: {args.n} hashes in < 60 s: {'met' if search_s + group_s < 60 else 'NOT met'}")
    print(f"ratio: {bf_s / (s_search + s_group):.1f}")


if __name__ == "__main__":
    main()
