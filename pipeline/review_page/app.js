// The review page: a grid of candidates, hotkeys, and a detail view.
// The server owns the truth: every action is a POST whose reply carries the
// decisions as saved in the manifest. Requests go one at a time, in order.
"use strict";

const $ = (sel) => document.querySelector(sel);
const el = (tag, cls, text) => {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
};

const S = {
  items: [], // from /api/items, in candidate order
  byId: new Map(),
  cards: new Map(), // id -> card element
  decisions: {}, // id -> "accept" | "reject" | ""
  inherited: {}, // id -> duplicate whose row decided it
  notes: {}, // id -> the manifest's note
  filter: "all",
  view: [], // ids shown, in order
  focus: 0, // index into view
  selected: new Set(),
  anchor: null, // id where a shift-click range starts
  shown: null, // id shown in the preview (a group member, or the focused image)
  inflight: 0,
};

let queue = Promise.resolve();

function api(path, body) {
  // Chain requests so decisions reach the server in the order they were made.
  const run = async () => {
    S.inflight++;
    setStatus("saving…", "saving");
    try {
      const res = await fetch(path, {
        method: body === undefined ? "GET" : "POST",
        headers: body === undefined ? {} : { "Content-Type": "application/json" },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      const data = await res.json().catch(() => ({ error: `${res.status} ${res.statusText}` }));
      S.inflight--;
      if (data.decisions) applyState(data);
      if (data.error) {
        toast(data.error, true);
        setStatus("not saved: " + data.error, "error");
      } else {
        if (data.message) toast(data.message);
        setStatus(`saved to ${S.manifest}`);
      }
      return data;
    } catch (err) {
      S.inflight--;
      toast("The review server does not answer; nothing was saved. Is `python -m pipeline review` still running?", true);
      setStatus("server unreachable", "error");
      return { error: String(err) };
    }
  };
  queue = queue.then(run);
  return queue;
}

function applyState(data) {
  // Replies to earlier requests would undo later optimistic updates; wait for the last.
  if (S.inflight > 0 && !data.error) return;
  S.decisions = data.decisions;
  S.inherited = data.inherited || {};
  S.notes = data.notes || {};
  S.counts = data.counts;
  S.undo = data.undo;
  for (const id of S.cards.keys()) paintCard(id);
  paintCounts();
  paintDetail();
}

function setStatus(text, cls) {
  const s = $("#status");
  s.textContent = text;
  s.className = cls || "";
}

let toastTimer = null;
function toast(text, error) {
  const t = $("#toast");
  t.textContent = text;
  t.className = error ? "error" : "";
  t.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => (t.hidden = true), error ? 8000 : 3000);
}

// ---- rendering

function buildGrid() {
  const grid = $("#grid");
  for (const item of S.items) {
    const card = el("figure", "card");
    card.dataset.id = item.id;
    const img = el("img");
    img.loading = "lazy";
    img.decoding = "async";
    img.alt = item.id;
    img.src = `/img/${encodeURIComponent(item.id)}/thumb`;
    img.addEventListener("error", () => card.classList.add("broken"));
    const cap = el("figcaption");
    cap.append(el("span", "", item.id));
    if (item.members.length) cap.append(el("span", "badge", `×${item.members.length + 1}`));
    card.append(img, cap);
    card.addEventListener("click", (ev) => onClick(item.id, ev));
    grid.append(card);
    S.cards.set(item.id, card);
  }
}

function paintCard(id) {
  const card = S.cards.get(id);
  const d = S.decisions[id] || "";
  card.classList.toggle("accept", d === "accept");
  card.classList.toggle("reject", d === "reject");
  card.classList.toggle("selected", S.selected.has(id));
  card.classList.toggle("focus", S.view[S.focus] === id);
}

function paintCounts() {
  const c = S.counts;
  $("#n-total").textContent = c.total;
  $("#n-pending").textContent = c.pending;
  $("#n-accept").textContent = c.accept;
  $("#n-reject").textContent = c.reject;
  $("#progress-bar").style.width = `${c.total ? (100 * (c.accept + c.reject)) / c.total : 0}%`;
  $("#orphaned").textContent = c.orphaned
    ? `${c.orphaned} manifest rows for images no longer among the candidates (kept)`
    : "";
  for (const b of document.querySelectorAll("#filters button")) {
    b.classList.toggle("on", b.dataset.filter === S.filter);
  }
  const n = S.selected.size;
  $("#n-selected").textContent = `${n} selected`;
  $("#bulk-accept").disabled = n === 0;
  $("#bulk-reject").disabled = n === 0;
  $("#undo").disabled = !S.undo;
}

function fact(name, value, link) {
  const tr = el("tr");
  tr.append(el("th", "", name));
  const td = el("td");
  if (link && /^https?:\/\//i.test(value)) {
    const a = el("a", "", value);
    a.href = value;
    a.target = "_blank";
    a.rel = "noopener noreferrer";
    td.append(a);
  } else {
    td.textContent = value || "—";
  }
  tr.append(td);
  return tr;
}

function kb(bytes) {
  return bytes >= 1 << 20 ? `${(bytes / (1 << 20)).toFixed(1)} MB` : `${Math.max(1, Math.round(bytes / 1024))} kB`;
}

function paintDetail() {
  const id = S.view[S.focus];
  const item = S.byId.get(id);
  const box = $("#preview-box");
  const body = $("#facts tbody");
  body.replaceChildren();
  $("#group").replaceChildren();
  if (!item) {
    $("#preview").removeAttribute("src");
    box.className = "";
    return;
  }
  const members = [item, ...item.members];
  const shown = members.find((m) => m.id === S.shown) || item;
  const preview = $("#preview");
  const src = `/img/${encodeURIComponent(shown.id)}/full`;
  if (preview.getAttribute("src") !== src) preview.src = src;
  preview.alt = shown.id;
  preview.classList.toggle("pixelated", Math.max(shown.width, shown.height) < 340);
  const d = S.decisions[id] || "";
  box.className = d;
  const decision = d ? (S.inherited[id] ? `${d} (from duplicate ${S.inherited[id]})` : d) : "pending";
  body.append(
    fact("id", shown.id === id ? id : `${shown.id} (duplicate of ${id})`),
    fact("decision", decision),
    fact("note", S.notes[id] || ""),
    fact("size", `${shown.width} × ${shown.height} px, ${shown.format}, ${kb(shown.bytes)}`),
    fact("source", shown.source),
    fact("source URL", shown.origin, true),
  );
  if (shown.page_url) body.append(fact("page URL", shown.page_url, true));
  if (shown.title) body.append(fact("title", shown.title));
  // Licence as the search engine reported it; "unknown" says we were not told, not that there is none.
  const licence = shown.license ? `${shown.license.toUpperCase()} ${shown.license_version}`.trim() : "unknown";
  body.append(fact("licence", licence));
  if (shown.license_url) body.append(fact("licence URL", shown.license_url, true));
  if (shown.creator) body.append(fact("creator", shown.creator));
  if (shown.attribution) body.append(fact("attribution", shown.attribution));
  if (shown.distance !== undefined) body.append(fact("distance", `${shown.distance} bits (${shown.match})`));
  $("#group-title").textContent = item.members.length
    ? `Duplicate group: ${members.length} images`
    : "No duplicates";
  $("#group-hint").hidden = !item.members.length;
  if (!item.members.length) return;
  for (const m of members) {
    const f = el("figure", m.id === id ? "kept" : "");
    if (m.id === shown.id) f.classList.add("shown");
    const img = el("img");
    img.loading = "lazy";
    img.src = `/img/${encodeURIComponent(m.id)}/thumb`;
    img.alt = m.id;
    const label = m.id === id ? `${m.id} kept` : `${m.id} d=${m.distance}`;
    f.append(img, el("figcaption", "", label));
    f.title = `${m.width} × ${m.height} px`;
    f.addEventListener("click", () => {
      S.shown = m.id;
      paintDetail();
    });
    $("#group").append(f);
  }
}

// ---- view, focus and selection

function matches(id) {
  return S.filter === "all" || (S.decisions[id] || "pending") === S.filter;
}

function setFilter(filter) {
  const current = S.view[S.focus];
  S.filter = filter;
  S.view = S.items.map((i) => i.id).filter(matches);
  const shown = new Set(S.view);
  for (const [id, card] of S.cards) card.classList.toggle("hidden", !shown.has(id));
  S.selected = new Set([...S.selected].filter((id) => shown.has(id)));
  const keep = S.view.indexOf(current);
  setFocus(keep >= 0 ? keep : 0);
  paintCounts();
}

function setFocus(i) {
  if (!S.view.length) {
    S.focus = 0;
    paintDetail();
    return;
  }
  const old = S.view[S.focus];
  S.focus = Math.max(0, Math.min(S.view.length - 1, i));
  S.shown = null;
  if (old && S.cards.has(old)) paintCard(old);
  const id = S.view[S.focus];
  paintCard(id);
  S.cards.get(id).scrollIntoView({ block: "nearest" });
  paintDetail();
}

function columns() {
  const cards = S.view.map((id) => S.cards.get(id));
  if (cards.length < 2) return 1;
  const top = cards[0].offsetTop;
  const n = cards.findIndex((c) => c.offsetTop !== top);
  return n < 0 ? cards.length : n;
}

function selectOnly(ids) {
  const old = S.selected;
  S.selected = new Set(ids);
  for (const id of new Set([...old, ...ids])) paintCard(id);
  paintCounts();
}

function onClick(id, ev) {
  const i = S.view.indexOf(id);
  if (i < 0) return;
  if (ev.shiftKey && S.anchor !== null && S.view.includes(S.anchor)) {
    const a = S.view.indexOf(S.anchor);
    selectOnly(S.view.slice(Math.min(a, i), Math.max(a, i) + 1));
  } else if (ev.ctrlKey || ev.metaKey) {
    const next = new Set(S.selected);
    next.has(id) ? next.delete(id) : next.add(id);
    selectOnly(next);
    S.anchor = id;
  } else {
    selectOnly([id]);
    S.anchor = id;
  }
  setFocus(i);
}

// ---- actions

function decide(decision) {
  // The selection, when there is one beyond the image in focus; else the image in focus.
  const bulk = S.selected.size > 1 || (S.selected.size === 1 && !S.selected.has(S.view[S.focus]));
  const ids = bulk ? S.view.filter((id) => S.selected.has(id)) : [S.view[S.focus]].filter(Boolean);
  if (!ids.length) return;
  for (const id of ids) S.decisions[id] = decision; // optimistic; the reply has the truth
  selectOnly([]);
  S.anchor = null;
  for (const id of ids) paintCard(id);
  if (!bulk) setFocus(S.focus + 1);
  else paintDetail();
  api("/api/decide", { ids, decision });
}

async function undo() {
  const data = await api("/api/undo", {});
  if (data.reverted && data.reverted.length) {
    const i = S.view.indexOf(data.reverted[0]);
    if (i >= 0) setFocus(i);
  }
}

function toggleLegend(show) {
  $("#legend").hidden = show === undefined ? !$("#legend").hidden : !show;
}

const FILTER_KEYS = { 1: "all", 2: "pending", 3: "accept", 4: "reject" };

function onKey(ev) {
  if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
  if (ev.target.closest && ev.target.closest("input, textarea")) return;
  const legendOpen = !$("#legend").hidden;
  if (ev.key === "?") return toggleLegend();
  if (ev.key === "Escape") {
    if (legendOpen) return toggleLegend(false);
    selectOnly([]);
    S.anchor = null;
    return;
  }
  if (legendOpen) return;
  const key = ev.key.length === 1 ? ev.key.toLowerCase() : ev.key;
  const moves = { ArrowLeft: -1, ArrowRight: 1, ArrowUp: -columns(), ArrowDown: columns() };
  if (key in moves) {
    ev.preventDefault();
    const from = S.focus;
    setFocus(S.focus + moves[key]);
    if (ev.shiftKey) {
      if (S.anchor === null) S.anchor = S.view[from];
      const a = S.view.indexOf(S.anchor);
      selectOnly(S.view.slice(Math.min(a, S.focus), Math.max(a, S.focus) + 1));
    }
    return;
  }
  if (key === "Home") return setFocus(0);
  if (key === "End") return setFocus(S.view.length - 1);
  if (key === "a") return decide("accept");
  if (key === "r") return decide("reject");
  if (key === "p") return decide("");
  if (key === "u") return undo();
  if (key === " ") {
    ev.preventDefault();
    const id = S.view[S.focus];
    if (!id) return;
    const next = new Set(S.selected);
    next.has(id) ? next.delete(id) : next.add(id);
    S.anchor = id;
    return selectOnly(next);
  }
  if (key in FILTER_KEYS) return setFilter(FILTER_KEYS[key]);
}

async function start() {
  const res = await fetch("/api/items");
  const data = await res.json();
  S.items = data.items;
  S.manifest = data.manifest;
  for (const item of S.items) S.byId.set(item.id, item);
  buildGrid();
  const state = await api("/api/state");
  setFilter(S.counts && S.counts.pending ? "pending" : "all");
  if (!S.items.length) setStatus("no candidates: run `dvc repro dedup` first", "error");
  else if (!state.error) setStatus(`${S.items.length} candidates; decisions are saved to ${S.manifest}`);
  // Images whose file cannot be read (a symlink loop, a vanished file) are left out, with the reason.
  const skipped = data.skipped || [];
  if (skipped.length) {
    const first = `${skipped[0].id}: ${skipped[0].reason}`;
    toast(`${skipped.length} image(s) not shown, unreadable (${first}${skipped.length > 1 ? "; …" : ""})`, true);
  }

  document.addEventListener("keydown", onKey);
  // A clicked button keeps focus, and Space or Enter would press it again: give focus back.
  document.addEventListener("click", (ev) => ev.target.closest("button")?.blur());
  for (const b of document.querySelectorAll("#filters button")) {
    b.addEventListener("click", () => setFilter(b.dataset.filter));
  }
  $("#bulk-accept").addEventListener("click", () => decide("accept"));
  $("#bulk-reject").addEventListener("click", () => decide("reject"));
  $("#detail-accept").addEventListener("click", () => decide("accept"));
  $("#detail-reject").addEventListener("click", () => decide("reject"));
  $("#undo").addEventListener("click", undo);
  $("#help-button").addEventListener("click", () => toggleLegend());
  $("#legend").addEventListener("click", () => toggleLegend(false));
  // Pick up edits made in an editor or by git while the page was in the background.
  window.addEventListener("focus", () => api("/api/state"));
  document.body.dataset.ready = "1";
}

start();
