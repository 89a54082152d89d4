// Admin: create users, list them, and show a project's per-annotator agreement and gold accuracy.
import { api, fmtNum, fmtPct, h, items, showError, toast } from "./api.js";

const $ = (id) => document.getElementById(id);

async function loadUsers() {
  const users = items(await api("/api/users"));
  $("users").replaceChildren(...users.map((u) => h("tr", {},
    h("td", {}, u.username), h("td", {}, u.role),
    h("td", {}, u.is_active ? "active" : h("span", { class: "badge failed" }, "deactivated")),
    h("td", {},
      // The user's name is in each button's text for screen readers (not an aria-label, which
      // would make these buttons labels of the "Password" field's kind).
      h("button", { type: "button", class: u.is_active ? "danger" : "",
        onclick: () => updateUser(u, { is_active: !u.is_active }, u.is_active ? `Deactivate ${u.username}? Their tokens are revoked and they are signed out.` : null) },
        u.is_active ? "Deactivate" : "Reactivate", h("span", { class: "visually-hidden" }, ` ${u.username}`)), " ",
      h("button", { type: "button", onclick: () => resetPassword(u) }, "Reset password",
        h("span", { class: "visually-hidden" }, ` of ${u.username}`))))));
}

async function updateUser(user, change, question) {
  if (question && !confirm(question)) return;
  try {
    await api(`/api/users/${user.id}`, { method: "PATCH", body: change });
    toast("User updated");
    loadUsers();
  } catch (err) {
    showError($("users-error"), err);
  }
}

function resetPassword(user) {
  const password = prompt(`New password for ${user.username} (at least 8 characters). Their tokens and sessions end.`);
  if (password) updateUser(user, { password });
}

$("user-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  try {
    await api("/api/users", { method: "POST", body: { username: $("username").value, password: $("password").value, role: $("role").value } });
    $("user-form").reset();
    $("user-error").hidden = true;
    toast("User created");
    loadUsers();
  } catch (err) {
    showError($("user-error"), err);
  }
});

const seconds = (ms) => (ms === null || ms === undefined ? "–" : `${(ms / 1000).toFixed(1)} s`);
const stat = (value, label) => h("div", {}, h("div", { class: "stat" }, value), h("div", { class: "muted small" }, label));

async function loadStats() {
  const id = $("project").value;
  if (!id) return;
  const s = await api(`/api/projects/${id}/stats`);
  $("summary").replaceChildren(
    stat(String(s.rankings), "rankings"), stat(String(s.skips), "skips"),
    stat(fmtNum(s.agreement.krippendorff_alpha), "Krippendorff's alpha"),
    stat(fmtPct(s.agreement.pairwise_rate), "pairwise agreement"),
    stat(fmtPct(s.gold.accuracy), `gold accuracy (${s.gold.attempted} gold tasks)`),
    stat(seconds(s.median_time_ms), "median time per task"));
  $("alpha-method").textContent = s.agreement.method ? `Alpha: ${s.agreement.method}.` : "";
  if (!s.annotators.length) {
    $("stats").replaceChildren(h("tr", {}, h("td", { colspan: 7, class: "muted" }, "Nobody has ranked in this project yet.")));
    return;
  }
  $("stats").replaceChildren(...s.annotators.map((a) => h("tr", {},
    h("td", {}, a.username),
    h("td", {}, String(a.rankings)),
    h("td", {}, String(a.skips)),
    h("td", {}, a.agreement.compared ? `${fmtPct(a.agreement.rate)} of ${a.agreement.compared}` : "–"),
    h("td", {}, a.gold.attempted ? `${fmtPct(a.gold.accuracy)} of ${a.gold.attempted}` : "–"),
    h("td", {}, seconds(a.median_time_ms)),
    h("td", { class: "small" }, Object.entries(a.flags).map(([k, v]) => `${k}: ${v}`).join(", ") || "–"))));
}

$("project").addEventListener("change", () => {
  history.replaceState(null, "", `?project=${$("project").value}`);
  loadStats();
});
loadUsers();
loadStats().catch((err) => $("summary").replaceChildren(h("div", { class: "notice error" }, err.message)));
