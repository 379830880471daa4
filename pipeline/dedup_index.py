"""Near-duplicate search and grouping, without file I/O: the algorithm behind the dedup stage.

Three steps, each usable alone:

  features(img, ...)        perceptual hashes (the image's own, then a centre-crop
                            probe's) and two 32x32 colour thumbnails
  candidate_pairs(...)      every pair within `threshold` bits, by multi-index hashing, and
                            the pairs a second hash (aHash) finds a little further out
  group(...)                best image first; each image joins the kept image it is
                            verified against, never another member, so groups never chain

Verification (verify, verify_pairs) compares the thumbnails: the best Pearson
correlation of their smoothed luma over the overlap, displaced by up to 2 pixels
(and against the other's centre-crop thumbnail, for crops), then the mean colour
difference on the foreground at that alignment. The README's "Deduplication"
section explains the steps and why each measure is the one it is.
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
WORK_SIDE = 128  # features() works on a copy reduced to about this shorter side
SHIFT = 2  # pixels of the 32x32 thumbnail a crop may move the content
FOREGROUND = 40  # summed |RGB - background| above which a thumbnail pixel is foreground
# Copies may be cropped by up to 8% of each side's length (the probe above, and SHIFT below,
# are sized for that), which changes the aspect ratio by up to 1/0.92; two such copies of
# one picture (one cropped across, one down) differ by up to 1/0.92². Pairs further apart
# are not candidates: on benchmarks/dedup_quality.py's set this gate removes 99 of the 283
# falsely verified pairs of flags and 57 of 96 of screenshots (one layout at another
# aspect ratio), 2 of the 7,691 true ones, and 28% of the candidate pairs (README).
MAX_ASPECT_CHANGE = 1 / 0.92**2
# The second candidate source: pairs whose average hashes (8x8 of the own thumbnail's grey)
# are within SECOND_THRESHOLD bits and whose main hashes are within WIDE x the threshold.
# pHash misses copies of flat and drawn pictures (a near-zero DCT coefficient flips with
# JPEG noise); an average hash keeps them, but alone it pairs most clip art on white. Those
# pairs are further apart in the main hash, so they must verify with STRICT limits (a
# correlation halfway from min_score to 1, a colour difference STRICT_COLOUR x the limit).
# Measured per family in benchmarks/dedup_quality.py (README).
SECOND_THRESHOLD = 6
WIDE = 1.6
STRICT_COLOUR = 0.75


@dataclass(frozen=True)
class Features:
    """What dedup needs of one image; small enough to cache by sha256."""

    hashes: np.ndarray  # (2, bits) bool: the image's hash, then its centre-crop probe's
    thumbs: np.ndarray  # (2, 32, 32, 3) uint8: the image, then its centre crop
    aspect: float  # width / height, as displayed (upright)
    second: np.ndarray  # (64,) bool: average hash of the own thumbnail's grey (8x8 box means)


def work_side(hash_size: int) -> int:
    """features() box-reduces by the integer factor shorter_side // work_side(hash_size)."""
    return max(WORK_SIDE, 16 * hash_size)


def features(img: Image.Image, hash_name: str = "phash", hash_size: int = 8) -> Features:
    """Hash `img` (RGB) and its centre-crop probe, and make both verification thumbnails.

    Everything comes from one working copy, box-reduced by an integer factor to a
    shorter side of at least WORK_SIDE (and 16x the hash side). The hashes are taken
    from the greyscale of the 32x32 box thumbnails when the hash needs no more pixels
    than that (phash at hash_size 8 resizes to 32x32 itself): resizing was most of the
    time, and box instead of Lanczos before the DCT left precision and recall on
    benchmarks/dedup_quality.py unchanged (README).
    """
    fn = HASHES[hash_name]
    aspect = img.width / img.height
    factor = min(img.size) // work_side(hash_size)
    if factor >= 2:
        img = img.reduce(factor)
    w, h = img.size
    box = (round(PROBE[0] * w), round(PROBE[1] * h), round(PROBE[2] * w), round(PROBE[3] * h))
    if not (box[2] > box[0] and box[3] > box[1]):
        box = (0, 0, w, h)
    small = [img.resize((THUMB, THUMB), Image.Resampling.BOX, box=b) for b in (None, box)]
    if 4 * hash_size <= THUMB:
        sources = [s.convert("L") for s in small]
    else:
        grey = img.convert("L")
        sources = [grey, grey.crop(box)]
    hashes = np.stack([fn(s, hash_size=hash_size).hash.reshape(-1) for s in sources])
    thumbs = np.stack([np.asarray(s) for s in small])
    return Features(hashes.astype(bool), thumbs.astype(np.uint8), aspect, average_hash(small[0]))


