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
  const report = await getJSON("/api/report");
  const r = report.ok ? report.data : null;
  $("stats-agreement").textContent = r && r.pairs
    ? `Two reviewers: ${r.pairs} samples, agreement ${(100 * r.agreement).toFixed(1)}%, Cohen's kappa ${r.kappa === null ? "–" : r.kappa.toFixed(3)}; adjudication ${r.adjudication.open} open`
    : "";
  openDialog("stats-dialog");
}

/** What went wrong with a request, in words (FastAPI's input errors come as a list). */
function failure(res) {
  const detail = res.data?.detail;
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail) && detail.length) return `invalid ${detail.map((d) => (d.loc || []).slice(-1)[0]).join(", ")}`;
  return `failed (${res.status})`;
}

/** Leads manage users: list, add, change role, deactivate or reactivate. */
export async function openUsers() {
  await renderUsers();
  openDialog("users-dialog");
}

async function renderUsers() {
  const res = await getJSON("/api/users");
  if (!res.ok) return;
  const body = clear($("users-body"));
  for (const user of res.data.users) {
    const other = user.role === "lead" ? "annotator" : "lead";
    const role = el("button", { type: "button", text: `make ${other}` });
    role.addEventListener("click", () => changeUser(user.name, { role: other }));
    const active = el("button", { type: "button", text: user.active ? "deactivate" : "reactivate" });
    active.addEventListener("click", () => changeUser(user.name, { active: !user.active }));
    body.append(el("tr", { dataset: { user: user.name } },
      el("td", { text: user.name }), el("td", { text: user.role }), el("td", { text: user.active ? "yes" : "no" }),
      el("td", {}, role, " ", active)));
  }
}

async function changeUser(name, change) {
  const res = await postJSON(`/api/users/${encodeURIComponent(name)}`, change);
  $("users-result").textContent = res.ok ? `${name}: ${Object.entries(change).map(([k, v]) => `${k} ${v}`).join(", ")}` : failure(res);
  await renderUsers();
}

export async function addUser() {
  const request = {
    name: $("new-user-name").value.trim(), password: $("new-user-password").value, role: $("new-user-role").value,
  };
  const res = await postJSON("/api/users", request);
  $("users-result").textContent = res.ok ? `${request.name} added (${request.role})` : failure(res);
  if (res.ok) {
    $("new-user-name").value = "";
    $("new-user-password").value = "";
  }
  await renderUsers();
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
