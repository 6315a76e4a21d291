// Fixing a sample: a draft of the caption as sentences of text and grounded phrases.
//
// A phrase is linked to one of the sample's original masks by index (`ref`). The annotator can edit a
// whole sentence (its markup) or one phrase's words in place, re-link a phrase to another mask, or drop
// a phrase (its words stay, its mask goes). The draft is sent as {gcg_caption, mask_refs}; the server
// rebuilds phrases and masks from that and re-validates.

import { clear, el } from "./dom.js";
import { maskChip, paintPhrase } from "./caption.js";

const PHRASE = /<p>\s*([\s\S]*?)\s*<\/p>\s*\[SEG\]/g;
const SENTENCE_END = /[.!?]+["')\]]*\s+/g;

/** Split GCG markup into text and phrase segments; phrase i takes refs[i] (null when missing). */
export function parseGcg(gcg, refs = []) {
  const segments = [];
  let cursor = 0;
  let n = 0;
  for (const match of gcg.matchAll(PHRASE)) {
    if (match.index > cursor) segments.push({ type: "text", text: gcg.slice(cursor, match.index) });
    segments.push({ type: "phrase", text: match[1], ref: n < refs.length ? refs[n] : null });
    n += 1;
    cursor = match.index + match[0].length;
  }
  if (cursor < gcg.length) segments.push({ type: "text", text: gcg.slice(cursor) });
  return segments;
}

export function segmentsToGcg(segments) {
  return segments.map((s) => (s.type === "text" ? s.text : `<p> ${s.text} </p> [SEG]`)).join("");
}

/** Group segments into sentences; a text segment is cut after ". ", "! ", "? " (phrases never are). */
export function splitSentences(segments) {
  const sentences = [];
  let current = [];
  for (const segment of segments) {
    if (segment.type !== "text") {
      current.push(segment);
      continue;
    }
    let cursor = 0;
    for (const match of segment.text.matchAll(SENTENCE_END)) {
      const end = match.index + match[0].length;
      current.push({ type: "text", text: segment.text.slice(cursor, end) });
      sentences.push(current);
      current = [];
      cursor = end;
    }
    if (cursor < segment.text.length) current.push({ type: "text", text: segment.text.slice(cursor) });
  }
  if (current.length) sentences.push(current);
  return sentences;
}

export class FixDraft {
  /**
   * A draft of (gcg, refs, newMasks); `from` is the caption it started from when that differs (a restored
   * draft). A ref below the sample's number of original masks is an original mask; ref n + k is
   * newMasks[k], a mask drawn in the page (COCO RLE).
   */
  constructor(gcg, refs, from = null, newMasks = []) {
    this.sentences = splitSentences(parseGcg(gcg, refs));
    this.newMasks = [...(newMasks || [])];
    this.initial = from
      ? JSON.stringify(new FixDraft(from.gcg_caption, from.mask_refs, null, from.new_masks).payload())
      : JSON.stringify(this.payload());
    this.pending = null; // text being typed in a sentence or phrase editor, not applied yet
    this.onInput = null; // called on every keystroke (the page keeps a copy of the draft)
  }

  /** Apply text that was being typed when the draft was saved (see `pending`). */
  applyPending(pending) {
    if (!pending || typeof pending.text !== "string") return;
    if (pending.kind === "sentence" && pending.index < this.sentences.length) this.replaceSentence(pending.index, pending.text);
    else if (pending.kind === "phrase" && pending.index < this.phrases().length && pending.text.trim()) {
      this.setPhraseText(pending.index, pending.text);
    }
  }

  /** Phrase segments in order, with the sentence they belong to. */
  phrases() {
    const out = [];
    this.sentences.forEach((sentence, si) => {
      for (const segment of sentence) if (segment.type === "phrase") out.push({ si, segment });
    });
    return out;
  }

  payload() {
    const segments = this.sentences.flat();
    return {
      gcg_caption: segmentsToGcg(segments),
      mask_refs: segments.filter((s) => s.type === "phrase").map((s) => s.ref),
      new_masks: this.newMasks,
    };
  }

  changed() {
    return JSON.stringify(this.payload()) !== this.initial;
  }

  setPhraseText(n, text) {
    this.phrases()[n].segment.text = text.replace(/\s+/g, " ").trim();
  }

  relink(n, ref) {
    this.phrases()[n].segment.ref = ref;
  }

  /** Keep a drawn mask; returns its position among the drawn masks. */
  addMask(rle) {
    this.newMasks.push(rle);
    return this.newMasks.length - 1;
  }

  /** A new grounded phrase for a missed object, as a sentence of its own at the end of the caption. */
  addPhrase(words, ref) {
    const text = words.replace(/\s+/g, " ").trim();
    this.sentences.push([{ type: "text", text: " " }, { type: "phrase", text, ref }, { type: "text", text: "." }]);
  }

  /** Un-ground phrase n: its words become plain text, its mask leaves the sample. */
  drop(n) {
    const { si, segment } = this.phrases()[n];
    const sentence = this.sentences[si];
    const at = sentence.indexOf(segment);
    sentence.splice(at, 1, { type: "text", text: segment.text });
    this.sentences[si] = mergeText(sentence);
  }

  /** The markup of sentence si without its trailing whitespace (what the sentence editor shows). */
  sentenceGcg(si) {
    return segmentsToGcg(this.sentences[si]).replace(/\s+$/, "");
  }

  /** Replace sentence si by edited markup; its phrases keep their masks in order, new ones are unlinked. */
  replaceSentence(si, gcg) {
    const old = this.sentences[si];
    const trailing = segmentsToGcg(old).match(/\s*$/)[0];
    const refs = old.filter((s) => s.type === "phrase").map((s) => s.ref);
    const text = gcg.replace(/\s+$/, "");
    this.sentences[si] = text ? mergeText(parseGcg(text + trailing, refs)) : [];
    this.sentences = this.sentences.filter((s) => s.length);
  }
}

function mergeText(segments) {
  const out = [];
  for (const segment of segments) {
    const last = out[out.length - 1];
    if (segment.type === "text" && last && last.type === "text") last.text += segment.text;
    else out.push({ ...segment });
  }
  return out;
}

/**
 * The caption in edit mode: one block per sentence. Clicking a sentence opens its markup in a text
 * box; clicking a phrase edits its words in place. `onChange` is called after every edit.
 */
export function renderDraftCaption(container, draft, { onChange, onHover }) {
  clear(container);
  let phraseNumber = 0;
  draft.sentences.forEach((sentence, si) => {
    const block = el("div", { className: "sentence", title: "Click to edit this sentence", tabindex: 0 });
    for (const segment of sentence) {
      if (segment.type === "text") {
        block.append(segment.text);
        continue;
      }
      const n = phraseNumber;
      phraseNumber += 1;
      const span = el("span", { className: "phrase editable", title: "Click to edit this phrase", text: segment.text });
      paintPhrase(span, segment.ref);
      span.addEventListener("mouseenter", () => onHover(segment.ref));
      span.addEventListener("mouseleave", () => onHover(null));
      span.addEventListener("click", (event) => {
        event.stopPropagation();
        editPhraseInPlace(span, draft, n, onChange);
      });
      block.append(span);
    }
    block.append(el("button", { className: "icon", type: "button", title: "Edit sentence", text: "✎", tabindex: -1 }));
    const open = () => editSentence(block, draft, si, onChange);
    block.addEventListener("click", open);
    block.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && event.target === block) {
        event.preventDefault();
        open();
      }
    });
    container.append(block);
  });
}

