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

const PHRASE_STATUS_TEXT = { accepted: "✓ accepted", rejected: "✗ rejected", fixed: "✎ fixed" };

/**
 * Phrase list in view mode: mask chip, text, category, kind, instance ids, and the phrase's own
 * decision. `decided` maps phrase index -> {status, text}; `cursor` is the selected phrase (or null);
 * `onPhrase(i, action)` is called by the accept / reject / fix buttons (only when `phraseActions`).
 */
export function renderPhraseList(container, phrases, refs, handlers, options = {}) {
  const { decided = {}, cursor = null, phraseActions = false, onPhrase = () => {} } = options;
  clear(container);
  phrases.forEach((phrase, i) => {
    const ref = refs[i];
    const ids = (phrase.instance_ids || []).join(", ");
    const state = decided[String(i)];
    const row = el(
      "li",
      {
        className: `phrase-row${cursor === i ? " cursor" : ""}${state ? ` decided-${state.status}` : ""}`,
        dataset: { ref: ref ?? "", phrase: i },
      },
      maskChip(ref),
      el("span", { className: "phrase-text", text: state?.status === "fixed" ? state.text : phrase.text }),
      el("span", { className: "muted", text: `${phrase.category || "?"} · ${phrase.kind || "instance"}` }),
      ids ? el("span", { className: "muted small", text: `id ${ids}` }) : null,
      state ? el("span", { className: `phrase-status status-${state.status}`, text: PHRASE_STATUS_TEXT[state.status] || state.status }) : null,
    );
    if (phraseActions) {
      const buttons = el("span", { className: "phrase-actions" });
      for (const [action, label, title] of [
        ["accept", "✓", "Accept this phrase (Shift+A)"],
        ["reject", "✗", "Reject this phrase: keep its words, drop its mask (Shift+R)"],
        ["fix", "✎", "Fix this phrase's words (Shift+E)"],
      ]) {
        const button = el("button", { type: "button", className: `mini ${action}`, text: label, title, "aria-label": `${action} phrase ${i + 1}` });
        button.addEventListener("click", (event) => {
          event.stopPropagation();
          event.currentTarget.blur();
          onPhrase(i, action);
        });
        buttons.append(button);
      }
      row.append(buttons);
    }
    hoverHandlers(row, ref, handlers);
    container.append(row);
  });
  if (!phrases.length) container.append(el("li", { className: "muted", text: "No grounded phrases." }));
}

const SEVERITY_ORDER = { error: 0, warning: 1, info: 2 };
const severityRank = (severity) => SEVERITY_ORDER[severity] ?? 3;

/**
 * Group flags by the phrase they name (sample-level flags first), each group sorted by severity and
 * the groups ordered by their worst flag. Flags without the `phrase` field (older datasets) are
 * sample-level. Returns [{phrase: index|null, flags: [...], worst}].
 */
export function groupFlags(flags) {
  const groups = new Map();
  for (const flag of flags) {
    const key = Number.isInteger(flag.phrase) ? flag.phrase : null;
    if (!groups.has(key)) groups.set(key, []);
    groups.get(key).push(flag);
  }
  const out = [];
  for (const [phrase, list] of groups) {
    list.sort((a, b) => severityRank(a.severity) - severityRank(b.severity) || a.code.localeCompare(b.code));
    out.push({ phrase, flags: list, worst: severityRank(list[0].severity) });
  }
  out.sort((a, b) => (a.phrase === null ? -1 : 0) - (b.phrase === null ? -1 : 0) || a.worst - b.worst
    || (a.phrase ?? -1) - (b.phrase ?? -1));
  return out;
}

/** "2 errors · 5 warnings · 140 info" for a list of flags. */
export function flagSummary(flags) {
  const counts = { error: 0, warning: 0, info: 0 };
  for (const flag of flags) counts[flag.severity] = (counts[flag.severity] || 0) + 1;
  const parts = [];
  if (counts.error) parts.push(`${counts.error} error${counts.error > 1 ? "s" : ""}`);
  if (counts.warning) parts.push(`${counts.warning} warning${counts.warning > 1 ? "s" : ""}`);
  if (counts.info) parts.push(`${counts.info} info`);
  return parts.join(" · ");
}

/**
 * The flags panel: a summary, then one group per phrase (sample-level first), worst first. Clicking a
 * flag (or Enter on it) calls `onFlag(flag)`; groups with only info flags start folded when there
 * are many flags.
 */
export function renderFlags(container, flags, phrases = [], { onFlag = () => {} } = {}) {
  clear(container);
  if (!flags.length) {
    container.append(el("li", { className: "muted", text: "No flags (spot check)." }));
    return;
  }
  container.append(el("li", { className: "flag-summary", text: flagSummary(flags) }));
  const many = flags.length > 20;
  for (const group of groupFlags(flags)) {
    const phrase = group.phrase === null ? null : phrases[group.phrase];
    const title = group.phrase === null
      ? "Sample"
      : `Phrase ${group.phrase + 1}${phrase ? ` “${phrase.text}”` : " (not in this sample)"}`;
    const details = el("details", { className: "flag-group", dataset: { phrase: group.phrase ?? "" } });
    details.open = !many || group.worst <= 1;
    const summary = el("summary", {},
      el("span", { className: "flag-group-title", text: title }),
      el("span", { className: "muted small", text: ` ${flagSummary(group.flags)}` }));
    details.append(summary);
    const list = el("ul", { className: "flag-list" });
    for (const flag of group.flags) {
      const item = el(
        "li",
        { className: `flag sev-${flag.severity}`, tabindex: 0, title: group.phrase === null ? "" : "Show this phrase's mask" },
        el("span", { className: `badge sev-${flag.severity}`, text: flag.severity }),
        el("code", { text: flag.code }),
        el("span", { className: "flag-detail", text: flag.detail }),
      );
      item.addEventListener("click", () => onFlag(flag));
      item.addEventListener("keydown", (event) => {
        if (event.key === "Enter") {
          event.preventDefault();
          onFlag(flag);
        }
      });
      list.append(item);
    }
    details.append(list);
    container.append(el("li", { className: "flag-group-item" }, details));
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
