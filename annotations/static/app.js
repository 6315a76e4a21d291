// The annotator page: loads a sample, draws it, and turns keys into decisions.
//
// Flow: the queue hands out a sample (GET /api/queue/next), the page shows the tile with its masks and
// the caption with its phrases, the annotator accepts (a), rejects (r) or fixes (e) it, and the page
// saves the decision with the revision it was based on and moves to the next sample.

import { getJSON, postJSON, urls, whoAmI } from "./api.js";
import {
  flagSummary, formatTime, highlightPriors, renderCaption, renderFlags, renderHistory, renderPhraseList, renderPriors,
} from "./caption.js";
import { addUser, bulkCount, bulkGo, openDialog, openStats, openUsers } from "./dialogs.js";
import { clear, el } from "./dom.js";
import { FixDraft, renderDraftCaption, renderDraftPhrases } from "./editor.js";
import { MaskEditor } from "./maskedit.js";
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
  busy: false, // a decision is in flight
  ready: false, // the sample on screen is fully shown (data, masks and image): decisions allowed
  done: false, // the "queue complete" screen: nothing to decide on
  conflict: null,
  phraseCursor: null, // the phrase that Shift+A / Shift+R / Shift+E act on
  filter: sessionStorage.getItem("gpx-review-filter") || "",
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

// ---------------------------------------------------------------- decision state

/** Enable the decision buttons only when a decision is possible (see state.ready / busy / done). */
function canDecide() {
  return Boolean(state.ready && !state.busy && !state.done && state.sample);
}

function syncActions() {
  const ok = canDecide();
  for (const id of ["btn-accept", "btn-reject", "btn-edit", "btn-save"]) $(id).disabled = !ok;
  document.body.dataset.ready = String(ok);
  document.body.classList.toggle("busy", state.busy);
}

// ---------------------------------------------------------------- drafts of fixes

// A fix being typed is copied to localStorage on every keystroke, so that it survives an expired
// session, a reload or a crash; it is offered again when the same annotator opens the same sample.
const DRAFT_PREFIX = "gpx-draft:";
const MIN_DWELL_MS = 250;
const DRAFT_MAX_AGE_MS = 14 * 24 * 3600 * 1000;
const draftKey = (tileId) => `${DRAFT_PREFIX}${state.me.user}:${tileId}`;

function saveDraft() {
  if (state.mode !== "edit" || !state.draft || !state.sample) return;
  const draft = state.draft;
  if (!draft.changed() && !draft.pending && !$("note").value) {
    localStorage.removeItem(draftKey(state.tileId));
    return;
  }
  localStorage.setItem(draftKey(state.tileId), JSON.stringify({
    ...draft.payload(), pending: draft.pending, note: $("note").value,
    base_revision: state.sample.revision, saved_at: new Date().toISOString(),
  }));
}

function loadDraft(tileId) {
  try {
    const saved = JSON.parse(localStorage.getItem(draftKey(tileId)) || "null");
    return saved && typeof saved.gcg_caption === "string" && Array.isArray(saved.mask_refs) ? saved : null;
  } catch {
    return null;
  }
}

function dropDraft(tileId) {
  localStorage.removeItem(draftKey(tileId));
}

function pruneDrafts() {
  const now = Date.now();
  for (let i = localStorage.length - 1; i >= 0; i -= 1) {
    const key = localStorage.key(i);
    if (!key?.startsWith(DRAFT_PREFIX)) continue;
    try {
      const saved = JSON.parse(localStorage.getItem(key));
      if (!saved || now - Date.parse(saved.saved_at) > DRAFT_MAX_AGE_MS) localStorage.removeItem(key);
    } catch {
      localStorage.removeItem(key);
    }
  }
}

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
  const faint = state.mode === "edit" ? overlay.masks.map((_, i) => i).filter((i) => !linked.has(i)) : [];
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
  if (ref >= state.sample.masks.length) return "drawn in review";
  const phrase = state.sample.original.phrases[ref];
  return phrase ? `${phrase.category || "?"} "${phrase.text}"` : "mask";
}

function safeDecode(rle) {
  try {
    return decodeMask(rle);
  } catch {
    return null;
  }
}

/** Masks drawn in the page (the draft's while fixing, else the saved fix's). */
function drawnMasks() {
  if (!state.sample) return [];
  return state.mode === "edit" ? state.draft.newMasks : state.sample.current.new_masks || [];
}

