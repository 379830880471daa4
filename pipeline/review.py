"""`python -m pipeline review`: a local page for accepting or rejecting candidates.

The page (pipeline/review_page/) shows every candidate as a lazy-loaded
thumbnail with filters, counters, hotkeys and a detail view of the image and
its duplicate group. Each decision is written to the manifest at once.

Saving never overwrites silently. Before every write the server reads the
manifest again. Changes made outside the page since it was last read (an editor,
`git pull`, the CLI) are merged row by row. If such a change touches an image
the page is deciding, the server refuses with a message naming the image, and
sends back the file's current decisions.

Safety: the server binds 127.0.0.1 only, and answers only requests whose Host
and Origin are its own (against DNS rebinding). POSTs must be JSON, which a
foreign page cannot send without CORS. Images are looked up by id in
data/raw/index.csv, never by path. The server writes only the manifest and its
thumbnail cache (.cache/review/).
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import socket
import stat
import sys
import threading
import webbrowser
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from PIL import Image
from pydantic import BaseModel, Field

from pipeline import curate, paths
from pipeline.contracts import DEDUP_CANDIDATES, DEDUP_GROUPS, RAW_INDEX
from pipeline.curate import Manifest, ManifestError, read_groups, read_manifest, write_manifest
from pipeline.errors import PipelineError
from pipeline.images import ImageError, load_rgb, read_csv, save_image_atomic
from pipeline.progress import progress

log = logging.getLogger(__name__)

PAGE = Path(__file__).parent / "review_page"
STATIC = {"app.js": "text/javascript", "style.css": "text/css"}
CACHE = paths.REVIEW_CACHE
THUMB = 200  # px, longest side
WEB_FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "GIF": "image/gif", "WEBP": "image/webp"}
UNDO_DEPTH = 500


class Conflict(Exception):
    """The manifest on disk disagrees with what the page is about to do."""


class Unsaved(Exception):
    """The manifest could not be written (read-only or full folder, lock held too long)."""


class Unreadable(Exception):
    """An image's file cannot be shown; the message says why."""


