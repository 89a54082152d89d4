// Prompts as chat history: one look for plain prompts and chat messages on every page.
import { h } from "./api.js";
import { renderMarkdown } from "./markdown.js";

/** The prompt of an API task as {id, messages}: tasks may carry a string or a prompt object. */
export function promptOf(task) {
  const p = task.prompt;
  if (typeof p === "string") return { id: task.prompt_id ?? null, messages: task.messages || [{ role: "user", content: p }] };
  if (p && typeof p === "object") {
    const messages = p.messages && p.messages.length ? p.messages : [{ role: "user", content: p.text ?? "" }];
    return { id: p.id ?? task.prompt_id ?? null, messages };
  }
  return { id: task.prompt_id ?? null, messages: task.messages || [] };
}

/** Render chat messages into `el`; every message body is sanitised Markdown. */
export function renderMessages(el, messages) {
  el.replaceChildren(...messages.map((m) => {
    const body = h("div");
    renderMarkdown(body, m.content);
    return h("div", { class: `msg ${m.role}` }, h("div", { class: "role" }, m.role), body);
  }));
}