/** Reload the overlay after drawn masks changed: the original masks, then the drawn ones. */
function reloadOverlay() {
  const s = state.sample;
  overlay.load([...state.decodedOriginal, ...drawnMasks().map(safeDecode)], s.width, s.height);
  overlay.setScale(viewer.scale);
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
  if (s.flags.length) {
    head.append(el("div", { className: "small flag-count", text: `Flags: ${flagSummary(s.flags)} (below the phrases)` }));
  }
  if (s.decision?.note) head.append(el("div", { className: "muted small", text: `note by ${s.decision.reviewer}: ${s.decision.note}` }));
  if (s.double_review && !s.decision) {
    const d = s.double_review;
    const mine = d.mine ? ` · yours: ${d.mine}` : "";
    badges.append(el("span", { className: "badge double", text: `two reviewers (blind) · ${d.reviews} of 2${mine}` }));
    for (const review of d.detail || []) {
      head.append(el("div", { className: "small review-line", text: `${review.annotator}: ${review.status}${review.note ? ` (“${review.note}”)` : ""}${review.fixed ? ` → ${review.fixed.gcg_caption}` : ""}` }));
    }
  }
}

/** The mask of phrase `p` of the original sample (phrase i of a sample grounds mask i). */
function maskOfPhrase(p) {
  return state.sample && Number.isInteger(p) && p >= 0 && p < state.sample.masks.length ? p : null;
}

/** Bring the caption's phrase for mask `ref` into view (and flash it when `flash`). */
function scrollToPhrase(ref, { flash = false, block = "nearest" } = {}) {
  if (ref === null || ref === undefined) return;
  const span = document.querySelector(`#caption .phrase[data-ref="${ref}"]`);
  if (!span) return;
  span.scrollIntoView({ block, inline: "nearest" });
  if (flash) {
    span.classList.remove("flash");
    void span.offsetWidth; // restart the animation
    span.classList.add("flash");
  }
}

/** A flag was clicked: pin its phrase's mask, bring mask and phrase into view, mark its instances. */
function showFlag(flag) {
  // A flag names its phrase, or only instances: then the first phrase grounding one of them.
  let phrase = flag.phrase;
  if (!Number.isInteger(phrase) && flag.instance_ids?.length) {
    const wanted = new Set(flag.instance_ids);
    const found = (state.sample.original.phrases || []).findIndex((p) => (p.instance_ids || []).some((id) => wanted.has(id)));
    if (found >= 0) phrase = found;
  }
  const ref = maskOfPhrase(phrase);
  if (ref !== null) {
    state.pinned = ref;
    setHover(null);
    const mask = overlay.masks[ref];
    if (mask) viewer.reveal(mask.labelX, mask.labelY);
    scrollToPhrase(ref, { flash: true, block: "center" });
  } else if (Number.isInteger(phrase)) {
    toast(`Flag ${flag.code} names phrase ${phrase + 1}, which has no mask in this sample`);
  }
  if (flag.instance_ids?.length) highlightPriors($("priors"), flag.instance_ids);
}

