// Everyone: make, list and revoke your own API tokens (a key is shown once); change your password.
import { api, h, items, showError, toast } from "./api.js";

const $ = (id) => document.getElementById(id);
const when = (t) => (t ? new Date(t).toLocaleString() : "–");

async function load() {
  const tokens = items(await api("/api/auth/tokens"));
  $("tokens").replaceChildren(...(tokens.length ? tokens.map((t) => h("tr", {},
    h("td", {}, t.name), h("td", {}, h("code", {}, `${t.prefix}…`)), h("td", {}, when(t.created_at)),
    h("td", {}, when(t.expires_at)), h("td", {}, when(t.last_used_at)),
    h("td", {}, h("button", { type: "button", class: "danger", "aria-label": `Revoke token ${t.name}`, onclick: () => revoke(t) }, "Revoke")))) :
    [h("tr", {}, h("td", { colspan: 6, class: "muted" }, "No tokens."))]));
}

async function revoke(token) {
  if (!confirm(`Revoke the token "${token.name}"? Programs using it stop working at once.`)) return;
  try {
    await api(`/api/auth/tokens/${token.id}`, { method: "DELETE" });
    toast("Token revoked");
    load();
  } catch (err) {
    showError($("notice"), err);
  }
}

$("token-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  try {
    const t = await api("/api/auth/tokens", { method: "POST", body: { name: $("token-name").value } });
    $("token-form").reset();
    $("new-token").replaceChildren(h("div", {}, "Token made. Copy it now: it is not shown again."),
      h("div", { class: "key-secret" }, t.token));
    $("new-token").hidden = false;
    load();
  } catch (err) {
    showError($("notice"), err);
  }
});

$("password-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  try {
    await api("/api/me/password", { method: "POST", body: { old_password: $("old-password").value, new_password: $("new-password").value } });
    $("password-form").reset();
    $("password-error").hidden = true;
    toast("Password changed; your API tokens were revoked");
    load();
  } catch (err) {
    showError($("password-error"), err);
  }
});

load().catch((err) => showError($("notice"), err));
