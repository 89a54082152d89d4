// Talking to the service's JSON API from the pages: session cookie + CSRF header, one error shape.

const csrfToken = () => document.querySelector('meta[name="csrf-token"]')?.content || "";

/** An API error: `code` and `details` come from the service's {"error": {...}} body. */
export class ApiError extends Error {
  constructor(status, body) {
    const err = (body && body.error) || {};
    super(err.message || `request failed (${status})`);
    this.status = status;
    this.code = err.code || "http_" + status;
    this.details = err.details ?? null;
  }
}

/**
 * fetch() a JSON endpoint. `body` may be a plain object (sent as JSON) or FormData.
 * Resolves to the parsed body (null for 204); rejects with ApiError.
 */
export async function api(path, { method = "GET", body, signal, headers = {} } = {}) {
  const init = { method, signal, credentials: "same-origin", headers: { Accept: "application/json", ...headers } };
  if (method !== "GET" && method !== "HEAD") init.headers["X-CSRFToken"] = csrfToken();
  if (body instanceof FormData) init.body = body;
  else if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const res = await fetch(path, init);
  if (res.status === 204) return null;
  const text = await res.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (!res.ok) throw new ApiError(res.status, data);
  return data;
}

/** A POST that streams Server-Sent Events; calls onEvent(parsed JSON) per `data:` line until [DONE]. */
export async function postStream(path, body, onEvent, { signal } = {}) {
  const res = await fetch(path, {
    method: "POST", signal, credentials: "same-origin",
    headers: { "Content-Type": "application/json", Accept: "text/event-stream", "X-CSRFToken": csrfToken() },
    body: JSON.stringify(body),
  });
  if (!res.ok) {
    let data = null;
    try { data = await res.json(); } catch { /* not JSON */ }
    throw new ApiError(res.status, data);
  }
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    // Events are separated by a blank line; a chunk may end half way through one.
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      for (const line of event.split("\n")) {
        if (!line.startsWith("data:")) continue;
        const payload = line.slice(5).trim();
        if (payload === "[DONE]") return;
        onEvent(JSON.parse(payload));
      }
    }
  }
}

/** Results of list endpoints may come bare or paginated ({results: [...]}). */
export const items = (data) => (Array.isArray(data) ? data : (data && (data.results || data.items)) || []);

/** Data the server put in the page with json_script. */
export const pageData = (id) => JSON.parse(document.getElementById(id).textContent);

let toastTimer;
export function toast(message) {
  const el = document.getElementById("toast");
  if (!el) return;
  el.textContent = message;
  el.classList.add("show");
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => el.classList.remove("show"), 2200);
}

/** Small element builder: h("p", {class: "x"}, "text", child). Strings become text nodes, never HTML. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** Show an ApiError (with per-line details when present) inside `box`. */
export function showError(box, err) {
  box.replaceChildren();
  box.hidden = false;
  box.className = "notice error";
  box.setAttribute("role", "alert");
  box.append(h("div", {}, err.message || String(err)));
  const lines = err.details && Array.isArray(err.details.errors) ? err.details.errors : null;
  if (lines) {
    box.append(h("ul", {}, lines.map((e) => h("li", {}, e.line !== undefined ? `line ${e.line}: ${e.error || e.message}` : e.error || e.message || JSON.stringify(e)))));
  }
}

export const fmtNum = (x, digits = 3) => (x === null || x === undefined ? "–" : Number(x).toFixed(digits).replace(/\.?0+$/, ""));
export const fmtPct = (x) => (x === null || x === undefined ? "–" : `${(100 * x).toFixed(1)}%`);

/** A metric value a person can read: 3 significant digits, "8e-6" for tiny or huge ones (not "8.000000E-6"). */
export function fmtMetric(x) {
  if (x === null || x === undefined || x === "") return "–";
  if (typeof x !== "number") return String(x);
  if (!Number.isFinite(x)) return String(x);
  if (Number.isInteger(x) && Math.abs(x) < 1e6) return x.toLocaleString("en-US");
  const a = Math.abs(x);
  if (a !== 0 && (a < 1e-3 || a >= 1e6)) return x.toExponential(2).replace(/\.?0+e/, "e").replace("e+", "e");
  if (a >= 1000) return Math.round(x).toLocaleString("en-US");
  return String(Number(x.toPrecision(3)));
}

/** Hide an error shown in `box` as soon as the user edits anything in `form`: a message about a
 * value that has since been fixed is worse than none. */
export function clearErrorOnEdit(form, box) {
  const clear = () => { if (!box.hidden && box.classList.contains("error")) { box.hidden = true; box.replaceChildren(); } };
  form.addEventListener("input", clear);
  form.addEventListener("change", clear);
}
