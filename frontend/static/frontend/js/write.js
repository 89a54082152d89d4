// Writing mode: write the ideal answer to one prompt, with a live sanitised preview.
import { api, pageData, showError, toast } from "./api.js";
import { renderMessages } from "./chat.js";
import { allowRemoteImages, renderMarkdown } from "./markdown.js";

const data = pageData("page-data");
allowRemoteImages(data.allow_remote_images);
const $ = (id) => document.getElementById(id);
renderMessages($("prompt"), data.prompt.messages);

let pending;
$("answer").addEventListener("input", () => {
  clearTimeout(pending);
  // Re-render after a short pause, not on every key: long answers stay smooth to type.
  pending = setTimeout(() => { renderMarkdown($("preview"), $("answer").value); $("preview").classList.remove("muted"); }, 150);
});

async function save() {
  const text = $("answer").value;
  if (!text.trim()) return showError($("error"), new Error("Write an answer first."));
  $("save").disabled = true;
  try {
    await api(`/api/prompts/${data.prompt.id}/demonstrations`, { method: "POST", body: { text, based_on_response: null, offer: data.prompt.offer } });
    toast("Answer saved");
    window.location.assign(window.location.pathname); // the server picks the next prompt
  } catch (err) {
    $("save").disabled = false;
    showError($("error"), err);
  }
}

$("save").addEventListener("click", save);
$("answer").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); save(); }
});
$("answer").focus();
