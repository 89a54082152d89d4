// One assistant turn of the playground: streamed from /v1/chat/completions into its bubble, with a
// waiting sign until the first words; then its finish reason, usage, latency and model version, and
// the token view of the very ids the model saw and produced (vLLM's return_token_ids fields, which
// our own engine answers too, so the page works the same when /v1 forwards to vLLM).
import { api, h, postStream } from "./api.js";
import { renderMarkdown } from "./markdown.js";

const seconds = (ms) => `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s`;
const tokens = (n) => `${n} token${n === 1 ? "" : "s"}`;

/** The version a /v1 answer names in system_fingerprint ("model-version-3" -> 3), else null. */
export const fingerprintVersion = (fp) => {
  const m = /^model-version-(\d+)$/.exec(fp || "");
  return m ? Number(m[1]) : null;
};

/** An assistant bubble about to be answered: it shows the waiting sign until the first words. */
export function turnBubble(versionLabel) {
  const body = h("div", { class: "pg-out" },
    h("div", { class: "pg-wait", role: "status" }, h("span", { class: "spinner", "aria-hidden": "true" }), "Waiting for the model…"));
  const version = h("span", { class: "pg-version", title: "The model version that answered" }, versionLabel);
  const meta = h("div", { class: "pg-meta", "aria-label": "Answer details" });
  const el = h("div", { class: "msg assistant", "aria-live": "polite", "aria-busy": "true", "data-status": "waiting" },
    h("div", { class: "role" }, "assistant ", version), body, meta);
  return { el, body, version, meta };
}

/**
 * Stream one answer into `bubble`. Never rejects: Stop (an abort) keeps the partial answer, marked
 * "stopped"; an error is shown in the bubble. Resolves to the turn: content, status, finish reason,
 * usage, timings, the prompt's and the answer's token ids and the version that answered.
 */
export async function runTurn({ bubble, request, signal, versionName }) {
  const turn = { content: "", status: "done", finish: null, usage: null, error: null, version: null,
    promptIds: null, promptText: null, ids: [], started: performance.now(), firstAt: null, endAt: null };
  let pending = false;
  // "streaming" is set when the first words are on the page, not when they arrive: the waiting sign
  // and the status never disagree.
  const paint = () => {
    renderMarkdown(bubble.body, turn.content);
    if (bubble.el.dataset.status === "waiting") bubble.el.dataset.status = "streaming";
  };
  try {
    await postStream("/v1/chat/completions", request, (chunk) => {
      if (chunk.error) throw new Error(chunk.error.message || "The model failed while answering.");
      if (chunk.prompt_token_ids) turn.promptIds = chunk.prompt_token_ids;
      if (typeof chunk.prompt_text === "string") turn.promptText = chunk.prompt_text;
      if (chunk.usage) turn.usage = chunk.usage;
      const version = fingerprintVersion(chunk.system_fingerprint);
      if (version !== null && version !== turn.version) {
        turn.version = version;
        bubble.version.textContent = versionName(version);
      }
      for (const choice of chunk.choices || []) {
        if (choice.token_ids) turn.ids.push(...choice.token_ids);
        if (choice.finish_reason) turn.finish = choice.finish_reason;
        const text = choice.delta && choice.delta.content;
        if (!text) continue;
        if (turn.firstAt === null) turn.firstAt = performance.now();
        turn.content += text;
        // Re-render at most once per frame however fast tokens arrive.
        if (!pending) { pending = true; requestAnimationFrame(() => { pending = false; paint(); }); }
      }
    }, { signal });
  } catch (err) {
    turn.status = err.name === "AbortError" ? "stopped" : "error";
    turn.error = turn.status === "error" ? err : null;
  }
  turn.endAt = performance.now();
  if (turn.content) paint();
  else if (turn.status === "error") bubble.body.replaceChildren(); // the error below says it all
  else bubble.body.replaceChildren(h("p", { class: "muted small" }, turn.status === "stopped" ? "(stopped before the first word)" : "(no text)"));
  bubble.el.dataset.status = turn.status;
  bubble.el.dataset.finish = turn.finish || "";
  bubble.el.removeAttribute("aria-busy");
  bubble.el.dataset.done = "true";
  bubble.meta.replaceChildren(...metaParts(turn));
  return turn;
}

