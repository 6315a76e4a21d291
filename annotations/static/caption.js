// The sample panel in view mode: caption with highlighted phrases, phrase list, flags, priors and
// the sample's history. Everything from the data goes in as text (see dom.js).

import { clear, el } from "./dom.js";
import { maskColour } from "./overlay.js";

/** A coloured chip with the mask number (1-based), or a grey "–" for an unlinked phrase. */
export function maskChip(ref) {
  if (ref === null || ref === undefined) return el("span", { className: "chip unlinked", text: "–" });
  const colour = maskColour(ref);
  return el("span", { className: "chip", text: String(ref + 1), style: { backgroundColor: colour.css } });
}

/** Style a phrase element with its mask's colour. */
export function paintPhrase(node, ref) {
  if (ref === null || ref === undefined) {
    node.classList.add("unlinked");
    return;
  }
  const colour = maskColour(ref);
  node.style.backgroundColor = colour.soft;
  node.style.borderBottomColor = colour.css;
}

function hoverHandlers(node, ref, { onHover, onPick }) {
  node.addEventListener("mouseenter", () => onHover(ref));
  node.addEventListener("mouseleave", () => onHover(null));
  node.addEventListener("click", () => onPick(ref));
}

/**
 * Render `caption` with each phrase (start/end offsets into it) highlighted in the colour of its mask
 * (`refs[i]` is the mask index of phrase i). Returns a list of problems with the spans, if any.
 */
export function renderCaption(container, caption, phrases, refs, handlers) {
  clear(container);
  const problems = [];
  const order = phrases
    .map((p, i) => ({ ...p, index: i }))
    .sort((a, b) => a.start - b.start || a.end - b.end);
  let cursor = 0;
  for (const phrase of order) {
    const { start, end, index } = phrase;
    const valid = Number.isInteger(start) && Number.isInteger(end) && start >= cursor && end <= caption.length
      && start < end;
    if (!valid) {
      problems.push(`phrase ${index + 1} "${phrase.text}" has an invalid span [${start}, ${end})`);
      continue;
    }
    if (caption.slice(start, end) !== phrase.text) {
      problems.push(`phrase ${index + 1} "${phrase.text}" does not match the caption text at [${start}, ${end})`);
    }
    container.append(caption.slice(cursor, start));
    const ref = refs[index];
    const span = el("span", { className: "phrase", dataset: { ref: ref ?? "", phrase: index } },
      caption.slice(start, end), el("sup", { text: ref === null || ref === undefined ? "–" : String(ref + 1) }));
    paintPhrase(span, ref);
    hoverHandlers(span, ref, handlers);
    container.append(span);
    cursor = end;
  }
  container.append(caption.slice(cursor));
  return problems;
}

/** Phrase list in view mode: mask chip, text, category, kind, instance ids. */
export function renderPhraseList(container, phrases, refs, handlers) {
  clear(container);
  phrases.forEach((phrase, i) => {
    const ref = refs[i];
    const ids = (phrase.instance_ids || []).join(", ");
    const row = el(
      "li",
      { className: "phrase-row", dataset: { ref: ref ?? "" } },
      maskChip(ref),
      el("span", { className: "phrase-text", text: phrase.text }),
      el("span", { className: "muted", text: `${phrase.category || "?"} · ${phrase.kind || "instance"}` }),
      ids ? el("span", { className: "muted small", text: `id ${ids}` }) : null,
    );
    hoverHandlers(row, ref, handlers);
    container.append(row);
  });
  if (!phrases.length) container.append(el("li", { className: "muted", text: "No grounded phrases." }));
}

export function renderFlags(container, flags) {
  clear(container);
  if (!flags.length) {
    container.append(el("li", { className: "muted", text: "No flags (spot check)." }));
    return;
  }
  for (const flag of flags) {
    container.append(
      el(
        "li",
        { className: `flag sev-${flag.severity}` },
        el("span", { className: `badge sev-${flag.severity}`, text: flag.severity }),
        el("code", { text: flag.code }),
        el("span", { className: "flag-detail", text: flag.detail }),
      ),
    );
  }
}

function fmt(value, digits = 1) {
  if (value === null || value === undefined) return "";
  if (typeof value === "number") return Number.isInteger(value) ? String(value) : value.toFixed(digits);
  if (typeof value === "boolean") return value ? "yes" : "";
  return String(value);
}

const PRIOR_COLUMNS = [
  ["mark", "mark", (r) => fmt(r.mark)],
  ["id", "instance", (r) => fmt(r.instance_id)],
  ["category", "category", (r) => fmt(r.category)],
  ["size", "size class", (r) => fmt(r.size_class)],
  ["position", "position", (r) => fmt(r.position)],
  ["L×W m", "length × width in metres", (r) => (r.length_m || r.width_m ? `${fmt(r.length_m) || "–"}×${fmt(r.width_m) || "–"}` : "")],
  ["orient.", "orientation in degrees", (r) => fmt(r.orientation_deg, 0)],
  ["vis.", "visible fraction", (r) => (r.visible_fraction === null ? "" : `${Math.round(100 * r.visible_fraction)}%`)],
  ["trunc.", "truncated by the tile border", (r) => fmt(r.truncated)],
  ["cluster", "cluster id", (r) => fmt(r.cluster_id)],
];

/** Priors table (instances.parquet rows); rows are tagged with their instance id for highlighting. */
export function renderPriors(table, priors) {
  clear(table);
  if (!priors.length) {
    table.append(el("tbody", {}, el("tr", {}, el("td", { className: "muted", text: "No priors for this tile." }))));
    return;
  }
  // Columns that are empty for every instance of the tile are left out.
  const columns = PRIOR_COLUMNS.filter(([, , f]) => priors.some((row) => f(row) !== ""));
  table.append(el("thead", {}, el("tr", {}, ...columns.map(([h, title]) => el("th", { text: h, title })))));
  const body = el("tbody");
  for (const row of priors) {
    body.append(el("tr", { dataset: { instance: row.instance_id } }, ...columns.map(([, , f]) => el("td", { text: f(row) }))));
  }
  table.append(body);
}

/** Highlight the priors rows of the given instance ids. */
export function highlightPriors(table, instanceIds) {
  const wanted = new Set((instanceIds || []).map(String));
  for (const tr of table.querySelectorAll("tbody tr")) tr.classList.toggle("hot", wanted.has(tr.dataset.instance));
}

/** "2025-01-31 14:05" in local time. */
export function formatTime(iso) {
  const d = new Date(iso);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

/** The sample's event history, newest first: who did what, and the caption before -> after for fixes. */
export function renderHistory(container, events) {
  clear(container);
  if (!events.length) {
    container.append(el("li", { className: "muted", text: "Not reviewed yet." }));
    return;
  }
  for (const event of events) {
    const when = formatTime(event.at);
    const item = el(
      "li",
      { className: `event action-${event.action}` },
      el("span", { className: "event-action", text: event.action.replace("_", " ") }),
      el("span", { text: ` by ${event.actor}` }),
      el("span", { className: "muted", text: ` · ${when} · rev ${event.base_revision ?? "?"} → ${event.revision ?? "?"}` }),
    );
    const before = event.before?.gcg_caption;
    const after = event.after?.gcg_caption;
    if (after !== undefined && after !== before) {
      item.append(el("div", { className: "diff-before", text: before ?? "" }), el("div", { className: "diff-after", text: after ?? "" }));
    }
    if (event.after?.note) item.append(el("div", { className: "muted", text: `note: ${event.after.note}` }));
    container.append(item);
  }
}
