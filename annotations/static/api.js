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

async function handle(response) {
  if (response.status === 401) {
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
  next: (after) => `/api/queue/next${after ? `?after=${encodeURIComponent(after)}` : ""}`,
  peek: (after) => `/api/queue/peek${after ? `?after=${encodeURIComponent(after)}` : ""}`,
};