function editPhraseInPlace(span, draft, n, onChange) {
  const input = el("input", { className: "inline-phrase", value: draft.phrases()[n].segment.text, "aria-label": "phrase" });
  input.size = Math.max(4, input.value.length + 1);
  span.replaceWith(input);
  input.focus();
  input.select();
  let done = false;
  const finish = (commit) => {
    if (done) return;
    done = true;
    draft.pending = null;
    if (commit && input.value.trim()) draft.setPhraseText(n, input.value);
    onChange();
  };
  input.addEventListener("keydown", (event) => {
    event.stopPropagation();
    if (event.key === "Enter" && !(event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      finish(true);
    } else if (event.key === "Escape") {
      event.preventDefault();
      finish(false);
    } else if (event.key === "Enter") {
      finish(true); // Ctrl+Enter: commit, and let the page save the fix
      document.dispatchEvent(new CustomEvent("gpx-save-fix"));
    }
  });
  input.addEventListener("blur", () => finish(true));
  input.addEventListener("input", () => {
    draft.pending = { kind: "phrase", index: n, text: input.value };
    draft.onInput?.();
  });
}

function editSentence(block, draft, si, onChange) {
  const box = el("textarea", { className: "sentence-editor", rows: 3, "aria-label": "sentence markup" });
  box.value = draft.sentenceGcg(si);
  const hint = el("div", { className: "muted small", text: "Enter applies · Esc cancels · phrases are written <p> words </p> [SEG]" });
  const wrapper = el("div", { className: "sentence editing" }, box, hint);
  block.replaceWith(wrapper);
  box.focus();
  let done = false;
  const finish = (commit) => {
    if (done) return;
    done = true;
    draft.pending = null;
    if (commit) draft.replaceSentence(si, box.value);
    onChange();
  };
  box.addEventListener("input", () => {
    draft.pending = { kind: "sentence", index: si, text: box.value };
    draft.onInput?.();
  });
  box.addEventListener("keydown", (event) => {
    event.stopPropagation();
    if (event.key === "Enter" && !event.shiftKey && !(event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      finish(true);
    } else if (event.key === "Escape") {
      event.preventDefault();
      finish(false);
    } else if (event.key === "Enter") {
      finish(true);
      document.dispatchEvent(new CustomEvent("gpx-save-fix"));
    }
  });
  box.addEventListener("blur", () => finish(true));
}

export function maskOptionLabel(masks, i) {
  return `#${i + 1} ${masks[i].label}`;
}

/** The one <datalist> of the sample's masks that every mask picker searches. */
function maskDatalist(masks) {
  let list = document.getElementById("mask-options");
  if (!list) {
    list = el("datalist", { id: "mask-options" });
    document.body.append(list);
  }
  const key = JSON.stringify(masks.map((m) => m.label));
  if (list.dataset.key !== key) {
    clear(list);
    masks.forEach((_, i) => list.append(el("option", { value: maskOptionLabel(masks, i) })));
    list.dataset.key = key;
  }
  return list;
}

/**
 * Which mask a picker's text names: "" is no mask, "#12" / "12" is mask 12, other text is the first
 * mask whose label contains it (case-insensitive). Returns undefined when nothing matches.
 */
export function resolveMask(masks, text) {
  const value = text.trim();
  if (!value) return null;
  const number = value.match(/^#?(\d+)\b/);
  if (number) {
    const i = Number(number[1]) - 1;
    return i >= 0 && i < masks.length ? i : undefined;
  }
  const needle = value.toLowerCase();
  const found = masks.findIndex((m, i) => maskOptionLabel(masks, i).toLowerCase().includes(needle));
  return found >= 0 ? found : undefined;
}

/** A searchable mask picker: type a number, a category or words of a phrase; the list narrows. */
function maskPicker(masks, ref, n, onPick) {
  maskDatalist(masks);
  const current = ref === null || ref === undefined ? "" : maskOptionLabel(masks, ref);
  const input = el("input", {
    className: "relink", list: "mask-options", value: current, "aria-label": `mask of phrase ${n + 1}`,
    placeholder: "no mask · type # or words", title: "Re-link to another mask: type its number, category or words",
    autocomplete: "off", spellcheck: "false",
  });
  input.addEventListener("focus", () => input.select());
  input.addEventListener("change", () => {
    const picked = resolveMask(masks, input.value);
    if (picked === undefined) {
      input.classList.add("invalid");
      input.setCustomValidity("no such mask");
      return;
    }
    input.classList.remove("invalid");
    input.setCustomValidity("");
    onPick(picked);
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Escape") {
      input.value = current;
      input.classList.remove("invalid");
    }
  });
  return input;
}

/**
 * Phrase rows in edit mode: mask chip, the words (editable), the linked mask (re-link), and a drop
 * button. `masks` describes the original masks for the picker: [{label}] by index.
 */
export function renderDraftPhrases(container, draft, masks, { onChange, onHover, onEditMask = null }) {
  clear(container);
  const phrases = draft.phrases();
  phrases.forEach(({ segment }, n) => {
    const input = el("input", { className: "phrase-input", value: segment.text, "aria-label": `phrase ${n + 1}` });
    input.addEventListener("change", () => {
      if (input.value.trim()) draft.setPhraseText(n, input.value);
      onChange();
    });
    input.addEventListener("input", () => {
      if (input.value.trim()) draft.setPhraseText(n, input.value);
      draft.onInput?.();
    });
    input.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
        if (input.value.trim()) draft.setPhraseText(n, input.value);
        onChange();
      }
    });
    const picker = maskPicker(masks, segment.ref, n, (ref) => {
      draft.relink(n, ref);
      onChange();
    });
    const drop = el("button", {
      className: "drop", type: "button", text: "Drop", title: "Drop this phrase's grounding: keep the words, remove its mask",
    });
    drop.addEventListener("click", () => {
      draft.drop(n);
      onChange();
    });
    const draw = onEditMask
      ? el("button", { className: "draw", type: "button", text: "Mask…", title: "Draw or correct this phrase's mask", "aria-label": `draw mask of phrase ${n + 1}` })
      : null;
    draw?.addEventListener("click", (event) => {
      event.currentTarget.blur();
      onEditMask(n);
    });
    const row = el("li", { className: "phrase-row editing", dataset: { phrase: n } }, maskChip(segment.ref), input, picker, draw, drop);
    row.addEventListener("mouseenter", () => onHover(segment.ref));
    row.addEventListener("mouseleave", () => onHover(null));
    container.append(row);
  });
  if (!phrases.length) container.append(el("li", { className: "muted", text: "No grounded phrases left." }));
}
