// Model output as safe Markdown: marked turns it into HTML, raw HTML in the text is shown as
// text (it is model output, not markup), and DOMPurify strips anything that could still run.
import { Marked } from "../vendor/marked.esm.js";
import DOMPurify from "../vendor/purify.es.js";

const escapeHtml = (s) => s.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);

const marked = new Marked({
  gfm: true,
  breaks: false,
  renderer: {
    // A `<script>` or `<img onerror=…>` written by a model is displayed, not interpreted.
    html(token) { return escapeHtml(token.raw ?? token.text ?? ""); },
  },
});

export function markdownToSafeHtml(text) {
  const html = marked.parse(String(text ?? ""), { async: false });
  return DOMPurify.sanitize(html, { USE_PROFILES: { html: true }, FORBID_TAGS: ["style", "form", "input", "button"] });
}

/** Render `text` as sanitised Markdown into `el`. */
export function renderMarkdown(el, text) {
  el.classList.add("md");
  el.innerHTML = markdownToSafeHtml(text);
  // Links in model output open elsewhere and never carry our page as referrer.
  for (const a of el.querySelectorAll("a")) { a.target = "_blank"; a.rel = "noopener noreferrer nofollow"; }
  return el;
}