class Catalog:
    """What the page shows: candidates, their files and their duplicate groups (read once)."""

    def __init__(self, root: Path) -> None:
        cand_path = root / DEDUP_CANDIDATES.path
        index_path = root / RAW_INDEX.path
        for p in (cand_path, index_path):
            if not p.exists():
                raise PipelineError(f"{p.relative_to(root)}: not found; run `dvc repro dedup` first")
        self.raw = (root / paths.RAW).resolve()
        self.cache = root / CACHE
        self.index = {r["id"]: r for r in read_csv(index_path)}
        self.candidates = [r for r in read_csv(cand_path) if r["id"] in self.index]
        self.ids = [r["id"] for r in self.candidates]
        groups_path = root / DEDUP_GROUPS.path
        self.groups = read_groups(groups_path)
        self.members: dict[str, list[dict[str, str]]] = {}
        if groups_path.exists():
            for r in read_csv(groups_path):
                if r["group"] != r["id"]:
                    self.members.setdefault(r["group"], []).append(r)

    def locate(self, image_id: str) -> tuple[Path | None, str]:
        """(the raw file of a known id, "") or (None, why it cannot be read).

        The index must name a file directly inside data/raw. That entry may be a
        link: with DVC's cache.type symlink (or hardlink, reflink, copy) every
        file of data/raw is one, pointing into DVC's cache, so links are
        followed from there, wherever the cache lives.
        """
        row = self.index.get(image_id)
        if row is None:
            return None, "unknown image id"
        name = row.get("file") or ""
        if not name or Path(name).name != name or name in (".", ".."):
            return None, f"index.csv names {name!r}, not a file in {paths.RAW}"
        path = self.raw / name
        try:
            st = path.stat()
        except FileNotFoundError:
            return None, "file not found" + (" (a broken link)" if path.is_symlink() else "")
        except OSError as exc:  # ELOOP for a symlink loop, EACCES, ...
            return None, f"cannot read: {exc.strerror or exc}"
        if not stat.S_ISREG(st.st_mode):
            return None, "not a regular file"
        return path, ""

    def file(self, image_id: str) -> Path | None:
        """The raw file of a known id, only if it is a readable file named in data/raw."""
        return self.locate(image_id)[0]

    def describe(self, image_id: str) -> dict[str, Any]:
        """What the page shows of one image; raises Unreadable when its file is not usable."""
        row = self.index[image_id]
        path, why = self.locate(image_id)
        if path is None:
            raise Unreadable(why)
        return {
            "id": image_id,
            "width": int(row.get("width") or 0),
            "height": int(row.get("height") or 0),
            "format": row.get("format", ""),
            "bytes": path.stat().st_size,
            "source": row.get("source", ""),
            "origin": row.get("origin", ""),
            "page_url": row.get("page_url", ""),
            # What the search engine said (only openverse knows licences); "" when absent.
            **{k: row.get(k) or "" for k in ("title", "license", "license_version", "license_url")},
            **{k: row.get(k) or "" for k in ("creator", "attribution")},
        }

    def items(self) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
        """(every candidate the page can show, [{id, reason}] of those it cannot).

        One unreadable file (a symlink loop, a vanished file) skips that image,
        never the list.
        """
        out, skipped = [], []
        for image_id in self.ids:
            try:
                item = self.describe(image_id)
            except (Unreadable, OSError, ValueError) as exc:
                skipped.append({"id": image_id, "reason": str(exc)})
                continue
            item["members"] = []
            for m in sorted(self.members.get(image_id, []), key=lambda m: m["id"]):
                if m["id"] not in self.index:
                    continue
                try:
                    member = self.describe(m["id"])
                except (Unreadable, OSError, ValueError) as exc:
                    skipped.append({"id": m["id"], "reason": str(exc)})
                    continue
                item["members"].append(
                    member | {"distance": m.get("distance", ""), "match": m.get("match", "")}
                )
            out.append(item)
        for s in skipped:
            log.warning("review: %s not shown: %s", s["id"], s["reason"])
        return out, skipped

    def _cached(self, image_id: str, kind: str, path: Path) -> Path:
        row = self.index[image_id]
        stamp = row.get("sha256") or f"{path.stat().st_mtime_ns}-{path.stat().st_size}"
        key = hashlib.sha256(f"{image_id}\0{stamp}\0{kind}\0{THUMB}".encode()).hexdigest()[:32]
        return self.cache / f"{key}.{'jpg' if kind == 'thumb' else 'png'}"

    def thumbnail(self, image_id: str) -> Path:
        """The cached thumbnail, made on first use; raises ImageError if unreadable."""
        path, why = self.locate(image_id)
        if path is None:
            raise ImageError(image_id, why)
        out = self._cached(image_id, "thumb", path)
        if not out.exists():
            img = load_rgb(path)
            img.thumbnail((THUMB, THUMB), Image.Resampling.LANCZOS)
            save_image_atomic(img, out, quality=90)
        return out

    def preview(self, image_id: str) -> tuple[Path, str]:
        """The full image: the file itself if browsers show its format, else a cached PNG."""
        path, why = self.locate(image_id)
        if path is None:
            raise ImageError(image_id, why)
        media = WEB_FORMATS.get(self.index[image_id].get("format", "").upper())
        if media:
            return path, media
        out = self._cached(image_id, "full", path)
        if not out.exists():
            save_image_atomic(load_rgb(path), out)
        return out, "image/png"

    def warm(self) -> None:
        """Make every thumbnail in the background, so scrolling never waits."""
        todo = self.ids + [m["id"] for ms in self.members.values() for m in ms if m["id"] in self.index]
        for image_id in progress(todo, desc="review (thumbnails)", unit="img", leave=False):
            try:
                self.thumbnail(image_id)
            except (ImageError, OSError) as exc:
                log.warning("no thumbnail for %s: %s", image_id, exc)


@dataclass
class Step:
    """One page action, for undo: per id, the row's decision before (None: no row) and after."""

    before: dict[str, str | None]
    after: dict[str, str]