function renderPanel() {
  const s = state.sample;
  renderHead();
  renderFlags($("flags"), s.flags, s.original.phrases || [], { onFlag: showFlag });
  const editing = state.mode === "edit";
  document.body.classList.toggle("editing", editing);
  if (editing) {
    const handlers = { onChange: onDraftChange, onHover: focusHandlers.onHover };
    renderDraftCaption($("caption"), state.draft, handlers);
    const masks = overlay.masks.map((_, i) => ({ label: maskLabel(i) }));
    renderDraftPhrases($("phrases"), state.draft, masks, { ...handlers, onEditMask: (n) => startDrawing(n) });
  } else {
    const problems = renderCaption($("caption"), s.current.caption, s.current.phrases, s.current.mask_refs, focusHandlers);
    renderPhraseList($("phrases"), s.current.phrases, s.current.mask_refs, focusHandlers, {
      decided: s.phrase_decisions || {},
      cursor: state.phraseCursor,
      phraseActions: !s.decision,
      onPhrase: (i, action) => phraseDecide(i, action),
    });
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
  const summary = await getJSON(urls.summary(state.filter));
  if (!summary.ok) return;
  const { total, remaining, today } = summary.data;
  const filtered = state.filter ? " (filtered)" : "";
  $("progress-text").textContent = `${total - remaining} of ${total} queued samples reviewed${filtered} · ${remaining} left · you today: ${today}`;
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
  state.ready = false; // nothing can be decided until this sample is fully shown
  state.done = false;
  document.body.classList.remove("queue-done");
  syncActions();
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
  Object.assign(state, {
    sample: res.data, tileId, mode: "view", draft: null, hover: null, pinned: null, conflict: null, phraseCursor: null,
  });
  if (push) {
    state.history = state.history.slice(0, state.pos + 1).filter((id) => id !== tileId);
    state.history.push(tileId);
    state.pos = state.history.length - 1;
  }
  saveNav();
  window.history.replaceState(null, "", `#tile=${encodeURIComponent(tileId)}`);
  hideBanner();
  $("note").value = ""; // a note belongs to one decision; an earlier one is shown in the head
  renderPanel();
  $("panel").scrollTop = 0;
  const saved = loadDraft(tileId);
  const tPanel = performance.now();
  const decoded = res.data.masks.map(safeDecode);
  state.decodedOriginal = decoded;
  const tDecoded = performance.now();
  viewer.setSize(res.data.width, res.data.height);
  overlay.load([...decoded, ...(res.data.current.new_masks || []).map(safeDecode)], res.data.width, res.data.height);
  overlay.setScale(viewer.scale);
  const tPacked = performance.now();
  if (saved) restoreDraft(saved);
  redraw();
  const tDrawn = performance.now();
  const imageError = await imageReady;
  const tImage = performance.now();
  if (token !== state.loadToken) return;
  if (imageError) {
    const retry = el("button", { type: "button", text: "Retry" });
    retry.addEventListener("click", () => open(tileId, { push: false }));
    banner("error", `The tile image of ${tileId} could not be loaded, so it cannot be decided now (j skips it).`, retry);
  }
  // A sample can be decided once it has been on screen for MIN_DWELL_MS: a double press, or a key
  // pressed just as the next sample appears, does not decide a sample nobody has seen.
  if (!imageError) {
    setTimeout(() => {
      if (token !== state.loadToken) return;
      state.ready = true;
      syncActions();
    }, MIN_DWELL_MS);
  }
  syncActions();
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
    document.body.dataset.imageOk = String(!imageError);
  }));
  refreshHistory();
  prefetchNext(tileId);
}

/** Warm the browser cache with the image of the sample the queue would hand out next. */
async function prefetchNext(tileId) {
  const res = await getJSON(urls.peek(tileId, state.filter));
  if (!res.ok || !res.data.tile_id || res.data.tile_id === tileId) return;
  keepDecoded(imageUrl(res.data.tile_id));
}

function confirmLeave() {
  if (state.mode === "edit" && state.draft.changed()) {
    return window.confirm("Discard your unsaved fix?");
  }
  return true;
}

async function next(_options = {}) {
  if (!confirmLeave()) return;
  if (state.pos >= 0 && state.pos < state.history.length - 1) {
    state.pos += 1;
    await open(state.history[state.pos], { push: false });
    return;
  }
  const res = await getJSON(urls.next(state.done ? null : state.tileId, state.filter));
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
  // Nothing is on screen to decide on: a, r, e and the buttons do nothing here (u still undoes).
  Object.assign(state, { done: true, ready: false, sample: null, mode: "view", draft: null, hover: null, pinned: null });
  state.loadToken += 1;
  syncActions();
  document.body.classList.add("queue-done");
  document.body.classList.remove("editing");
  for (const id of ["sample-head", "flags", "caption", "phrases", "priors", "history", "labels"]) clear($(id));
  $("note").value = "";
  $("tile-img").removeAttribute("src");
  overlay.load([], 1, 1);
  toast("Queue complete");
  banner("done", "Nothing left in the queue. Use k to go back, u to undo your last decision, or change the queue filter.");
  document.body.dataset.rendered = "__done__";
  refreshProgress();
}

// ---------------------------------------------------------------- decisions

const ACTION_WORDS = { accept: "Accepted", reject: "Rejected", fix: "Fixed" };
const REVIEW_OUTCOMES = {
  waiting: "Review saved; a second annotator reviews this sample blind",
  disagreed: "Review saved; the two reviews differ, a lead decides",
  agreed: "Review saved; both reviewers agree",
};

