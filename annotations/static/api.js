// Talking to the review server: JSON in and out, the session cookie sent automatically, and the
// session's CSRF token added to every state-changing request.

let csrfToken = null;

/** Who is logged in ({user, csrf_token}); sends the browser to the login page when nobody is. */
export async function whoAmI() {
  const response = await fetch("/api/me", { credentials: "same-origin" });
  if (response.status === 401) {
    window.location.assign("/login");
    throw new Error("not logged in");
  }
  const me = await response.json();
  csrfToken = me.csrf_token;
  return me;
}

const RETURN_KEY = "gpx-review-return";

async function handle(response) {
  if (response.status === 401) {
    // Back to this sample after logging in again (a fix being typed is kept as a draft).
    sessionStorage.setItem(RETURN_KEY, window.location.hash);
    window.location.assign("/login");
    throw new Error("session expired");
  }
  let data = null;
  const type = response.headers.get("content-type") || "";
  if (type.includes("json")) data = await response.json();
  return { ok: response.ok, status: response.status, data };
}

export async function getJSON(path) {
  return handle(await fetch(path, { credentials: "same-origin" }));
}

export async function postJSON(path, body) {
  return handle(
    await fetch(path, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrfToken || "" },
      body: JSON.stringify(body ?? {}),
    }),
  );
}

export const urls = {
  sample: (id) => `/api/samples/${encodeURIComponent(id)}`,
  image: (id, layer) => `/api/samples/${encodeURIComponent(id)}/image/${layer}`,
  decision: (id) => `/api/samples/${encodeURIComponent(id)}/decision`,
  validate: (id) => `/api/samples/${encodeURIComponent(id)}/validate`,
  events: (id) => `/api/events?tile_id=${encodeURIComponent(id)}&limit=50`,
  phraseDecision: (id, n) => `/api/samples/${encodeURIComponent(id)}/phrases/${n}/decision`,
  next: (after, filter) => `/api/queue/next${query({ after }, filter)}`,
  peek: (after, filter) => `/api/queue/peek${query({ after }, filter)}`,
  summary: (filter) => `/api/queue/summary${query({}, filter)}`,
};

/** "?after=...&flag_code=..." from params and a queue filter written "flag_code:VALUE" / "category:VALUE". */
function query(params, filter) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) if (value) search.set(key, value);
  if (filter) {
    const at = filter.indexOf(":");
    search.set(filter.slice(0, at), filter.slice(at + 1));
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}
