// The annotator page: loads a sample, draws it, and turns keys into decisions.
//
// Flow: the queue hands out a sample (GET /api/queue/next), the page shows the tile with its masks and
// the caption with its phrases, the annotator accepts (a), rejects (r) or fixes (e) it, and the page
// saves the decision with the revision it was based on and moves to the next sample.

import { getJSON, postJSON, urls, whoAmI } from "./api.js";
import {
  highlightPriors, renderCaption, renderFlags, renderHistory, renderPhraseList, renderPriors,
} from "./caption.js";
import { bulkCount, bulkGo, openDialog, openStats } from "./dialogs.js";
import { clear, el } from "./dom.js";
import { FixDraft, renderDraftCaption, renderDraftPhrases } from "./editor.js";
import { maskColour, Overlay } from "./overlay.js";
import { decodeMask } from "./rle.js";
import { Viewer } from "./viewer.js";

const $ = (id) => document.getElementById(id);

const PREFS_KEY = "gpx-review-prefs";
const prefs = {
  opacity: 0.45, outline: false, numbers: true, layer: "tile", hidden: false,
  ...JSON.parse(localStorage.getItem(PREFS_KEY) || "{}"),
};
const savePrefs = () => localStorage.setItem(PREFS_KEY, JSON.stringify(prefs));

const NAV_KEY = "gpx-review-nav";
const state = {
  me: null,
  tileId: null,
  sample: null,
  mode: "view", // "view" | "edit"
  draft: null,
  hover: null,
  pinned: null,
  loadToken: 0,
  busy: false,
  conflict: null,
  ...JSON.parse(sessionStorage.getItem(NAV_KEY) || '{"history": [], "pos": -1}'),
};
const saveNav = () => sessionStorage.setItem(NAV_KEY, JSON.stringify({ history: state.history, pos: state.pos }));

const overlay = new Overlay($("mask-canvas"));
let scaleTimer = null;
const viewer = new Viewer($("viewport"), $("stage"), {
  onScale: (scale) => {
    $("zoom").textContent = `${Math.round(scale * 100)}%`;
    clearTimeout(scaleTimer);
    scaleTimer = setTimeout(() => {
      if (overlay.setScale(scale)) redraw();
      else renderMarks();
    }, 150);
  },
  onClick: (point) => {
    const hit = overlay.hit(point.x, point.y, visibleRefs());
    state.pinned = hit === state.pinned ? null : hit;
    setHover(hit);
  },
});

// ---------------------------------------------------------------- what is shown

/** Mask indices linked by the caption being shown (the draft's while fixing). */
function linkedRefs() {
  if (!state.sample) return [];
  const refs = state.mode === "edit" ? state.draft.payload().mask_refs : state.sample.current.mask_refs;
  return refs.filter((r) => r !== null && r !== undefined);
}

function visibleRefs() {
  return [...new Set(linkedRefs())];
}

function redraw() {
  if (!state.sample) return;
  const canvas = $("mask-canvas");
  canvas.classList.toggle("hidden", prefs.hidden);
  const visible = visibleRefs();
  const linked = new Set(visible);
  const faint = state.mode === "edit" ? state.sample.masks.map((_, i) => i).filter((i) => !linked.has(i)) : [];
  const focus = state.hover ?? state.pinned;
  overlay.draw({ visible, opacity: prefs.opacity, outlineOnly: prefs.outline, focus, faint });
  renderMarks(focus === null ? visible : [focus]);
}

// Numbers on masks smaller than this on screen are left out (zoom in to see them), so that hundreds
// of labels do not bury the masks they label.
const MARK_MIN_SCREEN_PX = 14;
let markedRefs = [];

function renderMarks(refs = markedRefs) {
  markedRefs = refs;
  const layer = clear($("labels"));
  layer.classList.toggle("hidden", !prefs.numbers || prefs.hidden);
  if (!prefs.numbers) return;
  const alone = refs.length === 1;
  for (const ref of refs) {
    const mask = overlay.masks[ref];
    if (!mask) continue;
    if (!alone && Math.max(mask.w, mask.h) * viewer.scale < MARK_MIN_SCREEN_PX) continue;
    layer.append(el("div", {
      className: "mark", text: String(ref + 1),
      style: { left: `${mask.labelX}px`, top: `${mask.labelY}px`, borderColor: maskColour(ref).css },
    }));
  }
}