def average_hash(thumb: Image.Image) -> np.ndarray:
    """(64,) bool: the 8x8 box means of a 32x32 thumbnail's grey, above their mean."""
    grey = np.asarray(thumb.convert("L"), np.float32).reshape(8, THUMB // 8, 8, THUMB // 8).mean(axis=(1, 3))
    return (grey > grey.mean()).reshape(-1)


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


def _radii(sizes: list[int], threshold: int) -> list[int]:
    """Per-chunk search radii r_c with sum(r_c) = threshold - m + 1 (at least 0 each).

    Exact: a pair with every chunk distance >= r_c + 1 is at least sum(r_c) + m =
    threshold + 1 bits apart (the generalised pigeonhole of GPH, Qin et al. 2018).
    Split evenly, some radii are one less than plain pigeonhole's threshold // m,
    which cuts the bit flips to try (64 bits, 3 chunks, 10 bits: 3,378, not 4,918).
    The smaller radii go to the larger chunks."""
    m = len(sizes)
    total = max(0, threshold - m + 1)
    radii = [total // m] * m
    for c in sorted(range(m), key=lambda c: sizes[c])[: total % m]:
        radii[c] += 1
    return radii


def _flip_count(b: int, r: int) -> int:
    return sum(math.comb(b, k) for k in range(r + 1))


def _plan(n: int, bits: int, threshold: int) -> tuple[list[tuple[int, int]], list[int]]:
    """Split the bits into m chunks with radii (see _radii). Pick m with the least
    estimated work: lookups (flips per chunk) plus candidates (flips times bucket occupancy)."""
    best = None
    for m in range(1, bits + 1):
        edges = np.linspace(0, bits, m + 1).round().astype(int).tolist()
        sizes = [hi - lo for lo, hi in itertools.pairwise(edges)]
        if max(sizes) > 26:
            continue
        radii = _radii(sizes, threshold)
        cost = sum(_flip_count(b, r) * (1 + n / 2**b) for b, r in zip(sizes, radii, strict=True))
        if best is None or cost < best[0]:
            best = (cost, list(itertools.pairwise(edges)), radii)
        if m > threshold:
            break  # every radius is 0 from here on: more chunks only add lookups
    assert best is not None
    return best[1], best[2]


def _keys(bits: np.ndarray, chunks: list[tuple[int, int]]) -> np.ndarray:
    out = np.empty((len(bits), len(chunks)), dtype=np.int64)
    for c, (lo, hi) in enumerate(chunks):
        weights = 1 << np.arange(hi - lo, dtype=np.int64)
        out[:, c] = bits[:, lo:hi].astype(np.int64) @ weights
    return out


# The index (or the thumbnails), shared with forked workers without pickling.
_SHARED_WITH_WORKERS: dict = {}


@dataclass(frozen=True)
class _ChunkTable:
    """One chunk's lookup table: the items bucketed by their key in this chunk."""

    counts: np.ndarray  # items per key
    starts: np.ndarray  # where each key's bucket starts in key order
    item_order: np.ndarray  # item indices in key order
    query_order: np.ndarray  # query indices in key order (the items' own in a self-join)
    query_keys_sorted: np.ndarray  # the queries' keys, in key order
    zero_at_bit: list[np.ndarray]  # self-join: key-order positions whose key has bit b clear
    queries: np.ndarray  # packed query hashes, in key order
    items: np.ndarray  # packed item hashes, in key order


def _flips(b: int, r: int) -> list[int]:
    return [sum(1 << i for i in c) for k in range(r + 1) for c in itertools.combinations(range(b), k)]


def _chunk_masks(chunks: list[tuple[int, int]], words: int) -> np.ndarray:
    """(chunks, words) uint64 masks selecting each chunk's bits in the packed hashes."""
    bits = np.zeros((len(chunks), words * 64), dtype=bool)
    for c, (lo, hi) in enumerate(chunks):
        bits[c, lo:hi] = True
    return pack(bits)


def _search(task: tuple[int, list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (query, item) within the threshold found through one chunk's table with
    these bit flips of the query keys.

    Queries are visited in key order, so the table lookups for key ^ flip stay
    close together in memory.
    """
    chunk, flips = task
    shared = _SHARED_WITH_WORKERS
    table = shared["chunks"][chunk]
    masks, radii, threshold = shared["masks"], shared["radii"], shared["threshold"]
    self_join = shared["self_join"]
    found_queries, found_items = [], []
    for flip in flips:
        if self_join and flip:
            # A pair is met from both ends with the same flip; only the end whose key
            # has a 0 at the flip's top bit looks. (Flip 0: the lower index, below.)
            query_positions = table.zero_at_bit[flip.bit_length() - 1]
            keys = table.query_keys_sorted[query_positions] ^ flip
        else:
            query_positions = None
            keys = table.query_keys_sorted ^ flip
        bucket_sizes = table.counts[keys]
        hits = np.flatnonzero(bucket_sizes)
        if not len(hits):
            continue
        sizes = bucket_sizes[hits].astype(np.int64)
        # Positions in key order of each candidate's query and item.
        query_at = np.repeat(hits if query_positions is None else query_positions[hits], sizes)
        item_at = np.repeat(table.starts[keys[hits]] - (np.cumsum(sizes) - sizes), sizes) + np.arange(
            len(query_at)
        )
        differ = table.queries[query_at] ^ table.items[item_at]
        close = np.flatnonzero(_popcount(differ) <= threshold)
        query = table.query_order[query_at[close]]
        item = table.item_order[item_at[close]]
        differ = differ[close]
        if self_join and flip == 0:
            lower_first = query < item
            query, item, differ = query[lower_first], item[lower_first], differ[lower_first]
        if chunk:  # drop the pairs an earlier chunk finds
            new = np.ones(len(differ), bool)
            for earlier in range(chunk):
                new &= _popcount(differ & masks[earlier]) > radii[earlier]
            query, item = query[new], item[new]
        found_queries.append(query)
        found_items.append(item)
    if not found_queries:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    return np.concatenate(found_queries).astype(np.int64), np.concatenate(found_items).astype(np.int64)


def _popcount(x: np.ndarray) -> np.ndarray:
    return np.bitwise_count(x) if x.ndim == 1 else np.bitwise_count(x).sum(axis=1, dtype=np.int64)


def _flat(packed: np.ndarray) -> np.ndarray:
    # One word per hash (64 bits or fewer): 1-D arrays skip a sum over an axis of 1.
    return packed[:, 0].copy() if packed.shape[1] == 1 else packed


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
    chunks, radii = _plan(n, bits, threshold)
    ikeys = _keys(items, chunks)
    qkeys = ikeys if self_join else _keys(queries, chunks)
    pitems = _flat(pack(items))
    pqueries = pitems if self_join else _flat(pack(queries))
    words = -(-bits // 64)
    tables = []
    for c, (lo, hi) in enumerate(chunks):
        counts = np.bincount(ikeys[:, c], minlength=1 << (hi - lo))
        # One byte per bucket where it fits: the table is looked up once per query and
        # bit flip, and a quarter of the memory is read faster (the 1M-hash search: -10%).
        counts = counts.astype(np.uint8 if counts.max(initial=0) < 256 else np.int32)
        starts = (np.cumsum(counts, dtype=np.int64) - counts).astype(np.int64)
        order = np.argsort(ikeys[:, c], kind="stable")
        qorder = order if self_join else np.argsort(qkeys[:, c], kind="stable")
        qsorted = qkeys[qorder, c].astype(np.int32)
        low = [np.flatnonzero((qsorted >> b) & 1 == 0) for b in range(hi - lo)] if self_join else []
        # The hashes in key order too: a bucket's candidates lie in consecutive memory.
        tables.append(
            _ChunkTable(counts, starts, order, qorder, qsorted, low, pqueries[qorder], pitems[order])
        )
    _SHARED_WITH_WORKERS.update(
        chunks=tables,
        masks=_flat(_chunk_masks(chunks, words)),
        radii=radii,
        threshold=threshold,
        self_join=self_join,
    )
    tasks = []
    for c, (lo, hi) in enumerate(chunks):
        fl = _flips(hi - lo, radii[c])
        step = max(1, len(fl) // (4 * max(1, workers)))
        tasks += [(c, fl[i : i + step]) for i in range(0, len(fl), step)]
    try:
        if workers > 1 and len(items) > 20000 and "fork" in multiprocessing.get_all_start_methods():
            with multiprocessing.get_context("fork").Pool(workers) as pool:
                parts = pool.map(_search, tasks, chunksize=1)
        else:
            parts = [_search(t) for t in tasks]
    finally:
        _SHARED_WITH_WORKERS.clear()
    q = np.concatenate([p[0] for p in parts]) if parts else np.empty(0, np.int64)
    i = np.concatenate([p[1] for p in parts]) if parts else np.empty(0, np.int64)
    return (np.minimum(q, i), np.maximum(q, i)) if self_join else (q, i)


def wide_threshold(threshold: int) -> int:
    """How far apart in the main hash a pair found by the second hash may be."""
    return round(WIDE * threshold)


def candidate_pairs(
    hashes: np.ndarray,
    threshold: int,
    workers: int = 1,
    aspect: np.ndarray | None = None,
    second: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs (a < b) whose hashes, or one's hash and the other's probe hash, are within
    `threshold` bits. `hashes` is (n, 2, bits) bool. Returns a, b and the smallest distance.
    With `second` (n, 64) bool average hashes, also the pairs within SECOND_THRESHOLD bits
    there and within wide_threshold(threshold) in the main hash (their distance is then
    above `threshold`: `group` holds them to stricter limits). With `aspect` (n,) (width /
    height), pairs whose aspect ratios differ by more than MAX_ASPECT_CHANGE are left out:
    no crop the stage allows for makes one from the other."""
    own, probe = hashes[:, 0], hashes[:, 1]
    q1, i1 = near_pairs(own, None, threshold, workers)
    q2, i2 = near_pairs(own, probe, threshold, workers)
    keep = q2 != i2
    found = [q1, np.minimum(q2, i2)[keep]], [i1, np.maximum(q2, i2)[keep]]
    if second is not None:
        q3, i3 = near_pairs(second, None, SECOND_THRESHOLD, workers)
        found[0].append(q3)
        found[1].append(i3)
    a, b = np.concatenate(found[0]), np.concatenate(found[1])
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
    a, b, d = a[first], b[first], d[first]
    if second is not None:
        keep = d <= wide_threshold(threshold)
        a, b, d = a[keep], b[keep], d[keep]
    if aspect is not None:
        keep = np.abs(np.log(aspect[a] / aspect[b])) <= math.log(MAX_ASPECT_CHANGE) + 1e-9
        a, b, d = a[keep], b[keep], d[keep]
    return a, b, d


# --- verification -----------------------------------------------------------------------


def _background(x: np.ndarray) -> np.ndarray:
    border = np.concatenate([x[:, 0], x[:, -1], x[:, :, 0], x[:, :, -1]], axis=1)
    return np.median(border, axis=1)


def _rgb_sum(x: np.ndarray) -> np.ndarray:
    # numpy reduces a length-3 last axis slowly; three adds are several times faster.
    return x[..., 0] + x[..., 1] + x[..., 2]


SIDE = 2 * SHIFT + 1
# Displacement k (0 .. SIDE² - 1) pairs a[y, x] with b[y + dy, x + dx] over their overlap.
DISPLACEMENTS = [(dy, dx) for dy in range(-SHIFT, SHIFT + 1) for dx in range(-SHIFT, SHIFT + 1)]
FLAT_RMS = 3.0  # a thumbnail part whose luma (0-765) varies less than this (RMS) is flat
LUMA = np.array([0.299, 0.587, 0.114], np.float32) * 3  # Rec. 601, scaled to R+G+B's 0-765


def _overlap(d: int) -> slice:
    """Rows (or columns) of the first image that overlap the second at displacement d."""
    return slice(max(0, -d), THUMB - max(0, d))


_DY, _DX = np.array(DISPLACEMENTS).T
_N = ((THUMB - np.abs(_DY)) * (THUMB - np.abs(_DX))).astype(np.float64)  # overlap sizes
_MIRROR = len(DISPLACEMENTS) - 1 - np.arange(len(DISPLACEMENTS))  # the index of -d
# Displacements in the order ties go: no shift first, then the smallest (|dy| + |dx|, |dy|,
# dy * dx; stable). Swapping a and b turns every d into -d, and the key is the same for both,
# so b ~ a breaks a tie as a ~ b did (only a tie of d with -d itself is left to the index).
_TIE_ORDER = np.lexsort((_DY * _DX, np.abs(_DY), np.abs(_DY) + np.abs(_DX)))  # last key first


def _smooth(f: np.ndarray) -> np.ndarray:
    """[1 2 1] / 4 along the last two axes, edges repeated."""
    y = np.concatenate([f[..., :1, :], f, f[..., -1:, :]], axis=-2)
    y = y[..., :-2, :] + 2 * y[..., 1:-1, :] + y[..., 2:, :]
    y = np.concatenate([y[..., :1], y, y[..., -1:]], axis=-1)
    return (y[..., :-2] + 2 * y[..., 1:-1] + y[..., 2:]) / 16


@dataclass(frozen=True)
class _Prepared:
    """What the correlation needs of a set of thumbnails: computed once per image, not once
    per candidate pair (images recur in pairs)."""

    luma: np.ndarray  # (u, 32, 32) float32: luma minus its mean
    sums: np.ndarray  # (u, SIDE²) float64: luma sums over the image's overlap part, per d
    squares: np.ndarray  # (u, SIDE²) float64: sums of squares there


# Row k selects the rows (or columns) of the first image's overlap at displacement k - SHIFT.
_SELECT = np.array(
    [[_overlap(d).start <= i < _overlap(d).stop for i in range(THUMB)] for d in range(-SHIFT, SHIFT + 1)]
)


def _region_sums(x: np.ndarray) -> np.ndarray:
    """(u, 32, 32) -> (u, SIDE²): sums over the first image's overlap part for each
    displacement, as S @ x @ S.T (the same matrix picks rows and columns)."""
    s = _SELECT.astype(x.dtype)
    return (s @ x @ s.T).reshape(len(x), -1)


def _prepare(t: np.ndarray) -> _Prepared:
    """Thumbnails (u, 32, 32, 3) uint8, as luma (Rec. 601 weights x 3, so 0-765 like
    R+G+B): unlike a plain R+G+B, it tells red from blue, so a red-and-blue picture is not
    flat. Minus its mean, so the sums below lose nothing to cancellation."""
    f = t.reshape(-1, 3).astype(np.float32) @ LUMA
    # Smoothed: a thin stroke moved by half a pixel (a crop, a rescale) still overlaps itself.
    f = _smooth(f.reshape(t.shape[:3]))
    f -= f.mean(axis=(1, 2), keepdims=True)
    f64 = f.astype(np.float64)
    return _Prepared(f, _region_sums(f64), _region_sums(f64 * f64))


def _correlate(pa: _Prepared, ia: np.ndarray, pb: _Prepared, ib: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Best Pearson correlation of images a and b over their overlap, across the
    displacements, and that displacement's index. Symmetric: a at d is b at -d.

    Rule for flat parts (luma RMS below FLAT_RMS, where a correlation would be noise over
    noise): both flat -> 1, and the colour check decides; one flat -> 0. Clamped to [-1, 1].
    """
    ga, gb = pa.luma[ia], pb.luma[ib]
    raw = np.empty((len(ia), len(DISPLACEMENTS)))
    for k, (dy, dx) in enumerate(DISPLACEMENTS):
        # sum over the overlap of a[i, j] * b[i + dy, j + dx]
        raw[:, k] = np.einsum(
            "pij,pij->p", ga[:, _overlap(dy), _overlap(dx)], gb[:, _overlap(-dy), _overlap(-dx)]
        )
    sa, sb = pa.sums[ia], pb.sums[ib][:, _MIRROR]
    cov = raw - sa * sb / _N
    var_a = np.maximum(pa.squares[ia] - sa * sa / _N, 0)
    var_b = np.maximum(pb.squares[ib][:, _MIRROR] - sb * sb / _N, 0)
    flat_a, flat_b = var_a < FLAT_RMS**2 * _N, var_b < FLAT_RMS**2 * _N
    with np.errstate(divide="ignore", invalid="ignore"):
        corr = np.clip(cov / np.sqrt(var_a * var_b), -1.0, 1.0)
    corr = np.where(flat_a | flat_b, (flat_a & flat_b).astype(np.float64), corr)
    # Chosen in float64, where a ~ b and b ~ a give bitwise mirrored values: in float32 nearby
    # displacements tie, and an argmax then broke the tie by index, differently for b ~ a.
    best = _TIE_ORDER[corr[:, _TIE_ORDER].argmax(axis=1)]  # ties (flat parts): no displacement
    return corr[np.arange(len(ia)), best].astype(np.float32), best


def _colour_prep(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Thumbnails (u, 32, 32, 3) uint8 as float32, and their foreground: pixels that
    differ from the border's median colour."""
    f = t.astype(np.float32)
    return f, _rgb_sum(np.abs(f - _background(f)[:, None, None])) > FOREGROUND


GAIN = 1.5  # brightness is matched up to this factor either way


def _tolerant_error(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per pixel of (p, H, W, 3) windows a and b: the mean absolute RGB difference to the
    closest-coloured pixel of the other within one pixel (3x3), averaged over a's and b's
    side. Edges moved by a fraction of a pixel (a crop, a rescale) then cost little,
    while a change of colour costs as much as without the tolerance. Symmetric."""
    p, h, w, _ = a.shape
    padded = np.full((p, h + 2, w + 2, 3), np.inf, np.float32)
    padded[:, 1:-1, 1:-1] = b
    a_side = np.full((p, h, w), np.inf, np.float32)
    b_side = np.full((p, h + 2, w + 2), np.inf, np.float32)
    for oy in range(3):
        for ox in range(3):
            # a[y, x] against b[y + oy - 1, x + ox - 1]: the same differences serve b's side.
            d = _rgb_sum(np.abs(a - padded[:, oy : oy + h, ox : ox + w])) / 3
            np.minimum(a_side, d, out=a_side)
            np.minimum(b_side[:, oy : oy + h, ox : ox + w], d, out=b_side[:, oy : oy + h, ox : ox + w])
    return (a_side + b_side[:, 1:-1, 1:-1]) / 2


def _colour(f: np.ndarray, fg: np.ndarray, ia: np.ndarray, ib: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """Mean colour difference (0-255, see _tolerant_error) of thumbnails f[ia[k]] and
    f[ib[k]] over their overlap at displacement shift[k], after matching brightness, over
    the pixels that are foreground in either (all of them when neither has any): hashes
    and the correlation are blind to a uniform change of colour. Symmetric in a and b."""
    out = np.empty(len(ia), np.float32)
    # Grouped by displacement, each window is a plain slice: much cheaper than a gather.
    for k in np.unique(shift).tolist():
        sel = np.flatnonzero(shift == k)
        dy, dx = DISPLACEMENTS[k]
        aw = f[ia[sel], _overlap(dy), _overlap(dx)]
        bw = f[ib[sel], _overlap(-dy), _overlap(-dx)]
        mask = fg[ia[sel], _overlap(dy), _overlap(dx)] | fg[ib[sel], _overlap(-dy), _overlap(-dx)]
        p = len(sel)
        gain = (aw.reshape(p, -1).mean(axis=1) + 1e-3) / (bw.reshape(p, -1).mean(axis=1) + 1e-3)
        root = np.sqrt(np.clip(gain, 1 / GAIN, GAIN))[:, None, None, None]
        err = _tolerant_error(aw / root, bw * root).reshape(p, -1)
        mask = mask.reshape(p, -1)
        mask[~mask.any(axis=1)] = True
        out[sel] = (err * mask).sum(axis=1) / mask.sum(axis=1)
    return out


def verify(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Compare thumbnails a[k] and b[k], each (P, 32, 32, 3) uint8.

    Returns (correlation, colour difference): the best Pearson correlation in [-1, 1] of
    the two over their overlap, displaced by up to SHIFT pixels each way, and at that
    displacement the mean absolute colour difference (0-255, after matching brightness)
    over the pixels that are foreground in either. Symmetric in a and b.
    """
    if not len(a):
        return np.empty(0, np.float32), np.empty(0, np.float32)
    k = np.arange(len(a))
    score, shift = _correlate(_prepare(a), k, _prepare(b), k)
    f, fg = _colour_prep(np.concatenate([a, b]))
    return score, _colour(f, fg, k, k + len(a), shift)


RECHECK = 0.95  # below this whole-thumbnail correlation, the centre crops are compared too


def _colour_of(
    thumbs: np.ndarray, x: np.ndarray, y: np.ndarray, which: np.ndarray, shift: np.ndarray
) -> np.ndarray:
    """Colour difference of pairs x[k] ~ y[k] at comparison which[k] (0 own~own, 1 own~crop,
    2 crop~own) and displacement shift[k]."""
    # Thumbnails as rows of (n * 2): image i's own is 2i, its centre crop 2i + 1.
    ka, kb = 2 * x + (which == 2), 2 * y + (which == 1)
    keys, inv = np.unique(np.concatenate([ka, kb]), return_inverse=True)
    f, fg = _colour_prep(thumbs.reshape(-1, *thumbs.shape[2:])[keys])
    return _colour(f, fg, inv[: len(x)], inv[len(x) :], shift)


def verify_pairs(
    thumbs: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    workers: int = 1,
    min_score: float = -1.0,
    max_colour: float = 255.0,
    block: int = 4096,
) -> tuple[np.ndarray, np.ndarray]:
    """Verify images a[k] ~ b[k] (thumbs is (n, 2, 32, 32, 3)); returns (correlation,
    colour difference) of the comparison that counts.

    The own thumbnails are compared first. Where that correlation is below RECHECK, or
    its colour difference above `max_colour` (a crop scales the content, and the edges
    then differ in colour even where the smoothed correlation stays high), each image
    is also compared with the other's centre crop. The comparison that counts is the
    best-correlated one that passes both limits, else the best-correlated one. The
    colour is only measured for comparisons scoring at least `min_score` (NaN for the
    others: they fail anyway). Works in blocks (on `workers` processes when there are
    many), so memory stays small for any number of pairs.
    """
    if workers > 1 and len(a) > 4 * block and "fork" in multiprocessing.get_all_start_methods():
        _SHARED_WITH_WORKERS["thumbs"] = thumbs
        try:
            size = max(block, -(-len(a) // (2 * workers)))
            cuts = range(0, len(a), size)
            jobs = [(a[s : s + size], b[s : s + size], min_score, max_colour) for s in cuts]
            with multiprocessing.get_context("fork").Pool(workers) as pool:
                parts = pool.starmap(_verify_part, jobs)
        finally:
            _SHARED_WITH_WORKERS.clear()
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    score = np.empty(len(a), np.float32)
    colour = np.full(len(a), np.nan, np.float32)
    for s in range(0, len(a), block):
        x, y = a[s : s + block], b[s : s + block]
        # Each image once per block, however many of its pairs the block holds.
        ids, inv = np.unique(np.concatenate([x, y]), return_inverse=True)
        ix, iy = inv[: len(x)], inv[len(x) :]
        own = _prepare(thumbs[ids, 0])
        best, shift = _correlate(own, ix, own, iy)
        col = np.full(len(x), np.nan, np.float32)
        sure = np.flatnonzero(best >= min_score)
        col[sure] = _colour_of(thumbs, x[sure], y[sure], np.zeros(len(sure), np.int8), shift[sure])
        again = np.flatnonzero((best < RECHECK) | (col > max_colour))
        if len(again):
            # Centre crops only of the images in these pairs.
            need, cinv = np.unique(np.concatenate([x[again], y[again]]), return_inverse=True)
            crop = _prepare(thumbs[need, 1])
            cx, cy = cinv[: len(again)], cinv[len(again) :]
            ok = (best[again] >= min_score) & (col[again] <= max_colour)
            for w, (pi, i, pj, j) in enumerate(
                ((own, ix[again], crop, cy), (crop, cx, own, iy[again])), start=1
            ):
                sc, sh = _correlate(pi, i, pj, j)
                c = np.full(len(again), np.nan, np.float32)
                # Colour only where it can change the choice: below min_score it fails, and
                # a comparison that correlates no better cannot displace one that passes.
                passed = np.flatnonzero((sc >= min_score) & (~ok | (sc > best[again])))
                c[passed] = _colour_of(
                    thumbs, x[again[passed]], y[again[passed]], np.full(len(passed), w), sh[passed]
                )
                good = (sc >= min_score) & (c <= max_colour)
                # Better: it passes where the best so far does not, or both (or neither) pass
                # and it correlates higher.
                better = (good & ~ok) | ((good == ok) & (sc > best[again]))
                k = again[better]
                best[k], shift[k], col[k] = sc[better], sh[better], c[better]
                ok |= good
        score[s : s + block] = best
        colour[s : s + block] = col
    return score, colour


def _verify_part(
    a: np.ndarray, b: np.ndarray, min_score: float, max_colour: float
) -> tuple[np.ndarray, np.ndarray]:
    return verify_pairs(_SHARED_WITH_WORKERS["thumbs"], a, b, min_score=min_score, max_colour=max_colour)


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
    strict_beyond: int | None = None,
) -> Grouping:
    """Visit images best first (`rank` 0 is best); each joins the kept image it verifies
    best against (highest correlation), or is kept itself. Only kept images are ever
    joined, so every member is verified against its group's kept image: no chaining.
    Pairs more than `strict_beyond` bits apart (the second candidate source's) must score
    halfway from min_score to 1 and differ in colour by at most STRICT_COLOUR x the limit."""
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
        # Verified in a few large vectorised slices; before each, the pairs whose better
        # image has already joined another (so is not kept, for good) are left out.
        sc = np.full(len(worse), np.nan, np.float32)
        co = np.full(len(worse), np.nan, np.float32)
        ok = np.zeros(len(worse), bool)
        done, step = 0, max(16384, -(-len(worse) // 8))
        cut = np.flatnonzero(np.diff(worse)) + 1
        for start, stop in zip(np.r_[0, cut], np.r_[cut, len(worse)], strict=True):
            if stop > done:
                k = np.searchsorted(cut, done + step)
                end = int(cut[k]) if k < len(cut) else len(worse)
                need = np.flatnonzero(leader[better[done:end]] == better[done:end]) + done
                sc[need], co[need] = verifier(worse[need], better[need])
                ok[need] = (sc[need] >= min_score) & (co[need] <= max_colour_diff)
                if strict_beyond is not None:
                    far = need[d[need] > strict_beyond]
                    ok[far] &= (sc[far] >= (1 + min_score) / 2) & (co[far] <= STRICT_COLOUR * max_colour_diff)
                done = end
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