class Decisions:
    """The manifest as this page last saw it, with merge-or-refuse writes and undo."""

    def __init__(self, path: Path, catalog: Catalog) -> None:
        self.path = path
        self.catalog = catalog
        self.lock = threading.Lock()
        self.base = read_manifest(path)  # a broken file stops the server with the line at fault
        self.steps: list[Step] = []

    def _read(self) -> Manifest:
        try:
            return read_manifest(self.path)
        except ManifestError as exc:
            raise Conflict(f"{exc}. Fix the file; the page saves nothing until it reads cleanly.") from None

    def refresh(self) -> list[str]:
        """Adopt the file as it is now; returns the ids whose rows changed outside the page."""
        with self.lock:
            disk = self._read()
            changed = _changed(self.base, disk)
            self.base = disk
            return changed

    def decide(self, ids: list[str], decision: str, note: str | None = None) -> list[str]:
        """Set `decision` on the kept image of each id's group; returns ids changed outside."""
        targets = list(dict.fromkeys(curate.kept_id(self.catalog.groups, i) for i in ids))
        with self.lock:
            expect = {i: self.base.decision(i) for i in targets}
            before, merged = self._write(dict.fromkeys(targets, decision), expect, note)
            self.steps = [*self.steps, Step(before, dict.fromkeys(targets, decision))][-UNDO_DEPTH:]
            return merged

    def undo(self) -> tuple[list[str], list[str]]:
        """Revert the last page action; returns (ids reverted, ids changed outside)."""
        with self.lock:
            if not self.steps:
                raise Conflict("nothing to undo")
            step = self.steps[-1]
            restore = {i: b or "" for i, b in step.before.items()}
            _, merged = self._write(
                restore, step.after, None, drop=[i for i, b in step.before.items() if b is None]
            )
            self.steps.pop()
            return list(step.before), merged

    def _write(
        self, new: dict[str, str], expect: dict[str, str], note: str | None, drop: list[str] | None = None
    ) -> tuple[dict[str, str | None], list[str]]:
        """Apply `new` onto the file as it is now, unless an outside change to one of its ids
        differs from both `expect` (what the page showed) and `new`.

        Returns each id's row decision before (None: no row), and the ids changed outside.
        """
        # The lock file keeps `curate accept|reject` (and other pages) out between our read and write.
        try:
            with curate.locked(self.path):
                return self._merge_and_write(new, expect, note, drop)
        except ManifestError as exc:  # not a parse error (_read turns those into Conflict)
            raise Unsaved(f"{exc}. The decision was not saved.") from None

    def _merge_and_write(
        self, new: dict[str, str], expect: dict[str, str], note: str | None, drop: list[str] | None
    ) -> tuple[dict[str, str | None], list[str]]:
        disk = self._read()
        outside = _changed(self.base, disk)
        clash = [i for i in new if disk.decision(i) not in (expect[i], new[i])]
        if clash:
            self.base = disk
            shown = ", ".join(f"{i} is now {disk.decision(i) or 'pending'}" for i in clash[:3])
            raise Conflict(
                f"{self.path.name} was changed outside this page: {shown} there. "
                "The page now shows the file; do it again to override."
            )
        before = {i: disk.rows[i]["decision"] if i in disk.rows else None for i in new}
        for image_id, decision in new.items():
            disk.set(image_id, decision, note)
        for image_id in drop or []:
            row = disk.rows.get(image_id)
            if row and not any(v for k, v in row.items() if k != "id"):
                del disk.rows[image_id]  # undo of a first decision leaves no empty row behind
        write_manifest(self.path, disk)
        self.base = disk
        return before, outside

    def state(self) -> dict[str, Any]:
        s = curate.summarize(self.base, self.catalog.ids, self.catalog.groups)
        decisions = dict.fromkeys(s.accepted, "accept") | dict.fromkeys(s.rejected, "reject")
        return {
            "decisions": {i: decisions.get(i, "") for i in self.catalog.ids},
            "notes": {i: self.base.rows[i].get("note", "") for i in self.catalog.ids if i in self.base.rows},
            "inherited": s.inherited,
            "counts": {
                "total": len(self.catalog.ids),
                "accept": len(s.accepted),
                "reject": len(s.rejected),
                "pending": len(s.pending),
                "orphaned": len(s.orphaned),
            },
            "undo": len(self.steps),
        }


def _changed(a: Manifest, b: Manifest) -> list[str]:
    return sorted(i for i in set(a.rows) | set(b.rows) if a.rows.get(i) != b.rows.get(i))


class DecideBody(BaseModel):
    ids: list[str] = Field(min_length=1)
    decision: Literal["accept", "reject", ""]
    note: str | None = None


