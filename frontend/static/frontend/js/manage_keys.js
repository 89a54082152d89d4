// Admin: create API keys for /v1 (the key is shown once), list and revoke them.
import { api, h, items, showError, toast } from "./api.js";

const $ = (id) => document.getElementById(id);
const when = (t) => (t ? new Date(t).toLocaleString() : "–");

async function load() {
  const keys = items(await api("/api/keys"));
  $("keys").replaceChildren(...(keys.length ? keys.map((k) => h("tr", {},
    h("td", {}, k.name), h("td", {}, h("code", {}, k.prefix || "")), h("td", {}, k.created_by || "–"),
    h("td", {}, when(k.created_at)), h("td", {}, when(k.last_used_at)),
    h("td", {}, k.revoked_at ? h("span", { class: "badge failed" }, "revoked") :
      h("button", { type: "button", class: "danger", "aria-label": `Revoke key ${k.name}`, onclick: () => revoke(k) }, "Revoke")))) :
    [h("tr", {}, h("td", { colspan: 6, class: "muted" }, "No keys yet."))]));
}

async function revoke(key) {
  if (!confirm(`Revoke the key "${key.name}"? Programs using it stop working at once.`)) return;
  try {
    await api(`/api/keys/${key.id}`, { method: "DELETE" });
    toast("Key revoked");
    load();
  } catch (err) {
    showError($("notice"), err);
  }
}

$("key-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  try {
    const k = await api("/api/keys", { method: "POST", body: { name: $("key-name").value } });
    $("key-form").reset();
    $("new-key").replaceChildren(h("div", {}, `Key "${k.name}" created. Copy it now: it is not shown again.`),
      h("div", { class: "key-secret" }, k.key));
    $("new-key").hidden = false;
    load();
  } catch (err) {
    showError($("notice"), err);
  }
});

load().catch((err) => showError($("notice"), err));
