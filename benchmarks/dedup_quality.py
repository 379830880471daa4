"""Dedup quality and speed: this stage vs plain pHash + union-find vs imagededup's PHash.

Builds (once, then reuses) the near-duplicate set of benchmarks/dedup_set.py and
prints, for each method and a few thresholds, pair precision and recall against
the ground truth, and images per second (load + hash + search + group, on
`--workers` processes); then precision and recall per family of pictures
(dedup_set.FAMILIES) for this stage and imagededup at the default threshold,
and with --sweep a grid of verification limits (overall, and the worst family).
Ends with `ratio: X`, this stage's throughput over
imagededup's at the default threshold: the best of `--repeat` timings of each, taken
in turn, so a burst of other work on a shared machine does not decide it. imagededup is a benchmark-only extra:
pip install -e '.[bench]'.

    python benchmarks/dedup_quality.py [--originals 2000] [--workers 2] [--sweep]
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib.util
import logging
import sys
import time
import types
from collections import Counter
from math import comb
from pathlib import Path

import imagehash
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dedup_set

from pipeline import dedup
from pipeline.dedup_index import hamming, pack
from pipeline.images import load_rgb
from pipeline.params import DedupParams, from_defaults


def pair_scores(pred: list[int], truth: list[str]) -> tuple[float, float]:
    """Pair precision and recall of a partition `pred` (group label per image)."""
    grouped = sum(comb(c, 2) for c in Counter(pred).values())
    true = sum(comb(c, 2) for c in Counter(truth).values())
    tp = sum(comb(c, 2) for c in Counter(zip(pred, truth, strict=True)).values())
    return (tp / grouped if grouped else 1.0), tp / true


def pairs_scores(pairs: set[tuple[int, int]], truth: list[str]) -> tuple[float, float]:
    true = sum(comb(c, 2) for c in Counter(truth).values())
    tp = sum(truth[a] == truth[b] for a, b in pairs)
    return (tp / len(pairs) if pairs else 1.0), tp / true


def family_scores(pred: list[int], truth: list[str], kinds: list[str]) -> dict[str, tuple[float, float, int]]:
    """Pair precision, recall and true pairs per family. A grouped pair counts against
    the precision of the family of each of its two images (once if they share it)."""
    sizes = Counter(pred)
    per_group: dict[int, Counter] = {}
    for g, k in zip(pred, kinds, strict=True):
        per_group.setdefault(g, Counter())[k] += 1
    same = Counter(zip(pred, truth, strict=True))
    true = Counter(truth)
    kind_of = dict(zip(truth, kinds, strict=True))
    out = {}
    for f in dict.fromkeys(kinds):
        # Pairs in a group with at least one image of family f.
        grouped = sum(comb(sizes[g], 2) - comb(sizes[g] - c[f], 2) for g, c in per_group.items() if c[f])
        tp = sum(comb(c, 2) for (_, o), c in same.items() if kind_of[o] == f)
        t = sum(comb(c, 2) for o, c in true.items() if kind_of[o] == f)
        out[f] = (tp / grouped if grouped else 1.0, tp / t if t else 1.0, t)
    return out


def pairs_family_scores(
    pairs: set[tuple[int, int]], truth: list[str], kinds: list[str]
) -> dict[str, tuple[float, float, int]]:
    """family_scores for a method that returns pairs, not groups (imagededup)."""
    true = Counter(truth)
    kind_of = dict(zip(truth, kinds, strict=True))
    out = {}
    for f in dict.fromkeys(kinds):
        mine = [(a, b) for a, b in pairs if f in (kinds[a], kinds[b])]
        tp = sum(truth[a] == truth[b] for a, b in mine)
        t = sum(comb(c, 2) for o, c in true.items() if kind_of[o] == f)
        out[f] = (tp / len(mine) if mine else 1.0, tp / t if t else 1.0, t)
    return out


def proposed(info: dict, shas: list[str], truth: list[str], kinds: list[str], p: DedupParams) -> None:
    """Per family, the true pairs the candidate search proposes at all (a ceiling for the
    recall: verification only ever removes pairs), without the aspect gate, with it, and
    with it and the second source."""
    from pipeline.dedup_index import candidate_pairs

    rep_of = {s: k for k, s in enumerate(info["reps"])}
    rows = [rep_of[s] for s in shas]
    by_original: dict[str, list[int]] = {}
    for i, o in enumerate(truth):
        by_original.setdefault(o, []).append(i)
    searches = {
        "pHash, any aspect": candidate_pairs(info["hashes"], p.threshold),
        "pHash": candidate_pairs(info["hashes"], p.threshold, aspect=info["aspect"]),
        "pHash + aHash": candidate_pairs(
            info["hashes"], p.threshold, aspect=info["aspect"], second=info["second"]
        ),
    }
    print(
        f"\ntrue pairs never proposed by the search at threshold {p.threshold} (of the family's true pairs)"
    )
    print(f"{'family':11} {'pairs':>6} " + " ".join(f"{name:>17}" for name in searches))
    found = {name: set(zip(a.tolist(), b.tolist(), strict=True)) for name, (a, b, _) in searches.items()}
    for f in dict.fromkeys(kinds):
        pairs = [
            (min(rows[i], rows[j]), max(rows[i], rows[j]))
            for o, members in by_original.items()
            if kinds[members[0]] == f
            for x, i in enumerate(members)
            for j in members[x + 1 :]
        ]
        cells = [sum(a != b and (a, b) not in got for a, b in pairs) for got in found.values()]
        print(f"{f:11} {len(pairs):6d} " + " ".join(f"{c:>17d}" for c in cells))


def lookalikes(
    info: dict, shas: list[str], pred: list[int], truth: list[str], kinds: list[str], p: DedupParams
) -> None:
    """Per family, the distinct pictures grouped together, and how many of those pairs of
    originals (each as first written, before any copy was made) pass verification by
    themselves: no thumbnail measure can part those."""
    from pipeline.dedup_index import MAX_ASPECT_CHANGE, verify_pairs

    rep_of = {s: k for k, s in enumerate(info["reps"])}
    first = {}
    for i, o in enumerate(truth):
        first.setdefault(o, rep_of[shas[i]])  # the original is each series' first file
    print("\nfalsely grouped: pairs of distinct originals, and those whose originals verify as they are")
    for f in dict.fromkeys(kinds):
        wrong = {
            tuple(sorted((truth[i], truth[j])))
            for g in _members(pred).values()
            for i in g
            for j in g
            if truth[i] != truth[j] and kinds[i] == f
        }
        if not wrong:
            continue
        a = np.array([first[x] for x, _ in wrong])
        b = np.array([first[y] for _, y in wrong])
        sc, co = verify_pairs(info["thumbs"], a, b, min_score=p.min_score, max_colour=p.max_colour_diff)
        aspect = np.abs(np.log(info["aspect"][a] / info["aspect"][b])) <= np.log(MAX_ASPECT_CHANGE) + 1e-9
        same = int(((sc >= p.min_score) & (co <= p.max_colour_diff) & aspect).sum())
        print(f"{f:11} {len(wrong):4d} pairs of originals, {same} verify as they are")


def _members(pred: list[int]) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for i, g in enumerate(pred):
        out.setdefault(g, []).append(i)
    return out


def print_families(columns: dict[str, dict[str, tuple[float, float, int]]], n_images: Counter) -> None:
    """One row per family: images, true pairs, then precision / recall of each method."""
    names = list(columns)
    print(f"\n{'family':11} {'images':>6} {'pairs':>6} " + " ".join(f"{n:>21}" for n in names))
    first = columns[names[0]]
    for f in first:
        cells = [f"{columns[n][f][0]:.3f} / {columns[n][f][1]:.3f}" for n in names]
        print(f"{f:11} {n_images[f]:6d} {first[f][2]:6d} " + " ".join(f"{c:>21}" for c in cells))


def ours(
    files: list[Path], p: DedupParams, thresholds: list[int] | None = None
) -> tuple[dict[int, tuple[float, float]], float, dict]:
    """The stage's own code path: sha256, parallel features, search, verify, group."""
    t0 = time.perf_counter()
    shas = [hashlib.sha256(f.read_bytes()).hexdigest() for f in files]
    first: dict[str, int] = {}
    for i, s in enumerate(shas):
        first.setdefault(s, i)
    feats = dedup.hash_files({s: str(files[i]) for s, i in first.items()}, p)
    t_hash = time.perf_counter() - t0
    reps = list(first)  # the benchmark's files all come "fetched" in order; keep largest first
    area = {s: _area(files[first[s]]) for s in reps}
    reps.sort(key=lambda s: (-area[s], first[s]))
    hashes = np.array([feats[s].hashes for s in reps])
    thumbs = np.array([feats[s].thumbs for s in reps])
    aspect = np.array([feats[s].aspect for s in reps])
    second = np.array([feats[s].second for s in reps])
    out, seconds = {}, {}
    for t in thresholds or THRESHOLDS:
        t1 = time.perf_counter()
        g, _ = dedup.group_features(hashes, thumbs, aspect, second, dataclasses.replace(p, threshold=t))
        seconds[t] = time.perf_counter() - t1
        label = {s: int(g.leader[k]) for k, s in enumerate(reps)}
        out[t] = [label[s] for s in shas]
    info = {"group_s": seconds, "feats": feats, "reps": reps, "hashes": hashes, "thumbs": thumbs}
    return out, t_hash, info | {"aspect": aspect, "second": second}


