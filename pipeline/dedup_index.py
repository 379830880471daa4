"""Near-duplicate search and grouping, without file I/O: the algorithm behind the dedup stage.

Three steps, each usable alone:

  features(img, ...)        perceptual hashes (the image's own, then a centre-crop
                            probe's) and two 32x32 colour thumbnails
  candidate_pairs(...)      every pair within `threshold` bits, by multi-index hashing
  group(...)                best image first; each image joins the kept image it is
                            verified against, never another member, so groups never chain

Verification compares the thumbnails: the best Pearson correlation over shifts
of up to 2 pixels (and against the other's centre-crop thumbnail, for crops),
then the mean colour difference on the foreground at that alignment. Hashes
only see luminance at low frequency; the colour check is what separates a red
plumber from a green one, and a circle from a rounded square, on white.
"""

from __future__ import annotations

import itertools
import math
import multiprocessing
import os
from collections.abc import Callable
from dataclasses import dataclass

import imagehash
import numpy as np
from PIL import Image

HASHES: dict[str, Callable[..., imagehash.ImageHash]] = {
    "phash": imagehash.phash,
    "dhash": imagehash.dhash,
    "whash": imagehash.whash,
    "ahash": imagehash.average_hash,
}
# The centre-crop probe: a copy cropped by up to 8% hashes close to this crop of
# its original (and the original close to the copy's probe). Measured in
# benchmarks/dedup_quality.py: pHash recall at 8 bits goes from 0.84 to 0.91.
PROBE = (0.04, 0.04, 0.96, 0.96)
THUMB = 32
SHIFT = 2  # pixels of the 32x32 thumbnail a crop may move the content
FOREGROUND = 40  # summed |RGB - background| above which a thumbnail pixel is foreground


@dataclass(frozen=True)
class Features:
    """What dedup needs of one image; small enough to cache by sha256."""

    hashes: np.ndarray  # (2, bits) bool: the image's hash, then its centre-crop probe's
    thumbs: np.ndarray  # (2, 32, 32, 3) uint8: the image, then its centre crop


def features(img: Image.Image, hash_name: str = "phash", hash_size: int = 8) -> Features:
    """Hash `img` (RGB) and its centre-crop probe, and make both verification thumbnails."""
    fn = HASHES[hash_name]
    w, h = img.size
    box = (round(PROBE[0] * w), round(PROBE[1] * h), round(PROBE[2] * w), round(PROBE[3] * h))
    probe = img.crop(box) if box[2] > box[0] and box[3] > box[1] else img
    hashes = np.stack([fn(x, hash_size=hash_size).hash.reshape(-1) for x in (img, probe)])
    thumbs = np.stack([np.asarray(x.resize((THUMB, THUMB), Image.Resampling.BOX)) for x in (img, probe)])
    return Features(hashes.astype(bool), thumbs.astype(np.uint8))


# --- search -----------------------------------------------------------------------------


