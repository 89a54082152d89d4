// Playground: chat with model versions over /v1/chat/completions (streamed), pick the sampling
// strategy, compare two versions on the same prompt at once, see each answer's finish reason,
// usage, latency and version, the tokens the model saw and produced, and the request as code.
import { api, h, items, showError, toast } from "./api.js";
import { renderMarkdown } from "./markdown.js";
import { codeSnippets } from "./playground_code.js";
import { runTurn, showTokens, turnBubble } from "./playground_turn.js";

const $ = (id) => document.getElementById(id);
let columns = []; // [{select, history, el}]
let models = []; // /v1/models
let controller = null;

function samplingParams() {
  const strategy = $("strategy").value;
  // The API picks the sampler from the parameters: temperature 0 is greedy, top_k selects
  // top-k, top_p < 1 selects nucleus, and neither means plain multinomial sampling.
  const p = { max_tokens: Number($("max-tokens").value) };
  if (strategy === "greedy") p.temperature = 0;
  else {
    p.temperature = Number($("temperature").value);
    if (strategy === "top_k") p.top_k = Number($("top-k").value);
    if (strategy === "top_p") p.top_p = Number($("top-p").value);
    if (strategy === "multinomial") p.top_p = 1;
  }
  if ($("seed").value !== "") p.seed = Number($("seed").value);
  return p;
}

function syncStrategyFields() {
  const s = $("strategy").value;
  $("temperature").disabled = s === "greedy";
  $("top-k").disabled = s !== "top_k";
  $("top-p").disabled = s !== "top_p";
}

/** "#3 policy-a" for a version id, from /v1/models. */
function versionName(id) {
  const m = models.find((x) => x.id === String(id));
  return m ? `#${id} ${m.name || ""}`.trim() : `#${id}`;
}

/** What the user picked, and the version it points at today ("latest → #3 policy-a"). */
function modelLabel(modelId) {
  const m = models.find((x) => x.id === modelId);
  if (!m || m.id === String(m.version_id)) return versionName(modelId);
  return `${m.id} → ${versionName(m.version_id)}`;
}

function buildColumns() {
  const compare = $("compare").checked;
  $("model-b-field").hidden = !compare;
  const selects = compare ? [$("model-a"), $("model-b")] : [$("model-a")];
  columns = selects.map((select, i) => {
    const el = h("section", { class: "panel", "aria-label": `Conversation ${i + 1}` },
      h("h2", { style: "margin-top:0", class: "small muted col-title" }, select.selectedOptions[0]?.textContent || ""),
      h("div", { class: "chat history" }),
      h("div", { class: "tokens-box" }));
    return { select, history: [], el, last: null }; // last: the newest turn, for the token view
  });
  $("columns").className = `pg-cols ${compare ? "" : "single"}`;
  $("columns").replaceChildren(...columns.map((c) => c.el));
  renderCode();
}

function messagesFor(col) {
  const sys = $("system").value.trim();
  return [...(sys ? [{ role: "system", content: sys }] : []), ...col.history];
}

function messageBubble(role, content) {
  const body = h("div");
  renderMarkdown(body, content);
  return h("div", { class: `msg ${role}` }, h("div", { class: "role" }, role), body);
}

function requestBody(col) {
  return { model: col.select.value, messages: messagesFor(col), stream: true, stream_options: { include_usage: true },
    return_token_ids: true, return_prompt_text: true, ...samplingParams() };
}

/** Every column gets the user's message, then all columns stream their answers at the same time. */
async function send(text) {
  controller = new AbortController();
  const { signal } = controller;
  const turns = columns.map((col) => {
    col.history.push({ role: "user", content: text });
    const history = col.el.querySelector(".history");
    const sys = $("system").value.trim();
    const shown = history.querySelector(".msg.system");
    if (sys) shown ? shown.replaceWith(messageBubble("system", sys)) : history.prepend(messageBubble("system", sys));
    else if (shown) shown.remove();
    const bubble = turnBubble(modelLabel(col.select.value));
    history.append(messageBubble("user", text), bubble.el);
    return { col, bubble, request: requestBody(col) };
  });
  const answers = await Promise.all(turns.map(({ bubble, request }) => runTurn({ bubble, request, signal, versionName })));
  // A stopped or failed answer stays as far as it got, so the conversations stay in step.
  turns.forEach(({ col, request }, i) => {
    col.history.push({ role: "assistant", content: answers[i].content });
    col.last = { model: request.model, turn: answers[i] };
  });
  renderCode();
  await tokenViews();
}