def _area(path: Path) -> int:
    with Image.open(path) as img:
        return img.width * img.height


def unverified(hashes: np.ndarray, reps: list[str], shas: list[str], t: int) -> list[int]:
    """Our search and no-chaining grouping with verification switched off."""
    from pipeline.dedup_index import candidate_pairs, group

    pairs = candidate_pairs(hashes, t)
    g = group(
        np.arange(len(reps)),
        pairs,
        lambda a, b: (np.ones(len(a)), np.zeros(len(a))),
        0.0,
        255.0,
    )
    label = {s: int(g.leader[k]) for k, s in enumerate(reps)}
    return [label[s] for s in shas]


def phash_union_find(files: list[Path]) -> tuple[np.ndarray, float]:
    t0 = time.perf_counter()
    bits = np.array([imagehash.phash(load_rgb(f)).hash.reshape(-1) for f in files])
    return pack(bits), time.perf_counter() - t0


def union_find_labels(packed: np.ndarray, t: int) -> list[int]:
    n = len(packed)
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i in range(n):
        close = np.flatnonzero(hamming(packed[i + 1 :], packed[i]) <= t) + i + 1
        for j in close.tolist():
            parent[find(j)] = find(i)
    return [find(i) for i in range(n)]


THRESHOLDS = [6, 8, 10, 12]


