"""The dedup stage's pictures for people: report.html (every group, the closest rejected
pairs, the unreadable files) and groups.png (the largest groups as one contact sheet).
Reads the stage's rows; decides nothing."""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path

from PIL import Image

from pipeline.images import ImageError, contact_sheet, load_rgb, save_image_atomic
from pipeline.params import DedupParams

SHEET_GROUPS = 60  # groups.png shows the largest ones; report.html shows them all
Rejected = tuple[str, str, int, float, float]  # kept id, other id, distance, score, colour


def _label(m: dict) -> str:
    return f"{m['id']} keep" if m["kept"] else f"{m['id']} d{m['distance']} {m['score']}"


def groups_sheet(raw: Path, by_id: dict, multi: list[list[dict]], path: Path) -> None:
    """groups.png: one row per group (kept image first), the SHEET_GROUPS largest."""
    multi = multi[:SHEET_GROUPS]
    width = max((len(g) for g in multi), default=1)
    items = []
    for g in multi:
        items += [(load_rgb(raw / by_id[m["id"]]["file"]), _label(m)) for m in g]
        items += [(Image.new("RGB", (1, 1), (32, 32, 32)), "")] * (width - len(g))
    save_image_atomic(contact_sheet(items, thumb=96, cols=width), path)


def _thumb_uri(path: Path) -> str:
    try:
        img = load_rgb(path)
    except ImageError:
        return ""
    img.thumbnail((112, 112), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def _kib(path: Path) -> str:
    try:
        return f"{path.stat().st_size / 1024:.0f}"
    except OSError:
        return "?"


def _card(raw: Path, row: dict, caption: str, kept: bool = False) -> str:
    e = html.escape
    cls = "card kept" if kept else "card"
    size = f"{row['width']}×{row['height']}, {_kib(raw / row['file'])} KiB"
    return (
        f'<figure class="{cls}"><img src="{_thumb_uri(raw / row["file"])}" alt="{e(row["id"])}">'
        f"<figcaption><b>{e(row['id'])}</b>{' KEPT' if kept else ''}<br>{e(caption)}<br>{e(size)}"
        f"<br><small>{e(row.get('origin', ''))}</small></figcaption></figure>"
    )


def report_html(
    raw: Path,
    by_id: dict,
    multi: list[list[dict]],
    rejected: list[Rejected],
    unreadable: list[dict],
    p: DedupParams,
) -> str:
    """One self-contained page: every group (largest first), then the closest rejected pairs."""
    e = html.escape
    parts = [
        "<!doctype html><meta charset='utf-8'><title>dedup report</title><style>"
        "body{font:14px sans-serif;margin:20px;background:#fafafa}"
        ".row{display:flex;flex-wrap:wrap;gap:8px;margin:6px 0 18px}"
        ".card{margin:0;padding:6px;background:#fff;border:2px solid #ccc;width:130px}"
        ".kept{border-color:#2a2}.card img{display:block;margin:auto;max-width:112px;max-height:112px}"
        "figcaption{font-size:11px;word-break:break-all}</style>",
        f"<h1>Duplicate groups ({len(multi)})</h1><p>{e(p.hash)} size {p.hash_size}, candidates within "
        f"{p.threshold} bits; verified when correlation ≥ {p.min_score} and colour difference ≤ "
        f"{p.max_colour_diff} (stricter where d is above {p.threshold}: pairs found by the average "
        "hash). d = hash distance, r = correlation, c = colour difference, each "
        "against the kept image (green).</p>",
    ]
    for g in multi:
        parts.append(f"<h3>{e(g[0]['group'])}: {len(g)} images</h3><div class='row'>")
        for m in g:
            caption = (
                "" if m["kept"] else f"{m['match']} d={m['distance']} r={m['score']} c={m['colour_diff']}"
            )
            parts.append(_card(raw, by_id[m["id"]], caption, m["kept"]))
        parts.append("</div>")
    parts.append(
        f"<h2>Closest rejected pairs ({len(rejected)})</h2><p>Within the hash threshold but not "
        "verified: if these are copies, loosen min_score or max_colour_diff (c = –: the "
        "correlation failed, so the colour was not measured).</p>"
    )
    for a, b, d, s, c in rejected:
        parts.append("<div class='row'>")
        parts.append(_card(raw, by_id[a], "kept", True))
        # c is only measured for pairs whose correlation passes (NaN otherwise).
        colour = "–" if math.isnan(c) else f"{c:.1f}"
        parts.append(_card(raw, by_id[b], f"d={d} r={s:.3f} c={colour}"))
        parts.append("</div>")
    if unreadable:
        parts.append(f"<h2>Unreadable files ({len(unreadable)})</h2><ul>")
        parts += [f"<li>{e(u['file'])}: {e(u['reason'])}</li>" for u in unreadable]
        parts.append("</ul>")
    return "\n".join(parts) + "\n"