def pack(bits: np.ndarray) -> np.ndarray:
    """(n, bits) bool to (n, words) uint64, for XOR-and-popcount distances."""
    n, b = bits.shape
    padded = np.zeros((n, -(-b // 64) * 64), dtype=bool)
    padded[:, :b] = bits
    return np.packbits(padded, axis=1).view(">u8").astype(np.uint64)


def hamming(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Row-wise Hamming distance of packed hashes."""
    return np.bitwise_count(x ^ y).sum(axis=-1, dtype=np.int64)


def _plan(n: int, bits: int, threshold: int) -> tuple[list[tuple[int, int]], int]:
    """Split the bits into m chunks; pairs within `threshold` agree within r = threshold // m
    bits on at least one chunk (pigeonhole). Pick m with the least estimated work:
    lookups (flips per chunk) plus candidates (flips times bucket occupancy)."""
    best = None
    for m in range(1, min(bits, threshold + 1) + 1):
        b = math.ceil(bits / m)
        if b > 26:
            continue
        r = threshold // m
        flips = sum(math.comb(b, k) for k in range(r + 1))
        cost = m * flips * (1 + n / 2**b)
        if best is None or cost < best[0]:
            best = (cost, m)
    m = best[1] if best else math.ceil(bits / 26)
    edges = np.linspace(0, bits, m + 1).round().astype(int)
    return list(itertools.pairwise(edges.tolist())), threshold // m


def _keys(bits: np.ndarray, chunks: list[tuple[int, int]]) -> np.ndarray:
    out = np.empty((len(bits), len(chunks)), dtype=np.int64)
    for c, (lo, hi) in enumerate(chunks):
        weights = 1 << np.arange(hi - lo, dtype=np.int64)
        out[:, c] = bits[:, lo:hi].astype(np.int64) @ weights
    return out


_JOB: dict = {}  # the index, shared with forked workers without pickling


def _flips(b: int, r: int) -> list[int]:
    return [sum(1 << i for i in c) for k in range(r + 1) for c in itertools.combinations(range(b), k)]


def _chunk_masks(chunks: list[tuple[int, int]], words: int) -> np.ndarray:
    """(chunks, words) uint64 masks selecting each chunk's bits in the packed hashes."""
    bits = np.zeros((len(chunks), words * 64), dtype=bool)
    for c, (lo, hi) in enumerate(chunks):
        bits[c, lo:hi] = True
    return pack(bits)


def _search(task: tuple[int, list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (query, item) within the threshold found through chunk c with these flips.

    Queries are visited in key order, so the table lookups for key ^ flip stay
    close together in memory.
    """
    c, flips = task
    j = _JOB
    counts, starts, order, qorder, qsorted, low = j["chunks"][c]
    masks, r, t = j["masks"], j["r"], j["threshold"]
    queries, items, self_join = j["queries"], j["items"], j["self_join"]
    qs, its = [], []
    for f in flips:
        if self_join and f:
            # A pair is met from both ends with the same flip; only the end whose key
            # has a 0 at the flip's top bit looks. (Flip 0: the lower index, below.)
            qpos = low[f.bit_length() - 1]
            k = qsorted[qpos] ^ f
        else:
            qpos = None
            k = qsorted ^ f
        cnt = counts[k]
        hit = np.flatnonzero(cnt)
        if not len(hit):
            continue
        cn = cnt[hit]
        qid = qorder[hit if qpos is None else qpos[hit]]
        qrep = np.repeat(qid, cn)
        first = np.repeat(starts[k[hit]] - (np.cumsum(cn) - cn), cn)
        it = order[first + np.arange(len(qrep))]
        x = queries[qrep] ^ items[it]
        ok = np.bitwise_count(x).sum(axis=1) <= t
        if self_join and f == 0:
            ok &= qrep < it
        for c2 in range(c):  # found already through an earlier chunk
            ok &= np.bitwise_count(x & masks[c2]).sum(axis=1) > r
        qs.append(qrep[ok])
        its.append(it[ok])
    if not qs:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    return np.concatenate(qs).astype(np.int64), np.concatenate(its).astype(np.int64)


def near_pairs(
    items: np.ndarray, queries: np.ndarray | None, threshold: int, workers: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Every (query, item) pair of bool hashes within `threshold` bits: multi-index hashing.

    With `queries` None it is a self-join of `items` and each pair comes once, query < item.
    Exact: the pigeonhole bound means no pair within the threshold is missed.
    """
    self_join = queries is None
    queries = items if self_join else queries
    n, bits = items.shape
    chunks, r = _plan(n, bits, threshold)
    ikeys = _keys(items, chunks)
    qkeys = ikeys if self_join else _keys(queries, chunks)
    tables = []
    for c, (lo, hi) in enumerate(chunks):
        counts = np.bincount(ikeys[:, c], minlength=1 << (hi - lo)).astype(np.int32)
        starts = (np.cumsum(counts, dtype=np.int64) - counts).astype(np.int64)
        order = np.argsort(ikeys[:, c], kind="stable")
        qorder = order if self_join else np.argsort(qkeys[:, c], kind="stable")
        qsorted = qkeys[qorder, c].astype(np.int32)
        low = [np.flatnonzero((qsorted >> b) & 1 == 0) for b in range(hi - lo)] if self_join else []
        tables.append((counts, starts, order, qorder, qsorted, low))
    pitems = pack(items)
    _JOB.update(
        chunks=tables,
        masks=_chunk_masks(chunks, pitems.shape[1]),
        r=r,
        threshold=threshold,
        items=pitems,
        queries=pitems if self_join else pack(queries),
        self_join=self_join,
    )
    tasks = []
    for c, (lo, hi) in enumerate(chunks):
        fl = _flips(hi - lo, r)
        step = max(1, len(fl) // (4 * max(1, workers)))
        tasks += [(c, fl[i : i + step]) for i in range(0, len(fl), step)]
    try:
        if workers > 1 and len(items) > 20000 and "fork" in multiprocessing.get_all_start_methods():
            with multiprocessing.get_context("fork").Pool(workers) as pool:
                parts = pool.map(_search, tasks, chunksize=1)
        else:
            parts = [_search(t) for t in tasks]
    finally:
        _JOB.clear()
    q = np.concatenate([p[0] for p in parts]) if parts else np.empty(0, np.int64)
    i = np.concatenate([p[1] for p in parts]) if parts else np.empty(0, np.int64)
    return (np.minimum(q, i), np.maximum(q, i)) if self_join else (q, i)


def candidate_pairs(
    hashes: np.ndarray, threshold: int, workers: int = 1
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs (a < b) whose hashes, or one's hash and the other's probe hash, are within
    `threshold` bits. `hashes` is (n, 2, bits) bool. Returns a, b and the smallest distance."""
    own, probe = hashes[:, 0], hashes[:, 1]
    q1, i1 = near_pairs(own, None, threshold, workers)
    q2, i2 = near_pairs(own, probe, threshold, workers)
    keep = q2 != i2
    a = np.concatenate([q1, np.minimum(q2, i2)[keep]])
    b = np.concatenate([i1, np.maximum(q2, i2)[keep]])
    if not len(a):
        e = np.empty(0, np.int64)
        return e, e, e
    packed_own, packed_probe = pack(own), pack(probe)
    d = np.minimum.reduce(
        [
            hamming(packed_own[a], packed_own[b]),
            hamming(packed_probe[a], packed_own[b]),
            hamming(packed_own[a], packed_probe[b]),
        ]
    )
    key = a * len(hashes) + b
    key, first = np.unique(key, return_index=True)
    return a[first], b[first], d[first]


# --- verification -----------------------------------------------------------------------


def _background(x: np.ndarray) -> np.ndarray:
    border = np.concatenate([x[:, 0], x[:, -1], x[:, :, 0], x[:, :, -1]], axis=1)
    return np.median(border, axis=1)


def verify(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Compare thumbnails a[k] and b[k], each (P, 32, 32, 3) uint8.

    Returns (correlation, colour difference): the best Pearson correlation of a's
    inner window with b shifted by up to SHIFT pixels, and at that shift the mean
    absolute colour difference (0-255, after matching brightness) over the pixels
    that are foreground in either.
    """
    if not len(a):
        return np.empty(0, np.float32), np.empty(0, np.float32)
    a = a.astype(np.float32)
    b = b.astype(np.float32)
    p, t = len(a), a.shape[1]
    n = t - 2 * SHIFT
    inner = a[:, SHIFT:-SHIFT, SHIFT:-SHIFT]
    # The alignment search runs on grey (R+G+B): a third of the work; colour is judged below.
    ig = inner.sum(axis=3).reshape(p, -1)
    ig -= ig.mean(axis=1, keepdims=True)
    ig /= np.sqrt((ig * ig).sum(axis=1, keepdims=True)) + 1e-3
    ig = ig.reshape(p, n, n)
    grey = b.sum(axis=3)
    # Window sums by integral images, so each shift costs one multiply-add pass.
    ii = np.pad(grey.cumsum(2).cumsum(1), ((0, 0), (1, 0), (1, 0)))
    ii2 = np.pad((grey * grey).cumsum(2).cumsum(1), ((0, 0), (1, 0), (1, 0)))
    side = 2 * SHIFT + 1
    corr = np.empty((p, side * side), np.float32)
    for k in range(side * side):
        dy, dx = divmod(k, side)
        win = grey[:, dy : dy + n, dx : dx + n]
        s = ii[:, dy + n, dx + n] - ii[:, dy, dx + n] - ii[:, dy + n, dx] + ii[:, dy, dx]
        s2 = ii2[:, dy + n, dx + n] - ii2[:, dy, dx + n] - ii2[:, dy + n, dx] + ii2[:, dy, dx]
        norm = np.sqrt(np.maximum(s2 - s * s / (n * n), 0)) + 1e-3
        corr[:, k] = np.einsum("pij,pij->p", ig, win) / norm
    best = corr.argmax(axis=1)
    rows = np.arange(p)
    score = corr[rows, best]
    # Colour: at the best shift, over the pixels that are foreground in either thumbnail.
    dy, dx = np.divmod(best, side)
    windows = np.lib.stride_tricks.sliding_window_view(b, (n, n), axis=(1, 2))  # p, s, s, 3, n, n
    bw = windows[rows, dy, dx].transpose(0, 2, 3, 1)
    fa = (np.abs(inner - _background(a)[:, None, None]).sum(axis=3) > FOREGROUND).reshape(p, -1)
    fb = (np.abs(bw - _background(b)[:, None, None]).sum(axis=3) > FOREGROUND).reshape(p, -1)
    mask = fa | fb
    aw, bw = inner.reshape(p, -1), bw.reshape(p, -1)
    gain = aw.mean(axis=1) / (bw.mean(axis=1) + 1e-3)
    err = np.abs(aw - gain[:, None] * bw).reshape(p, -1, 3).mean(axis=2)
    colour = (err * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1)
    return score, colour.astype(np.float32)


def verify_pairs(
    thumbs: np.ndarray, a: np.ndarray, b: np.ndarray, workers: int = 1, block: int = 2048
) -> tuple[np.ndarray, np.ndarray]:
    """Verify images a[k] ~ b[k] (thumbs is (n, 2, 32, 32, 3)): own thumbnails, then each
    against the other's centre crop, keeping the best correlation and the smallest
    colour difference. Works in blocks (on `workers` processes when there are many),
    so memory stays small for any number of pairs."""
    if workers > 1 and len(a) > 8 * block and "fork" in multiprocessing.get_all_start_methods():
        _JOB["thumbs"] = thumbs
        try:
            cuts = range(0, len(a), 4 * block)
            with multiprocessing.get_context("fork").Pool(workers) as pool:
                parts = pool.starmap(
                    _verify_part, [(a[s : s + 4 * block], b[s : s + 4 * block]) for s in cuts]
                )
        finally:
            _JOB.clear()
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    score = np.empty(len(a), np.float32)
    colour = np.empty(len(a), np.float32)
    for s in range(0, len(a), block):
        x, y = a[s : s + block], b[s : s + block]
        best, diff = verify(thumbs[x, 0], thumbs[y, 0])
        # The centre crops only matter where the whole thumbnails disagree.
        again = np.flatnonzero((best < 0.95) | (diff > 16))
        for i, j in ((0, 1), (1, 0)):
            sc, co = verify(thumbs[x[again], i], thumbs[y[again], j])
            best[again], diff[again] = np.maximum(best[again], sc), np.minimum(diff[again], co)
        score[s : s + block], colour[s : s + block] = best, diff
    return score, colour


def _verify_part(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return verify_pairs(_JOB["thumbs"], a, b)


# --- grouping ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Grouping:
    """Result of `group`, indexed like its input; `leader[i] == i` for kept images."""

    leader: np.ndarray  # int64: the kept image each image belongs to
    distance: np.ndarray  # int64: hash distance to its kept image (0 for kept)
    score: np.ndarray  # float32: correlation with its kept image (1 for kept)
    colour: np.ndarray  # float32: colour difference to its kept image (0 for kept)
    rejected: list[tuple[int, int, int, float, float]]  # (a, b, distance, score, colour) failed


def group(
    rank: np.ndarray,
    pairs: tuple[np.ndarray, np.ndarray, np.ndarray],
    verifier: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]],
    min_score: float,
    max_colour_diff: float,
) -> Grouping:
    """Visit images best first (`rank` 0 is best); each joins the kept image it verifies
    best against (highest correlation), or is kept itself. Only kept images are ever
    joined, so every member is verified against its group's kept image: no chaining."""
    n = len(rank)
    leader = np.arange(n)
    distance = np.zeros(n, np.int64)
    score = np.ones(n, np.float32)
    colour = np.zeros(n, np.float32)
    rejected: list[tuple[int, int, int, float, float]] = []
    a, b, d = pairs
    if len(a):
        swap = rank[a] < rank[b]
        worse, better = np.where(swap, b, a), np.where(swap, a, b)
        order = np.lexsort((d, rank[worse]))
        worse, better, d = worse[order], better[order], d[order]
        # One vectorised verification of every candidate pair; a pair whose better image
        # turns out not to be kept is then simply not used.
        sc, co = verifier(worse, better)
        ok = (sc >= min_score) & (co <= max_colour_diff)
        cut = np.flatnonzero(np.diff(worse)) + 1
        for start, stop in zip(np.r_[0, cut], np.r_[cut, len(worse)], strict=True):
            w = worse[start]
            bs, s, c, good = better[start:stop], sc[start:stop], co[start:stop], ok[start:stop]
            live = leader[bs] == bs
            for k in np.flatnonzero(live & ~good):
                rejected.append((int(bs[k]), int(w), int(d[start + k]), float(s[k]), float(c[k])))
            good &= live
            if good.any():
                k = np.flatnonzero(good)[np.argmax(s[good])]
                leader[w], distance[w], score[w], colour[w] = bs[k], d[start + k], s[k], c[k]
    return Grouping(leader, distance, score, colour, rejected)


def default_workers(workers: int) -> int:
    return workers or os.cpu_count() or 1