def create_app(root: Path, port: int, warm: bool = False) -> FastAPI:
    """The review app for the project at `root`, answering only as 127.0.0.1:`port`."""
    root = root.resolve()
    catalog = Catalog(root)
    decisions = Decisions(root / paths.MANIFEST, catalog)
    hosts = {f"127.0.0.1:{port}", f"localhost:{port}"}
    origins = {f"http://{h}" for h in hosts}
    app = FastAPI(title="mario-gan review", docs_url=None, redoc_url=None, openapi_url=None)

    @app.middleware("http")
    async def own_origin_only(request: Request, call_next):
        host = request.headers.get("host", "")
        origin = request.headers.get("origin")
        if host not in hosts:
            return PlainTextResponse(
                f"forbidden: Host {host!r} is not this server; open http://127.0.0.1:{port}/", 403
            )
        if origin is not None and origin not in origins:
            return PlainTextResponse(f"forbidden: Origin {origin!r} is not this server", 403)
        if request.method not in ("GET", "HEAD") and not request.headers.get("content-type", "").startswith(
            "application/json"
        ):
            return PlainTextResponse("unsupported: send JSON", 415)
        response = await call_next(request)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Content-Security-Policy"] = "default-src 'self'; frame-ancestors 'none'"
        response.headers["Referrer-Policy"] = "no-referrer"
        return response

    def reply(extra: dict[str, Any] | None = None, status: int = 200) -> JSONResponse:
        body = decisions.state() | (extra or {})
        return JSONResponse(body, status, headers={"Cache-Control": "no-store"})

    def merged_note(ids: list[str]) -> dict[str, Any]:
        return {"message": f"merged {len(ids)} outside change(s) to {paths.MANIFEST}"} if ids else {}

    def conflict(exc: Conflict) -> JSONResponse:
        return reply({"error": str(exc)}, 409)

    @app.get("/")
    def index() -> FileResponse:
        return FileResponse(
            PAGE / "index.html", media_type="text/html", headers={"Cache-Control": "no-store"}
        )

    @app.get("/favicon.ico")
    def favicon() -> Response:
        return Response(status_code=204)

    @app.get("/static/{name}")
    def static(name: str) -> Response:
        if name not in STATIC:
            return PlainTextResponse("not found", 404)
        return FileResponse(PAGE / name, media_type=STATIC[name], headers={"Cache-Control": "no-store"})

    @app.get("/api/items")
    def items() -> JSONResponse:
        shown, skipped = catalog.items()
        return JSONResponse({"items": shown, "skipped": skipped, "manifest": str(paths.MANIFEST)})

    @app.get("/api/state")
    def state() -> JSONResponse:
        try:
            changed = decisions.refresh()
        except Conflict as exc:
            return reply({"error": str(exc)})
        return reply(merged_note(changed))

    known = set(catalog.ids) | set(catalog.groups)

    @app.post("/api/decide")
    def decide(body: DecideBody) -> JSONResponse:
        if len(body.ids) > len(known):
            # More ids than images can only repeat or invent ids; refuse before any work.
            return JSONResponse(
                {"error": f"{len(body.ids):,} ids in one request, but there are only {len(known):,} images"},
                413,
            )
        unknown = [i for i in body.ids if i not in known]
        if unknown:
            return JSONResponse({"error": f"unknown image id {unknown[0]}"}, 404)
        note = body.note
        if note is not None:
            try:
                note = curate.check_note(note)
            except ManifestError as exc:
                return JSONResponse({"error": str(exc)}, 422)
        try:
            changed = decisions.decide(body.ids, body.decision, note)
        except Conflict as exc:
            return conflict(exc)
        except Unsaved as exc:
            return reply({"error": str(exc)}, 503)
        return reply(merged_note(changed))

    @app.post("/api/undo")
    def undo() -> JSONResponse:
        try:
            reverted, changed = decisions.undo()
        except Conflict as exc:
            return conflict(exc)
        except Unsaved as exc:
            return reply({"error": str(exc)}, 503)
        return reply({"reverted": reverted} | merged_note(changed))

    @app.get("/img/{image_id}/{kind}")
    def image(image_id: str, kind: Literal["thumb", "full"]) -> Response:
        if image_id not in catalog.index:
            return PlainTextResponse("unknown image id", 404)
        try:
            if kind == "thumb":
                return FileResponse(catalog.thumbnail(image_id), media_type="image/jpeg")
            path, media = catalog.preview(image_id)
            return FileResponse(path, media_type=media)
        except ImageError as exc:
            return PlainTextResponse(f"unreadable: {exc.reason}", 422)

    if warm:
        threading.Thread(target=catalog.warm, name="review-thumbnails", daemon=True).start()
    return app


def bind(port: int) -> socket.socket:
    """A listening socket on 127.0.0.1:`port` (0: any free port)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PipelineError(
                f"port {port} is in use; pass --port N (or --port 0 for any free port)"
            ) from None
        raise
    sock.listen(64)
    return sock


def serve(port: int = 8765, open_browser: bool = True) -> None:
    """Serve the review page for the project in the current directory until Ctrl+C."""
    import uvicorn

    sock = bind(port)
    port = sock.getsockname()[1]
    try:
        app = create_app(Path.cwd(), port, warm=True)
    except BaseException:
        sock.close()
        raise
    url = f"http://127.0.0.1:{port}/"
    print(f"review: {url}  (decisions are saved to {paths.MANIFEST} at once; Ctrl+C to stop)", flush=True)
    # Without a desktop, webbrowser falls back to text browsers that would take over this terminal.
    desktop = (
        sys.platform in ("darwin", "win32") or os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    )
    if open_browser and desktop:
        threading.Timer(0.5, webbrowser.open, [url]).start()
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])