function maskLabel(ref) {
  const phrase = state.sample.original.phrases[ref];
  return phrase ? `${phrase.category || "?"} "${phrase.text}"` : "mask";
}

function setHover(ref) {
  state.hover = ref;
  redraw();
  const focus = ref ?? state.pinned;
  for (const node of document.querySelectorAll(".phrase[data-ref], .phrase-row[data-ref]")) {
    node.classList.toggle("hot", focus !== null && node.dataset.ref === String(focus));
  }
  const ids = [];
  if (focus !== null && state.sample) {
    const phrase = state.sample.original.phrases[focus];
    if (phrase) ids.push(...(phrase.instance_ids || []));
  }
  highlightPriors($("priors"), ids);
  const info = $("hover-info");
  if (focus === null || !state.sample) {
    info.textContent = VIEW_HINT;
    info.classList.add("idle");
    return;
  }
  const mask = overlay.masks[focus];
  info.textContent = `#${focus + 1} · ${maskLabel(focus)}${mask ? ` · ${mask.area} px` : " · empty mask"}${state.pinned === focus ? " · pinned (Esc)" : ""}`;
  info.classList.remove("idle");
}

const VIEW_HINT = "wheel: zoom · drag: pan · hover a mask: see it alone · click: pin it";

const focusHandlers = {
  onHover: (ref) => setHover(ref),
  onPick: (ref) => {
    state.pinned = state.pinned === ref ? null : ref;
    setHover(null);
    const mask = state.pinned === null ? null : overlay.masks[state.pinned];
    if (mask) viewer.reveal(mask.labelX, mask.labelY);
  },
};

function renderHead() {
  const s = state.sample;
  const head = clear($("sample-head"));
  head.append(el("h1", { text: s.tile_id, title: `image ${s.image_id} · ${s.width}×${s.height}` }));
  const badges = el("div", { className: "badges" });
  badges.append(el("span", { className: `badge sev-${s.max_severity}`, text: s.max_severity === "none" ? "no flags" : s.max_severity }));
  if (s.queue.spot_check) badges.append(el("span", { className: "badge spot", text: "spot check" }));
  const status = s.decision ? s.decision.status : "unreviewed";
  badges.append(el("span", { className: `badge status-${status}`, text: status }));
  if (s.decision) {
    badges.append(el("span", { className: "muted small", text: `by ${s.decision.reviewer} · rev ${s.decision.revision}` }));
  }
  if (s.holder && s.holder !== state.me.user) {
    badges.append(el("span", { className: "badge held", text: `in progress: ${s.holder}` }));
  }
  head.append(badges);
  const where = s.queue.position === null ? "not in queue" : `queue #${s.queue.position + 1} of ${s.queue.total}`;
  head.append(el("div", { className: "muted small", text: `${where} · ${s.width}×${s.height} · ${s.masks.length} masks · ${s.lmm_model || "?"} / ${s.prompt_version || "?"}` }));
}

function renderPanel() {
  const s = state.sample;
  renderHead();
  renderFlags($("flags"), s.flags);
  const editing = state.mode === "edit";
  document.body.classList.toggle("editing", editing);
  if (editing) {
    const handlers = { onChange: onDraftChange, onHover: focusHandlers.onHover };
    renderDraftCaption($("caption"), state.draft, handlers);
    const masks = s.masks.map((_, i) => ({ label: maskLabel(i) }));
    renderDraftPhrases($("phrases"), state.draft, masks, handlers);
  } else {
    const problems = renderCaption($("caption"), s.current.caption, s.current.phrases, s.current.mask_refs, focusHandlers);
    renderPhraseList($("phrases"), s.current.phrases, s.current.mask_refs, focusHandlers);
    const note = $("caption-problems");
    note.textContent = problems.join("; ");
    note.classList.toggle("hidden", !problems.length);
  }
  renderPriors($("priors"), s.priors);
  $("btn-layer").disabled = !s.has_marks;
}

