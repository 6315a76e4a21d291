// Log in with a name and password; the server answers with an HttpOnly session cookie.

const form = document.getElementById("login-form");
const error = document.getElementById("login-error");

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  error.textContent = "";
  const button = document.getElementById("login-button");
  button.disabled = true;
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
      sessionStorage.removeItem("gpx-review-nav");
      window.location.assign("/");
      return;
    }
    const data = await response.json().catch(() => ({}));
    error.textContent = typeof data.detail === "string" ? data.detail : `Login failed (${response.status}).`;
  } catch {
    error.textContent = "The server cannot be reached.";
  } finally {
    button.disabled = false;
  }
});
