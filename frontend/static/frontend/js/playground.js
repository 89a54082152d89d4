// Playground: chat with model versions over /v1/chat/completions (streamed), pick the sampling
// strategy, compare two versions on the same prompt, and see prompt and answer as BPE tokens.
import { api, h, items, postStream, showError } from "./api.js";
import { renderMessages } from "./chat.js";
import { renderMarkdown } from "./markdown.js";

const $ = (id) => document.getElementById(id);
let columns = []; // [{select, history, el}]
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

function buildColumns() {
  const compare = $("compare").checked;
  $("model-b-field").hidden = !compare;
  const selects = compare ? [$("model-a"), $("model-b")] : [$("model-a")];
  columns = selects.map((select, i) => {
    const el = h("section", { class: "panel", "aria-label": `Conversation ${i + 1}` },
      h("h2", { style: "margin-top:0", class: "small muted col-title" }, select.selectedOptions[0]?.textContent || ""),
      h("div", { class: "chat history" }),
      h("div", { class: "tokens-box" }));
    return { select, history: [], el };
  });
  $("columns").className = `pg-cols ${compare ? "" : "single"}`;
  $("columns").replaceChildren(...columns.map((c) => c.el));
}

function messagesFor(col) {
  const sys = $("system").value.trim();
  return [...(sys ? [{ role: "system", content: sys }] : []), ...col.history];
}

// Whitespace pieces would be invisible boxes: show spaces, newlines and tabs as symbols.
const visible = (piece) => piece.replace(/ /g, "␣").replace(/\n/g, "↵").replace(/\t/g, "⇥") || "∅";

async function tokenView(col, model, promptText, answer) {
  const box = col.el.querySelector(".tokens-box");
  box.replaceChildren();
  if (!$("show-tokens").checked) return;
  const [p, a] = await Promise.all([
    api("/api/tokenize", { method: "POST", body: { model, text: promptText } }),
    api("/api/tokenize", { method: "POST", body: { model, text: answer } }),
  ]);
  const toks = (list, cls) => list.map((t) => h("span", { class: `tok ${cls}`, title: `id ${t.id}: ${JSON.stringify(t.token ?? t.piece)}` },
    h("span", { class: "piece" }, visible(t.piece)), h("span", { class: "id" }, String(t.id))));
  box.append(
    h("h3", {}, `Prompt: ${p.tokens.length} tokens`), h("div", { class: "tokens", "aria-label": "Prompt tokens" }, toks(p.tokens, "prompt")),
    h("h3", {}, `Answer: ${a.tokens.length} tokens`), h("div", { class: "tokens", "aria-label": "Answer tokens" }, toks(a.tokens, "answer")));
}

async function runColumn(col, userText, signal) {
  const model = col.select.value;
  col.history.push({ role: "user", content: userText });
  const history = col.el.querySelector(".history");
  renderMessages(history, messagesFor(col));
  const body = h("div", { class: "pg-out" });
  const bubble = h("div", { class: "msg assistant", "aria-live": "polite" }, h("div", { class: "role" }, `assistant · ${model}`), body);
  history.append(bubble);
  let answer = "";
  let pending = false;
  await postStream("/v1/chat/completions", { model, messages: messagesFor(col), stream: true, ...samplingParams() }, (chunk) => {
    const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
    if (delta && delta.content) {
      answer += delta.content;
      // Re-render at most once per frame however fast tokens arrive.
      if (!pending) { pending = true; requestAnimationFrame(() => { pending = false; renderMarkdown(body, answer); }); }
    }
  }, { signal });
  renderMarkdown(body, answer);
  bubble.dataset.done = "true";
  col.history.push({ role: "assistant", content: answer });
  await tokenView(col, model, userText, answer);
}

$("ask").addEventListener("submit", async (e) => {
  e.preventDefault();
  const text = $("message").value.trim();
  if (!text || controller) return;
  $("message").value = "";
  $("notice").hidden = true;
  controller = new AbortController();
  $("send").disabled = true;
  $("stop").hidden = false;
  try {
    // One column after the other: the server loads a model version on its first request, and
    // two different versions loading at the same moment in one process trip over each other
    // (transformers' loader is not thread-safe), so the comparison asks them in turn.
    for (const c of columns) await runColumn(c, text, controller.signal);
  } catch (err) {
    if (err.name !== "AbortError") showError($("notice"), err);
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

async function loadModels() {
  const data = await api("/v1/models");
  const models = items(data.data || data);
  const option = (m) => h("option", { value: m.id }, m.id === String(m.version_id) ? `#${m.id} ${m.name || ""}${m.promoted ? " (promoted)" : ""}` : `${m.id} → #${m.version_id}`);
  $("model-a").replaceChildren(...models.map(option));
  $("model-b").replaceChildren(...models.map(option));
  if (models.length > 1) $("model-b").selectedIndex = 1;
  if (!models.length) showError($("notice"), new Error("No model is available yet: import a base model first."));
}

syncStrategyFields();
await loadModels().catch((err) => showError($("notice"), err));
buildColumns();