async function refreshHistory() {
  const tileId = state.tileId;
  const res = await getJSON(urls.events(tileId));
  if (res.ok && tileId === state.tileId) renderHistory($("history"), res.data.events.filter((e) => e.action !== "login"));
}

async function refreshProgress() {
  const [summary, stats] = await Promise.all([getJSON("/api/queue/summary"), getJSON("/api/stats")]);
  if (!summary.ok) return;
  const mine = stats.ok ? stats.data.annotators.find((a) => a.name === state.me.user) : null;
  const { total, remaining } = summary.data;
  $("progress-text").textContent = `${total - remaining} of ${total} queued samples reviewed · ${remaining} left · you today: ${mine ? mine.today : 0}`;
  $("progress-bar").style.width = `${total ? (100 * (total - remaining)) / total : 100}%`;
}

// ---------------------------------------------------------------- loading

function banner(kind, message, ...actions) {
  const node = clear($("banner"));
  node.className = `banner ${kind}`;
  node.append(el("span", { text: message }), ...actions);
}

function hideBanner() {
  $("banner").className = "banner hidden";
}

let toastTimer = null;
function toast(message) {
  const node = $("toast");
  node.textContent = message;
  node.classList.add("show");
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => node.classList.remove("show"), 1800);
}

function imageUrl(tileId) {
  return urls.image(tileId, prefs.layer === "marks" ? "marks" : "tile");
}

// Recently shown or prefetched images, kept decoded so that j/k back and forth does not decode a
// 4096² PNG again (a few hundred ms each time). About 64 MB of memory per 4096² image.
const decodedImages = new Map();
const DECODED_KEEP = 4;

function keepDecoded(url) {
  let image = decodedImages.get(url);
  if (!image) {
    image = new Image();
    image.src = url;
    image.ready = image.decode();
    image.ready.catch(() => decodedImages.delete(url));
  }
  decodedImages.delete(url);
  decodedImages.set(url, image); // most recent last
  while (decodedImages.size > DECODED_KEEP) decodedImages.delete(decodedImages.keys().next().value);
  return image;
}

async function showImage(url) {
  await keepDecoded(url).ready;
  const img = $("tile-img");
  if (img.getAttribute("src") !== url) img.src = url;
  await img.decode();
}

/** Open a sample: fetch it, decode its masks, draw, then set window.__gpxRendered. */
async function open(tileId, { push = true } = {}) {
  const token = ++state.loadToken;
  const t0 = performance.now();
  $("stage").classList.add("loading");
  $("spinner").classList.remove("hidden");
  let imageReady = showImage(imageUrl(tileId)).then(() => null, (error) => error);
  const res = await getJSON(urls.sample(tileId));
  if (token !== state.loadToken) return;
  if (!res.ok) {
    banner("error", `Cannot open sample ${tileId} (${res.status}).`);
    $("spinner").classList.add("hidden");
    return;
  }
  const tFetched = performance.now();
  if (prefs.layer === "marks" && !res.data.has_marks) {
    imageReady = showImage(urls.image(tileId, "tile")).then(() => null, (error) => error);
  }
  Object.assign(state, { sample: res.data, tileId, mode: "view", draft: null, hover: null, pinned: null, conflict: null });
  if (push) {
    state.history = state.history.slice(0, state.pos + 1).filter((id) => id !== tileId);
    state.history.push(tileId);
    state.pos = state.history.length - 1;
  }
  saveNav();
  window.history.replaceState(null, "", `#tile=${encodeURIComponent(tileId)}`);
  hideBanner();
  $("note").value = res.data.decision?.note || "";
  renderPanel();
  const tPanel = performance.now();
  const decoded = res.data.masks.map((rle) => {
    try {
      return decodeMask(rle);
    } catch {
      return null;
    }
  });
  const tDecoded = performance.now();
  viewer.setSize(res.data.width, res.data.height);
  overlay.load(decoded, res.data.width, res.data.height);
  overlay.setScale(viewer.scale);
  const tPacked = performance.now();
  redraw();
  const tDrawn = performance.now();
  const imageError = await imageReady;
  const tImage = performance.now();
  if (token !== state.loadToken) return;
  if (imageError) banner("error", `The tile image of ${tileId} could not be loaded.`);
  $("stage").classList.remove("loading");
  $("spinner").classList.add("hidden");
  requestAnimationFrame(() => requestAnimationFrame(() => {
    if (token !== state.loadToken) return;
    const t = performance.now();
    window.__gpxRendered = {
      tile: tileId, t, sinceOpen: t - t0, fetchMs: tFetched - t0, panelMs: tPanel - tFetched,
      decodeMs: tDecoded - tPanel, packMs: tPacked - tDecoded, drawMs: tDrawn - tPacked,
      imageMs: tImage - t0, masks: decoded.length,
    };
    document.body.dataset.rendered = tileId;
    document.body.dataset.revision = String(state.sample.revision);
  }));
  refreshHistory();
  prefetchNext(tileId);
}