async function decide(action, { baseRevision = null } = {}) {
  // One decision at a time, only on a sample that is fully shown (image included).
  if (!canDecide()) return;
  const tileId = state.tileId;
  const body = {
    action,
    base_revision: baseRevision ?? state.sample.revision,
    note: $("note").value.trim() || null,
  };
  if (action === "fix") body.fix = state.draft.payload();
  state.busy = true;
  syncActions();
  let res;
  try {
    res = await postJSON(urls.decision(tileId), body);
  } finally {
    state.busy = false;
  }
  if (tileId !== state.tileId) return;
  if (res.ok) {
    dropDraft(tileId);
    if (res.data.decision) {
      toast(`${ACTION_WORDS[action]} ${tileId}`);
      state.sample.decision = res.data.decision;
      state.sample.revision = res.data.decision.revision;
    } else {
      toast(REVIEW_OUTCOMES[res.data.outcome] || "Review saved");
    }
    state.mode = "view";
    state.draft = null;
    state.ready = false; // stays off until the next sample is shown
    syncActions();
    refreshProgress();
    await next({ force: true });
    return;
  }
  syncActions();
  if (res.status === 409) {
    const current = res.data.current || {};
    const retry = el("button", { type: "button", text: `Save mine on top (rev ${current.revision})` });
    retry.addEventListener("click", () => decide(action, { baseRevision: current.revision }));
    const reload = el("button", { type: "button", text: "Show theirs" });
    reload.addEventListener("click", () => {
      state.mode = "view";
      dropDraft(tileId); // the refused attempt is in the audit log
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

// ---------------------------------------------------------------- phrase by phrase

function undecidedPhrases() {
  const s = state.sample;
  if (!s || s.decision) return [];
  const decided = s.phrase_decisions || {};
  return (s.original.phrases || []).map((_, i) => i).filter((i) => !decided[String(i)]);
}

/** Move the phrase cursor by `step` (p / Shift+P); it pins the phrase's mask and scrolls to it. */
function movePhraseCursor(step) {
  const s = state.sample;
  const n = s?.current.phrases.length || 0;
  if (!n) {
    toast("This sample has no grounded phrases");
    return;
  }
  const at = state.phraseCursor;
  state.phraseCursor = at === null ? (step > 0 ? 0 : n - 1) : (at + step + n) % n;
  const ref = s.current.mask_refs[state.phraseCursor];
  state.pinned = ref ?? null;
  renderPanel();
  setHover(null);
  document.querySelector(`#phrases .phrase-row[data-phrase="${state.phraseCursor}"]`)?.scrollIntoView({ block: "nearest" });
  scrollToPhrase(ref);
}

/** Ask for a phrase's new words inside its row; resolves to the text, or null when cancelled. */
function askPhraseText(i) {
  const row = document.querySelector(`#phrases .phrase-row[data-phrase="${i}"]`);
  const textNode = row?.querySelector(".phrase-text");
  if (!textNode) return Promise.resolve(null);
  return new Promise((resolve) => {
    const input = el("input", { className: "inline-phrase", value: textNode.textContent, "aria-label": `new words of phrase ${i + 1}` });
    textNode.replaceWith(input);
    input.focus();
    input.select();
    let done = false;
    const finish = (value) => {
      if (done) return;
      done = true;
      resolve(value);
    };
    input.addEventListener("keydown", (event) => {
      event.stopPropagation();
      if (event.key === "Enter") {
        event.preventDefault();
        finish(input.value.trim() || null);
      } else if (event.key === "Escape") {
        event.preventDefault();
        finish(null);
      }
    });
    input.addEventListener("blur", () => finish(null));
  });
}

/** Accept, reject or fix one phrase; when it was the last undecided one the sample is decided too. */
async function phraseDecide(i, action) {
  if (!canDecide() || state.mode !== "view") return;
  const s = state.sample;
  if (s.decision) {
    toast("This sample is decided; change it with a, r or e");
    return;
  }
  if (i === null || i === undefined) {
    toast("Choose a phrase first (p / Shift+P)");
    return;
  }
  state.phraseCursor = i;
  let text = null;
  if (action === "fix") {
    text = await askPhraseText(i);
    if (text === null) {
      renderPanel();
      return;
    }
    if (!canDecide()) return;
  }
  const tileId = state.tileId;
  state.busy = true;
  syncActions();
  let res;
  try {
    res = await postJSON(urls.phraseDecision(tileId, i), { action, base_revision: s.revision, text });
  } finally {
    state.busy = false;
  }
  if (tileId !== state.tileId) return;
  syncActions();
  if (!res.ok) {
    const detail = res.data?.flags?.map((f) => f.detail).join("; ") || res.data?.detail || "server error";
    banner(res.status === 409 ? "conflict" : "error", `Phrase ${i + 1} not saved (${res.status}): ${detail}`);
    return;
  }
  s.phrase_decisions = res.data.phrase_decisions;
  if (res.data.decision) {
    toast(`All phrases decided: ${res.data.decision.status} ${tileId}`);
    s.decision = res.data.decision;
    s.revision = res.data.decision.revision;
    state.ready = false;
    syncActions();
    refreshProgress();
    await next({ force: true });
    return;
  }
  toast(`Phrase ${i + 1} ${res.data.phrase_decisions[String(i)].status}`);
  const left = undecidedPhrases();
  state.phraseCursor = left.find((j) => j > i) ?? left[0] ?? null;
  state.pinned = state.phraseCursor === null ? null : (s.current.mask_refs[state.phraseCursor] ?? null);
  renderPanel();
  setHover(null);
  refreshHistory();
}

// ---------------------------------------------------------------- undo

async function undo() {
  if (state.busy) return;
  if (state.mode === "edit") {
    toast("Save or cancel the fix first");
    return;
  }
  state.busy = true;
  syncActions();
  let res;
  try {
    res = await postJSON("/api/undo", {});
  } finally {
    state.busy = false;
    syncActions();
  }
  if (res.status === 404) {
    toast("Nothing of yours to undo");
    return;
  }
  if (!res.ok) {
    banner("error", `Undo failed (${res.status}): ${res.data?.detail ?? "server error"}`);
    return;
  }
  toast(`Undid ${res.data.undid.join(" + ").replace(/_/g, " ")} on ${res.data.tile_id}`);
  refreshProgress();
  await open(res.data.tile_id);
}

// ---------------------------------------------------------------- fixing

let validateTimer = null;

function enterEdit(saved = null) {
  if (!state.sample || state.mode === "edit") return;
  if (!saved && !canDecide()) return;
  const current = state.sample.current;
  state.mode = "edit";
  state.draft = saved
    ? new FixDraft(saved.gcg_caption, saved.mask_refs, current, saved.new_masks)
    : new FixDraft(current.gcg_caption, current.mask_refs, null, current.new_masks);
  if (saved?.pending) state.draft.applyPending(saved.pending);
  state.draft.onInput = saveDraft;
  state.pinned = null;
  reloadOverlay();
  renderPanel();
  redraw();
  showEditStatus([], true);
  if (saved) {
    validateDraft();
    return;
  }
  const first = document.querySelector("#phrases .phrase-input");
  if (first) first.focus();
}

/** Reopen a fix that was being typed (kept in localStorage), with a banner saying so. */
function restoreDraft(saved) {
  enterEdit(saved);
  if (saved.note) $("note").value = saved.note;
  const discard = el("button", { type: "button", text: "Discard it" });
  discard.addEventListener("click", () => {
    dropDraft(state.tileId);
    state.mode = "view";
    state.draft = null;
    $("note").value = "";
    hideBanner();
    reloadOverlay();
    renderPanel();
    redraw();
  });
  const changed = saved.base_revision !== state.sample.revision
    ? " The sample was changed since; check it before saving." : "";
  banner("draft", `Your unsaved fix from ${formatTime(saved.saved_at)} was restored.${changed}`, discard);
}

function cancelEdit() {
  if (state.mode !== "edit") return;
  if (state.draft.changed() && !window.confirm("Discard your changes to this sample?")) return;
  dropDraft(state.tileId);
  stopDrawing();
  state.mode = "view";
  state.draft = null;
  hideBanner();
  reloadOverlay();
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
  saveDraft();
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

// ---------------------------------------------------------------- drawing masks

const maskEditor = new MaskEditor($("viewport"), $("edit-canvas"), (event) => viewer.toTile(event));
const DRAW_TOOLS = { g: "polygon", b: "brush", x: "erase" };

function syncDrawTools() {
  for (const [key, tool] of Object.entries(DRAW_TOOLS)) {
    $(`btn-tool-${key}`).setAttribute("aria-pressed", String(maskEditor.tool === tool));
  }
}

/** Draw or correct the mask of phrase `target` (an index), or a mask for a new object ("new"). */
function startDrawing(target) {
  if (state.mode !== "edit" || state.drawing) return;
  const ref = target === "new" ? null : state.draft.phrases()[target]?.segment.ref;
  const decoded = ref === null || ref === undefined ? null : overlay.masks[ref];
  state.drawing = { target };
  maskEditor.start(decoded, state.sample.height, state.sample.width);
  maskEditor.radius = Number($("brush-size").value);
  syncDrawTools();
  document.body.classList.add("drawing");
  const what = target === "new" ? "a new object" : `phrase ${target + 1}`;
  const done = el("button", { type: "button", text: "Done (Enter)" });
  done.addEventListener("click", () => finishDrawing());
  const cancel = el("button", { type: "button", text: "Cancel (Esc)" });
  cancel.addEventListener("click", () => stopDrawing());
  banner("draw", `Drawing the mask of ${what}: g polygon (click the corners, Enter or double click closes it), b brush, x eraser.`, done, cancel);
}

function stopDrawing() {
  if (!state.drawing) return;
  maskEditor.stop();
  state.drawing = null;
  document.body.classList.remove("drawing");
  hideBanner();
}

/** Keep the drawn mask: link it to its phrase, or ask the words of the new object's phrase. */
function finishDrawing() {
  if (!state.drawing) return;
  if (maskEditor.points.length >= 3) maskEditor.closePolygon();
  const { rle, area } = maskEditor.result();
  if (!area) {
    toast("The mask is empty: draw something, or cancel with Esc");
    return;
  }
  const { target } = state.drawing;
  const ref = state.sample.masks.length + state.draft.addMask(rle);
  stopDrawing();
  if (target === "new") {
    askNewObjectWords(ref);
    return;
  }
  state.draft.relink(target, ref);
  reloadOverlay();
  onDraftChange();
}

function askNewObjectWords(ref) {
  const input = el("input", { type: "text", className: "inline-phrase", "aria-label": "words of the new object", placeholder: "e.g. white car" });
  banner("draw", "Words for the new object (Enter adds it as a sentence at the end; edit the sentence after):", input);
  input.focus();
  input.addEventListener("keydown", (event) => {
    event.stopPropagation();
    if (event.key === "Enter" && input.value.trim()) {
      event.preventDefault();
      state.draft.addPhrase(input.value, ref);
      hideBanner();
      reloadOverlay();
      onDraftChange();
    } else if (event.key === "Escape") {
      hideBanner();
    }
  });
}

/** Keys while drawing; true when the key was used. */
function drawingKey(event) {
  if (!state.drawing) return false;
  if (DRAW_TOOLS[event.key]) {
    maskEditor.setTool(DRAW_TOOLS[event.key]);
    syncDrawTools();
  } else if (event.key === "Enter") {
    if (maskEditor.tool === "polygon" && maskEditor.points.length >= 3) maskEditor.closePolygon();
    else finishDrawing();
  } else if (event.key === "Escape") {
    if (maskEditor.points.length) maskEditor.setTool(maskEditor.tool); // drop the open polygon
    else stopDrawing();
  } else {
    return false;
  }
  event.preventDefault();
  return true;
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
  u: () => undo(),
  p: () => state.mode === "view" && movePhraseCursor(1),
  P: () => state.mode === "view" && movePhraseCursor(-1),
  A: () => phraseDecide(state.phraseCursor, "accept"),
  R: () => phraseDecide(state.phraseCursor, "reject"),
  E: () => phraseDecide(state.phraseCursor, "fix"),
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

// Keys that act once per press: a held key's auto-repeat is ignored, so holding `a` decides one sample.
const ONCE = new Set(["a", "r", "e", "u", "j", "k", "p", "P", "A", "R", "E", "Enter"]);

// The side panel scrolls from the keyboard (when no text box has the focus).
function scrollPanel(event) {
  const panel = $("panel");
  const page = panel.clientHeight * 0.85;
  const steps = {
    PageDown: page, PageUp: -page, " ": event.shiftKey ? -page : page, ArrowDown: 60, ArrowUp: -60,
    Home: -panel.scrollHeight, End: panel.scrollHeight,
  };
  if (!(event.key in steps)) return false;
  panel.scrollBy({ top: steps[event.key] });
  return true;
}

document.addEventListener("keydown", (event) => {
  if (document.querySelector("dialog[open]")) return;
  if (event.repeat && ONCE.has(event.key)) {
    event.preventDefault();
    return;
  }
  const typing = event.target.closest?.("input, textarea, select");
  if (!typing && drawingKey(event)) return;
  if (state.mode === "edit" && event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
    if (state.drawing) return;
    event.preventDefault();
    decide("fix");
    return;
  }
  if (typing) {
    if (event.key === "Escape") event.target.blur();
    return;
  }
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  if (event.target.closest?.("button, summary, [tabindex]") && (event.key === " " || event.key === "Enter")) return;
  if (scrollPanel(event)) {
    event.preventDefault();
    return;
  }
  const action = KEYS[event.key];
  if (!action) return;
  event.preventDefault();
  if (state.mode === "edit" && "arjkupPARE".includes(event.key)) {
    toast("Save the fix (Ctrl+Enter) or cancel it (Esc) first");
    return;
  }
  action();
});
document.addEventListener("gpx-save-fix", () => state.mode === "edit" && decide("fix"));
$("note").addEventListener("input", () => saveDraft());

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
bind("btn-users", () => openUsers());
$("user-form").addEventListener("submit", (event) => {
  event.preventDefault();
  addUser();
});
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
$("queue-filter").addEventListener("change", (event) => {
  event.target.blur();
  state.filter = event.target.value;
  sessionStorage.setItem("gpx-review-filter", state.filter);
  refreshProgress();
  if (state.mode === "view") next();
});
bind("btn-undo", () => undo());
bind("btn-add-object", () => startDrawing("new"));
for (const key of Object.keys(DRAW_TOOLS)) bind(`btn-tool-${key}`, () => drawingKey({ key, preventDefault() {} }));
$("brush-size").addEventListener("input", (event) => { maskEditor.radius = Number(event.target.value); });
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
    if (hit !== state.hover) {
      setHover(hit);
      scrollToPhrase(hit); // the phrase of the mask under the pointer comes into view
    }
  });
});
$("viewport").addEventListener("pointerleave", () => { if (state.hover !== null) setHover(null); });

// ---------------------------------------------------------------- start

// For tests: what the page thinks it is doing.
window.__gpxState = () => ({
  tileId: state.tileId, ready: state.ready, busy: state.busy, done: state.done, mode: state.mode,
  drawing: state.drawing, newMasks: state.draft ? state.draft.newMasks.length : null,
  loadToken: state.loadToken, history: state.history, pos: state.pos,
});

// For annotations/bench.py: the cost of one full overlay redraw (as on hover), in milliseconds.
window.__gpxRedraw = () => {
  const t0 = performance.now();
  redraw();
  return performance.now() - t0;
};

/** The queue filter drop-down: every flag code and phrase category of the dataset, with counts. */
async function loadFilters() {
  const select = $("queue-filter");
  const res = await getJSON("/api/queue/facets");
  if (!res.ok) return;
  const groups = [["flag_code", "flag", res.data.flag_codes], ["category", "category", res.data.categories]];
  for (const [kind, word, values] of groups) {
    if (!values.length) continue;
    const group = el("optgroup", { label: `by ${word}` });
    for (const { value, samples } of values) {
      group.append(el("option", { value: `${kind}:${value}`, text: `${word}: ${value} (${samples})` }));
    }
    select.append(group);
  }
  if (res.data.adjudicate !== null && res.data.adjudicate !== undefined) {
    select.append(el("option", { value: "adjudicate:1", text: `adjudication: reviewers disagree (${res.data.adjudicate})` }));
  }
  select.value = state.filter;
  if (select.value !== state.filter) state.filter = "";
}

async function start() {
  state.me = await whoAmI();
  $("user").textContent = state.me.user;
  document.body.dataset.role = state.me.role || "annotator";
  pruneDrafts();
  syncToolbar();
  syncActions();
  await loadFilters();
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