/** Each column's token view of its newest turn, or none when "Show tokens" is off. */
function tokenViews() {
  return Promise.all(columns.map((col) => {
    const box = col.el.querySelector(".tokens-box");
    if (!$("show-tokens").checked || !col.last) return box.replaceChildren();
    return showTokens(box, col.last.model, col.last.turn).catch((err) => showError($("notice"), err));
  }));
}

$("ask").addEventListener("submit", async (e) => {
  e.preventDefault();
  const text = $("message").value.trim();
  if (!text || controller) return;
  $("message").value = "";
  $("notice").hidden = true;
  $("send").disabled = true;
  $("stop").hidden = false;
  try {
    await send(text);
  } catch (err) {
    showError($("notice"), err);
  } finally {
    controller = null;
    $("send").disabled = false;
    $("stop").hidden = true;
  }
});
$("message").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); $("ask").requestSubmit(); }
});
$("stop").addEventListener("click", () => controller && controller.abort());
$("clear").addEventListener("click", buildColumns);
$("compare").addEventListener("change", buildColumns);
$("model-a").addEventListener("change", buildColumns);
$("model-b").addEventListener("change", buildColumns);
$("strategy").addEventListener("change", syncStrategyFields);
$("show-tokens").addEventListener("change", tokenViews);

// ---- view code ---------------------------------------------------------------------------------

function renderCode() {
  if ($("code-panel").hidden || !columns.length) return;
  const col = columns[0];
  const draft = $("message").value.trim();
  const messages = [...messagesFor(col), ...(draft ? [{ role: "user", content: draft }] : [])];
  const body = { model: col.select.value, messages: messages.length ? messages : [{ role: "user", content: "Hello!" }], ...samplingParams() };
  const { curl, python } = codeSnippets(`${location.origin}/v1`, body);
  $("code-curl").textContent = curl;
  $("code-python").textContent = python;
  $("code-note").replaceChildren(
    `The next request${columns.length > 1 ? " of Conversation 1" : ""} with the settings above: model "${body.model}" (${modelLabel(body.model)}). `,
    "Put an API key in ", h("code", {}, "RLHF_API_KEY"), " (admins make keys under ", h("a", { href: "/manage/keys" }, "API keys"), ").");
}

$("view-code").addEventListener("click", () => {
  const panel = $("code-panel");
  panel.hidden = !panel.hidden;
  $("view-code").setAttribute("aria-expanded", String(!panel.hidden));
  renderCode();
});
$("settings").addEventListener("input", renderCode);
$("settings").addEventListener("change", renderCode);
$("message").addEventListener("input", renderCode);
for (const button of document.querySelectorAll("[data-copy]")) {
  button.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText($(button.dataset.copy).textContent);
      toast("Copied");
    } catch {
      toast("Copying was refused: select the text instead");
    }
  });
}

async function loadModels() {
  models = items((await api("/v1/models")).data);
  const option = (m) => h("option", { value: m.id }, m.id === String(m.version_id) ? `#${m.id} ${m.name || ""}${m.promoted ? " (promoted)" : ""}` : `${m.id} → #${m.version_id} ${m.name || ""}`);
  $("model-a").replaceChildren(...models.map(option));
  $("model-b").replaceChildren(...models.map(option));
  if (models.length > 1) $("model-b").selectedIndex = 1;
  if (!models.length) showError($("notice"), new Error("No model is available yet: import a base model first."));
}

syncStrategyFields();
await loadModels().catch((err) => showError($("notice"), err));
buildColumns();