/** Warm the browser cache with the image of the sample the queue would hand out next. */
async function prefetchNext(tileId) {
  const res = await getJSON(urls.peek(tileId));
  if (!res.ok || !res.data.tile_id || res.data.tile_id === tileId) return;
  keepDecoded(imageUrl(res.data.tile_id));
}

function confirmLeave() {
  if (state.mode === "edit" && state.draft.changed()) {
    return window.confirm("Discard your unsaved fix?");
  }
  return true;
}

async function next() {
  if (!confirmLeave()) return;
  if (state.pos >= 0 && state.pos < state.history.length - 1) {
    state.pos += 1;
    await open(state.history[state.pos], { push: false });
    return;
  }
  const res = await getJSON(urls.next(state.tileId));
  if (!res.ok) {
    banner("error", `The queue is not available (${res.status}).`);
    return;
  }
  if (!res.data.tile_id) {
    showDone();
    return;
  }
  if (res.data.tile_id === state.tileId) {
    toast("No other open sample in the queue");
    return;
  }
  await open(res.data.tile_id);
}

async function prev() {
  if (!confirmLeave()) return;
  if (state.pos <= 0) {
    toast("This is the first sample of this session");
    return;
  }
  state.pos -= 1;
  await open(state.history[state.pos], { push: false });
}

function showDone() {
  toast("Queue complete");
  banner("done", "Nothing left in the queue. Use k to go back, or Bulk accept for unflagged samples.");
  document.body.dataset.rendered = "__done__";
}

// ---------------------------------------------------------------- decisions

const ACTION_WORDS = { accept: "Accepted", reject: "Rejected", fix: "Fixed" };

async function decide(action, { baseRevision = null } = {}) {
  if (state.busy || !state.sample) return;
  const tileId = state.tileId;
  const body = {
    action,
    base_revision: baseRevision ?? state.sample.revision,
    note: $("note").value.trim() || null,
  };
  if (action === "fix") body.fix = state.draft.payload();
  state.busy = true;
  document.body.classList.add("busy");
  let res;
  try {
    res = await postJSON(urls.decision(tileId), body);
  } finally {
    state.busy = false;
    document.body.classList.remove("busy");
  }
  if (tileId !== state.tileId) return;
  if (res.ok) {
    toast(`${ACTION_WORDS[action]} ${tileId}`);
    state.sample.decision = res.data.decision;
    state.sample.revision = res.data.decision.revision;
    state.mode = "view";
    state.draft = null;
    refreshProgress();
    await next();
  } else if (res.status === 409) {
    const current = res.data.current || {};
    const retry = el("button", { type: "button", text: `Save mine on top (rev ${current.revision})` });
    retry.addEventListener("click", () => decide(action, { baseRevision: current.revision }));
    const reload = el("button", { type: "button", text: "Show theirs" });
    reload.addEventListener("click", () => {
      state.mode = "view";
      open(tileId, { push: false });
    });
    banner("conflict", `Conflict: ${res.data.detail} Your ${action} is kept here.`, retry, reload);
  } else if (res.status === 422 && res.data?.flags) {
    showEditStatus(res.data.flags, false);
    banner("error", "The fix does not validate; see the problems under the caption.");
  } else {
    banner("error", `Saving failed (${res.status}): ${res.data?.detail ?? "server error"}`);
  }
}