def imagededup_phash() -> type:
    """imagededup's PHash class, without running imagededup.methods/__init__.py: in 0.3.3
    that imports its CNN, which downloads MobileNet weights at import time."""
    spec = importlib.util.find_spec("imagededup")
    if spec is None or spec.origin is None:
        sys.exit("imagededup is not installed: pip install -e '.[bench]' (or pass --skip-imagededup)")
    methods = types.ModuleType("imagededup.methods")
    methods.__path__ = [str(Path(spec.origin).parent / "methods")]
    sys.modules.setdefault("imagededup.methods", methods)
    from imagededup.methods.hashing import PHash

    logging.getLogger("imagededup").setLevel(logging.ERROR)
    return PHash


def sweep(info: dict, shas: list[str], truth: list[str], kinds: list[str], p: DedupParams) -> None:
    """Precision / recall of the grouping for a grid of verification limits (README table):
    overall, and the lowest of any family (precision and recall each at their worst)."""
    scores, colours = [0.7, 0.75, 0.8, 0.85], [10, 14, 18]
    print(f"\nverification sweep at threshold {p.threshold} (precision / recall)")
    print(f"{'min_score':>9} " + " ".join(f"{'colour ' + str(c) + ' (worst family)':>31}" for c in colours))
    for s in scores:
        cells = []
        for c in colours:
            q = dataclasses.replace(p, min_score=s, max_colour_diff=c)
            g, _ = dedup.group_features(info["hashes"], info["thumbs"], info["aspect"], info["second"], q)
            label = {sha: int(g.leader[k]) for k, sha in enumerate(info["reps"])}
            pred = [label[sha] for sha in shas]
            pr, rc = pair_scores(pred, truth)
            fam = family_scores(pred, truth, kinds).values()
            worst_p, worst_r = min(f[0] for f in fam), min(f[1] for f in fam)
            cells.append(f"{pr:.3f} / {rc:.3f} ({worst_p:.3f} / {worst_r:.3f})")
        print(f"{s:9.2f} " + " ".join(f"{x:>31}" for x in cells), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--originals", type=int, default=2000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/mario-gan-dedup-bench"))
    ap.add_argument("--skip-imagededup", action="store_true")
    ap.add_argument("--sweep", action="store_true", help="also sweep min_score x max_colour_diff")
    ap.add_argument("--repeat", type=int, default=3, help="timings of each for the ratio (best counts)")
    args = ap.parse_args()

    PHash = None if args.skip_imagededup else imagededup_phash()
    t0 = time.perf_counter()
    rows = dedup_set.build(args.dir, args.originals)
    files = [args.dir / "images" / r["file"] for r in rows]
    truth = [r["original"] for r in rows]
    kinds = [r["kind"] for r in rows]
    n = len(files)
    print(f"set: {args.originals} originals, {n} images ({time.perf_counter() - t0:.0f} s to build or load)")
    p = from_defaults(DedupParams, workers=args.workers)
    print(f"\n{'method':34} {'thr':>4} {'precision':>9} {'recall':>7} {'img/s':>7}")

    def add(row: tuple[str, int, float, float, float]) -> None:
        name, t, pr, rc, speed = row
        print(f"{name:34} {t:4d} {pr:9.3f} {rc:7.3f} {speed:7.0f}", flush=True)

    # This stage, with and without draft decoding.
    labels, t_hash, info = ours(files, p)
    for t in THRESHOLDS:
        pr, rc = pair_scores(labels[t], truth)
        add(("this stage", t, pr, rc, n / (t_hash + info["group_s"][t])))
    ours_speed = n / (t_hash + info["group_s"][p.threshold])
    columns = {"this stage": family_scores(labels[p.threshold], truth, kinds)}
    overall = {"this stage": pair_scores(labels[p.threshold], truth)}
    # The other draft setting than the default: does draft decoding change anything?
    other = dataclasses.replace(p, draft=not p.draft)
    full_labels, t_hash_full, full_info = ours(files, other)
    pr, rc = pair_scores(full_labels[p.threshold], truth)
    name = "this stage, draft on" if other.draft else "this stage, draft off"
    add((name, p.threshold, pr, rc, n / (t_hash_full + full_info["group_s"][p.threshold])))
    changed = sum(
        not np.array_equal(info["feats"][s].hashes, full_info["feats"][s].hashes)
        or not np.array_equal(info["feats"][s].thumbs, full_info["feats"][s].thumbs)
        for s in info["reps"]
    )
    same_groups = labels[p.threshold] == full_labels[p.threshold]
    shas = [hashlib.sha256(f.read_bytes()).hexdigest() for f in files]
    for t in (8, 10):
        pr, rc = pair_scores(unverified(info["hashes"], info["reps"], shas, t), truth)
        add(("search+greedy, no verification", t, pr, rc, float("nan")))
    proposed(info, shas, truth, kinds, p)
    lookalikes(info, shas, labels[p.threshold], truth, kinds, p)
    if args.sweep:
        sweep(info, shas, truth, kinds, p)
        print()

    # Plain pHash with union-find (connected components: chaining).
    packed, t_plain = phash_union_find(files)
    for t in THRESHOLDS:
        t1 = time.perf_counter()
        lab = union_find_labels(packed, t)
        pr, rc = pair_scores(lab, truth)
        add(("pHash + union-find", t, pr, rc, n / (t_plain + time.perf_counter() - t1)))

    ratio = float("nan")
    if PHash is not None:
        ph = PHash(verbose=False)
        t1 = time.perf_counter()
        enc = ph.encode_images(image_dir=str(args.dir / "images"), num_enc_workers=args.workers)
        t_enc = time.perf_counter() - t1
        index = {f.name: i for i, f in enumerate(files)}
        best = {"ours": n / ours_speed, "imagededup": float("inf")}
        for t in THRESHOLDS:
            t1 = time.perf_counter()
            found = ph.find_duplicates(
                encoding_map=enc, max_distance_threshold=t, num_dist_workers=args.workers
            )
            speed = n / (t_enc + time.perf_counter() - t1)
            if t == p.threshold:
                best["imagededup"] = n / speed
            pairs = {tuple(sorted((index[a], index[b]))) for a, dups in found.items() for b in dups}
            pr, rc = pairs_scores(pairs, truth)
            add(("imagededup PHash", t, pr, rc, speed))
            if t == p.threshold:
                columns["imagededup PHash"] = pairs_family_scores(pairs, truth, kinds)
                overall["imagededup PHash"] = (pr, rc)

    print(f"\nper family at threshold {p.threshold} (precision / recall; pairs: true pairs in the family)")
    print_families(columns, Counter(kinds))
    cells = [f"{pr:.3f} / {rc:.3f}" for pr, rc in overall.values()]
    print(f"{'overall':11} {n:6d} {'':6} " + " ".join(f"{c:>21}" for c in cells))
    print(
        f"\ndraft decoding: {changed} of {len(info['reps'])} images get other hashes or thumbnails; "
        f"groups at threshold {p.threshold} identical: {same_groups}"
    )
    if PHash is not None:
        for _ in range(args.repeat - 1):  # in turn: each sees the machine as busy as the other
            _, t_h, inf = ours(files, p, [p.threshold])
            best["ours"] = min(best["ours"], t_h + inf["group_s"][p.threshold])
            t1 = time.perf_counter()
            enc = ph.encode_images(image_dir=str(args.dir / "images"), num_enc_workers=args.workers)
            ph.find_duplicates(
                encoding_map=enc, max_distance_threshold=p.threshold, num_dist_workers=args.workers
            )
            best["imagededup"] = min(best["imagededup"], time.perf_counter() - t1)
        ratio = best["imagededup"] / best["ours"]
        print(
            f"best of {args.repeat}, img/s: this stage {n / best['ours']:.0f}, "
            f"imagededup {n / best['imagededup']:.0f}"
        )
    print(f"ratio: {ratio:.2f}")


if __name__ == "__main__":
    main()
