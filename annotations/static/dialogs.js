// The dialogs: per-annotator statistics and bulk accept over a filter.

import { getJSON, postJSON } from "./api.js";
import { clear, el } from "./dom.js";

const $ = (id) => document.getElementById(id);

export function openDialog(id) {
  const dialog = $(id);
  if (!dialog.open) dialog.showModal();
}

export async function openStats() {
  const res = await getJSON("/api/stats");
  if (!res.ok) return;
  const body = clear($("stats-body"));
  for (const a of res.data.annotators) {
    const cells = [a.name, a.today, a.accept, a.reject, a.fix, a.bulk_accept, a.conflict];
    body.append(el("tr", {}, ...cells.map((v) => el("td", { text: String(v) }))));
  }
  const totals = Object.entries(res.data.decisions).map(([k, v]) => `${k} ${v}`).join(" · ");
  $("stats-totals").textContent = totals ? `Current decisions: ${totals}` : "No decisions yet.";
  openDialog("stats-dialog");
}

function bulkRequest(dryRun) {
  const severities = [...document.querySelectorAll("#bulk-form input[name=severity]:checked")].map((i) => i.value);
  return {
    severities, dry_run: dryRun, queued_only: $("bulk-queued").checked,
    flag_code: $("bulk-code").value.trim() || null,
  };
}

/** Dry run: how many unreviewed samples match; arms the confirm button with that exact request. */
export async function bulkCount() {
  const request = bulkRequest(true);
  if (!request.severities.length) {
    $("bulk-result").textContent = "Pick at least one severity.";
    return;
  }
  const res = await postJSON("/api/bulk-accept", request);
  if (!res.ok) {
    $("bulk-result").textContent = `Failed (${res.status}).`;
    return;
  }
  $("bulk-result").textContent = `${res.data.count} unreviewed samples match.`;
  const go = $("bulk-go");
  go.disabled = res.data.count === 0;
  go.textContent = `Accept ${res.data.count} samples`;
  go.dataset.request = JSON.stringify({ ...request, dry_run: false });
}

export async function bulkGo() {
  const go = $("bulk-go");
  if (!go.dataset.request) return;
  go.disabled = true;
  const res = await postJSON("/api/bulk-accept", JSON.parse(go.dataset.request));
  delete go.dataset.request;
  $("bulk-result").textContent = res.ok ? `Accepted ${res.data.count} samples.` : `Failed (${res.status}).`;
}