// ---------------------------------------------------------------- fixing

let validateTimer = null;

function enterEdit() {
  if (!state.sample || state.mode === "edit") return;
  state.mode = "edit";
  state.draft = new FixDraft(state.sample.current.gcg_caption, state.sample.current.mask_refs);
  state.pinned = null;
  renderPanel();
  redraw();
  showEditStatus([], true);
  const first = document.querySelector("#phrases .phrase-input");
  if (first) first.focus();
}

function cancelEdit() {
  if (state.mode !== "edit") return;
  if (state.draft.changed() && !window.confirm("Discard your changes to this sample?")) return;
  state.mode = "view";
  state.draft = null;
  hideBanner();
  renderPanel();
  redraw();
}

function onDraftChange() {
  // Re-render once focus has settled (a change event fires while Tab is moving focus), then put the
  // focus back on the same control of the rebuilt list.
  setTimeout(() => {
    if (state.mode !== "edit") return;
    const label = document.activeElement?.getAttribute("aria-label");
    renderPanel();
    redraw();
    if (label) document.querySelector(`#phrases [aria-label="${CSS.escape(label)}"]`)?.focus();
  }, 0);
  clearTimeout(validateTimer);
  validateTimer = setTimeout(validateDraft, 250);
}

async function validateDraft() {
  if (state.mode !== "edit") return;
  const res = await postJSON(urls.validate(state.tileId), state.draft.payload());
  if (res.ok && state.mode === "edit") showEditStatus(res.data.flags, res.data.ok);
}

function showEditStatus(flags, ok) {
  const node = clear($("edit-status"));
  if (ok && !flags.length) {
    node.append(el("span", { className: "ok", text: "✓ The fix validates. Ctrl+Enter saves it, Esc cancels." }));
    return;
  }
  for (const flag of flags) {
    node.append(el("div", { className: `flag sev-${flag.severity}` },
      el("span", { className: `badge sev-${flag.severity}`, text: flag.severity }),
      el("code", { text: flag.code }), el("span", { text: ` ${flag.detail}` })));
  }
}

// ---------------------------------------------------------------- keys and buttons

function setPref(key, value) {
  prefs[key] = value;
  savePrefs();
  syncToolbar();
  redraw();
}

function syncToolbar() {
  $("opacity").value = String(Math.round(prefs.opacity * 100));
  $("opacity-value").textContent = `${Math.round(prefs.opacity * 100)}%`;
  $("btn-outline").setAttribute("aria-pressed", String(prefs.outline));
  $("btn-numbers").setAttribute("aria-pressed", String(prefs.numbers));
  $("btn-layer").setAttribute("aria-pressed", String(prefs.layer === "marks"));
  $("btn-hide").setAttribute("aria-pressed", String(prefs.hidden));
}

function toggleLayer() {
  if (!state.sample?.has_marks) return;
  prefs.layer = prefs.layer === "marks" ? "tile" : "marks";
  savePrefs();
  syncToolbar();
  showImage(imageUrl(state.tileId)).catch(() => banner("error", "That image could not be loaded."));
}

const KEYS = {
  a: () => state.mode === "view" && decide("accept"),
  r: () => state.mode === "view" && decide("reject"),
  e: () => enterEdit(),
  j: () => state.mode === "view" && next(),
  k: () => state.mode === "view" && prev(),
  o: () => setPref("outline", !prefs.outline),
  n: () => setPref("numbers", !prefs.numbers),
  h: () => setPref("hidden", !prefs.hidden),
  m: () => toggleLayer(),
  "[": () => setPref("opacity", Math.max(0, Math.round((prefs.opacity - 0.1) * 10) / 10)),
  "]": () => setPref("opacity", Math.min(1, Math.round((prefs.opacity + 0.1) * 10) / 10)),
  f: () => viewer.fit(),
  0: () => viewer.fit(),
  "+": () => viewer.zoomCentre(1.25),
  "=": () => viewer.zoomCentre(1.25),
  "-": () => viewer.zoomCentre(0.8),
  "?": () => openDialog("help-dialog"),
  Escape: () => {
    if (state.mode === "edit") cancelEdit();
    else {
      state.pinned = null;
      setHover(null);
    }
  },
};