function metaParts(turn) {
  const parts = [];
  if (turn.status === "stopped") {
    parts.push(h("span", { class: "badge cut", title: "You pressed Stop: the answer so far stays in the conversation." }, "stopped"));
  } else if (turn.status === "error") {
    parts.push(h("span", { class: "badge failed" }, "error"), h("span", { class: "pg-error", role: "alert" }, turn.error.message));
  } else if (turn.finish === "length") {
    parts.push(h("span", { class: "badge cut", title: "The answer reached Max tokens and stops mid-way." }, "cut off at max tokens"));
  }
  if (turn.finish) parts.push(h("span", { "data-field": "finish" }, `finish: ${turn.finish}`));
  if (turn.usage) {
    const u = turn.usage;
    parts.push(h("span", { "data-field": "usage", title: "tokens counted by the server" },
      `${u.prompt_tokens} prompt + ${u.completion_tokens} completion = ${u.total_tokens} tokens`));
  } else if (turn.ids.length) {
    parts.push(h("span", { "data-field": "usage" }, `${tokens(turn.ids.length)} received`));
  }
  const total = turn.endAt - turn.started;
  const timing = [turn.firstAt !== null ? `first token ${seconds(turn.firstAt - turn.started)}` : null, `total ${seconds(total)}`];
  const generated = turn.usage ? turn.usage.completion_tokens : turn.ids.length;
  // Over the whole answer: chunks may arrive in bursts, so a rate between the first and the last is noise.
  if (generated > 0 && total > 0) timing.push(`${(generated / (total / 1000)).toFixed(1)} tokens/s`);
  parts.push(h("span", { "data-field": "latency", title: "measured in this browser, from Send" }, timing.filter(Boolean).join(" · ")));
  return parts;
}

// Whitespace and control characters would be invisible or empty boxes: show them as symbols.
const visible = (piece) => piece.replace(/ /g, "␣").replace(/\n/g, "↵").replace(/\t/g, "⇥")
  .replace(/[\u0000-\u001f\u007f-\u009f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).toUpperCase().padStart(2, "0")}`) || "∅";

// Byte-level BPE (GPT-2, SmolLM2) writes each byte as one printable character in its vocabulary:
// 33-126, 161-172 and 174-255 as themselves, the other bytes as 256, 257, … in order.
const BYTE_OF = (() => {
  const map = new Map();
  let next = 256;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174;
    map.set(String.fromCharCode(printable ? b : next++), b);
  }
  return map;
})();

/** The bytes a vocabulary entry stands for, or null when it is not a byte-level entry. */
function bytesOf(token) {
  const sentencepiece = /^<0x([0-9A-Fa-f]{2})>$/.exec(token || "");
  if (sentencepiece) return [parseInt(sentencepiece[1], 16)];
  const out = [];
  for (const ch of token || "") {
    if (!BYTE_OF.has(ch)) return null;
    out.push(BYTE_OF.get(ch));
  }
  return out.length ? out : null;
}

function tokenSpans(list, cls) {
  return list.map((t) => {
    // A token holding part of a character split over several tokens decodes to U+FFFD: show its bytes.
    const bytes = t.piece.includes("\ufffd") ? bytesOf(t.token) : null;
    const label = bytes ? bytes.map((b) => b.toString(16).toUpperCase().padStart(2, "0")).join(" ") : visible(t.piece);
    return h("span", { class: `tok ${cls}${bytes ? " partial" : ""}`, title: `id ${t.id}: ${JSON.stringify(t.token ?? t.piece)}${bytes ? " (bytes of a character split over tokens)" : ""}` },
      h("span", { class: "piece" }, label), h("span", { class: "id" }, String(t.id)));
  });
}

const piecesOf = async (model, ids) => (ids.length ? (await api("/api/tokenize", { method: "POST", body: { model, ids } })).tokens : []);

/** The token view of a turn: the prompt as the model saw it (chat template applied) and the ids it produced. */
export async function showTokens(box, model, turn) {
  box.replaceChildren();
  if (!turn.promptIds) {
    if (turn.status !== "error") box.append(h("p", { class: "muted small" }, "The server sent no token ids with this answer."));
    return;
  }
  const on = turn.version !== null ? String(turn.version) : model;
  const [prompt, answer] = await Promise.all([piecesOf(on, turn.promptIds), piecesOf(on, turn.ids)]);
  const answerTitle = turn.status === "stopped" ? `Answer, stopped: ${tokens(answer.length)} so far` : `Answer: ${answer.length} generated ${answer.length === 1 ? "token" : "tokens"}`;
  box.append(...[
    h("h3", {}, `Prompt as the model saw it: ${tokens(prompt.length)}`),
    h("div", { class: "tokens", "aria-label": "Prompt tokens" }, tokenSpans(prompt, "prompt")),
    turn.promptText !== null ? h("details", { class: "prompt-text" }, h("summary", { class: "small" }, "Prompt text after the chat template"),
      h("pre", { "aria-label": "Templated prompt" }, turn.promptText)) : null,
    h("h3", {}, answerTitle),
    h("div", { class: "tokens", "aria-label": "Answer tokens" }, tokenSpans(answer, "answer")),
    [...prompt, ...answer].some((t) => t.piece.includes("\ufffd"))
      ? h("p", { class: "small muted" }, "Hex in italics: the bytes of a character that is split over several tokens.") : null,
  ].filter(Boolean));
}
