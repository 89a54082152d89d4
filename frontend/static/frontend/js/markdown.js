// Model output as safe Markdown: marked turns it into HTML, raw HTML in the text is shown as
// text (it is model output, not markup), and DOMPurify strips anything that could still run.
// Images that would load from another site are shown as links unless the page allows them
// (a project setting): an image from anywhere is a beacon telling its server each time a task
// is shown. The Content-Security-Policy refuses such images too.
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

let remoteImagesAllowed = false;

/** Whether this page shows images from other sites (the ranking page sets its project's choice). */
export function allowRemoteImages(allowed) { remoteImagesAllowed = Boolean(allowed); }

function isOwnImage(src) {
  if (!src) return false;
  try {
    const url = new URL(src, window.location.href);
    return url.protocol === "data:" || url.origin === window.location.origin;
  } catch {
    return false;
  }
}

export function markdownToSafeHtml(text, { remoteImages = remoteImagesAllowed } = {}) {
  const html = marked.parse(String(text ?? ""), { async: false });
  const clean = DOMPurify.sanitize(html, { USE_PROFILES: { html: true }, FORBID_TAGS: ["style", "form", "input", "button"] });
  if (remoteImages) return clean;
  // A template's content is inert: nothing in it loads while the images are swapped for links.
  const tpl = document.createElement("template");
  tpl.innerHTML = clean;
  for (const img of tpl.content.querySelectorAll("img")) {
    const src = img.getAttribute("src") || "";
    if (isOwnImage(src) && !img.hasAttribute("srcset")) continue;
    const link = document.createElement("a");
    link.href = src;
    link.className = "remote-image";
    link.textContent = `image: ${img.getAttribute("alt") || src}`;
    link.title = src;
    img.replaceWith(link);
  }
  return tpl.innerHTML;
}

/** Render `text` as sanitised Markdown into `el`. */
export function renderMarkdown(el, text, options) {
  el.classList.add("md");
  el.innerHTML = markdownToSafeHtml(text, options);
  // Links in model output open elsewhere and never carry our page as referrer.
  for (const a of el.querySelectorAll("a")) { a.target = "_blank"; a.rel = "noopener noreferrer nofollow"; }
  return el;
}