document.addEventListener("keydown", (event) => {
  if (document.querySelector("dialog[open]")) return;
  const typing = event.target.closest?.("input, textarea, select");
  if (state.mode === "edit" && event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
    event.preventDefault();
    decide("fix");
    return;
  }
  if (typing) {
    if (event.key === "Escape") event.target.blur();
    return;
  }
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  const action = KEYS[event.key];
  if (!action) return;
  event.preventDefault();
  if (state.mode === "edit" && "arjk".includes(event.key)) {
    toast("Save the fix (Ctrl+Enter) or cancel it (Esc) first");
    return;
  }
  action();
});
document.addEventListener("gpx-save-fix", () => state.mode === "edit" && decide("fix"));

function bind(id, handler) {
  $(id).addEventListener("click", (event) => {
    event.currentTarget.blur(); // keep keyboard shortcuts working after a click
    handler();
  });
}

bind("btn-accept", () => decide("accept"));
bind("btn-reject", () => decide("reject"));
bind("btn-edit", () => enterEdit());
bind("btn-save", () => decide("fix"));
bind("btn-cancel", () => cancelEdit());
bind("btn-next", () => next());
bind("btn-prev", () => prev());
bind("btn-outline", () => KEYS.o());
bind("btn-numbers", () => KEYS.n());
bind("btn-layer", () => KEYS.m());
bind("btn-hide", () => KEYS.h());
bind("btn-fit", () => viewer.fit());
bind("btn-help", () => openDialog("help-dialog"));
bind("btn-stats", () => openStats());
bind("btn-bulk", () => {
  $("bulk-result").textContent = "";
  $("bulk-go").disabled = true;
  openDialog("bulk-dialog");
});
bind("bulk-count", () => bulkCount());
bind("bulk-go", () => bulkGo().then(refreshProgress));
$("opacity").addEventListener("input", (event) => setPref("opacity", Number(event.target.value) / 100));
for (const button of document.querySelectorAll("dialog .close")) {
  button.addEventListener("click", () => button.closest("dialog").close());
}
bind("btn-logout", async () => {
  if (!confirmLeave()) return;
  await postJSON("/api/logout", {});
  sessionStorage.removeItem(NAV_KEY);
  window.location.assign("/login");
});

let hoverFrame = 0;
$("viewport").addEventListener("pointermove", (event) => {
  if (!state.sample || hoverFrame) return;
  hoverFrame = requestAnimationFrame(() => {
    hoverFrame = 0;
    const p = viewer.toTile(event);
    const hit = overlay.hit(p.x, p.y, visibleRefs());
    if (hit !== state.hover) setHover(hit);
  });
});
$("viewport").addEventListener("pointerleave", () => { if (state.hover !== null) setHover(null); });

// ---------------------------------------------------------------- start

// For annotations/bench.py: the cost of one full overlay redraw (as on hover), in milliseconds.
window.__gpxRedraw = () => {
  const t0 = performance.now();
  redraw();
  return performance.now() - t0;
};

async function start() {
  state.me = await whoAmI();
  $("user").textContent = state.me.user;
  syncToolbar();
  refreshProgress();
  const match = window.location.hash.match(/^#tile=(.+)$/);
  if (match) {
    const tileId = decodeURIComponent(match[1]);
    const known = state.history.indexOf(tileId);
    if (known >= 0) {
      state.pos = known;
      await open(tileId, { push: false });
    } else {
      await open(tileId);
    }
  } else {
    state.history = [];
    state.pos = -1;
    await next();
  }
}

start();
