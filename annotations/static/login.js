// Log in with a name and password; the server answers with an HttpOnly session cookie.

const form = document.getElementById("login-form");
const error = document.getElementById("login-error");

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  error.textContent = "";
  const button = document.getElementById("login-button");
  button.disabled = true;
  let held = false;
  try {
    const response = await fetch("/api/login", {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({
        name: document.getElementById("name").value.trim(),
        password: document.getElementById("password").value,
      }),
    });
    if (response.ok) {
      const back = sessionStorage.getItem("gpx-review-return") || "";
      sessionStorage.removeItem("gpx-review-return");
      if (!back) sessionStorage.removeItem("gpx-review-nav");
      window.location.assign(`/${back.startsWith("#tile=") ? back : ""}`);
      return;
    }
    const data = await response.json().catch(() => ({}));
    error.textContent = typeof data.detail === "string" ? data.detail : `Login failed (${response.status}).`;
    const wait = Number(response.headers.get("Retry-After"));
    if (response.status === 429 && wait > 0) {
      held = true; // growing delays per address: the button comes back when trying again is allowed
      setTimeout(() => { button.disabled = false; }, wait * 1000);
    }
  } catch {
    error.textContent = "The server cannot be reached.";
  } finally {
    if (!held) button.disabled = false;
  }
});
