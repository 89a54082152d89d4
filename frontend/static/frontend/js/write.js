// Writing mode: write the ideal answer to one prompt, with a live sanitised preview; saving
// confirms on the next prompt's page.
import { api, clearErrorOnEdit, h, pageData, showError } from "./api.js";
import { renderMessages } from "./chat.js";
import { allowRemoteImages, renderMarkdown } from "./markdown.js";

const data = pageData("page-data");
allowRemoteImages(data.allow_remote_images);
const $ = (id) => document.getElementById(id);
const SAVED_KEY = "rlhf.write.saved";

function showSaved() {
  const saved = sessionStorage.getItem(SAVED_KEY);
  if (!saved) return;
  sessionStorage.removeItem(SAVED_KEY);
  $("saved").replaceChildren(h("strong", {}, "Answer saved."),
    ` Your answer to prompt ${saved} is stored as a demonstration${data.prompt ? "; here is the next prompt." : "."}`);
  $("saved").hidden = false;
}

async function save() {
  const text = $("answer").value;
  if (!text.trim()) return showError($("error"), new Error("Write an answer first."));
  $("save").disabled = true;
  try {
    await api(`/api/prompts/${data.prompt.id}/demonstrations`, { method: "POST", body: { text, based_on_response: null, offer: data.prompt.offer } });
    // The next prompt is a new page (the server picks it): the confirmation travels with it.
    sessionStorage.setItem(SAVED_KEY, String(data.prompt.id));
    window.location.assign(window.location.pathname);
  } catch (err) {
    $("save").disabled = false;
    showError($("error"), err);
  }
}

function start() {
  renderMessages($("prompt"), data.prompt.messages);
  clearErrorOnEdit($("answer").parentElement, $("error"));
  let pending;
  $("answer").addEventListener("input", () => {
    clearTimeout(pending);
    // Re-render after a short pause, not on every key: long answers stay smooth to type.
    pending = setTimeout(() => { renderMarkdown($("preview"), $("answer").value); $("preview").classList.remove("muted"); }, 150);
  });
  $("save").addEventListener("click", save);
  $("answer").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); save(); }
  });
  $("answer").focus();
}

showSaved();
if (data.prompt) start();
