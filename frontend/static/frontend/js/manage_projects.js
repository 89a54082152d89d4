// Admin: create a project through the API, then open its page.
import { api, showError } from "./api.js";

const form = document.getElementById("project-form");
form.addEventListener("submit", async (e) => {
  e.preventDefault();
  const f = new FormData(form);
  const body = {
    name: f.get("name"),
    guidelines: f.get("guidelines"),
    responses_per_task: Number(f.get("responses_per_task")),
    rankings_per_task: Number(f.get("rankings_per_task")),
    allow_ties: f.get("allow_ties") === "on",
  };
  if (f.get("slug")) body.slug = f.get("slug");
  try {
    const project = await api("/api/projects", { method: "POST", body });
    window.location.assign(`/manage/projects/${project.id}`);
  } catch (err) {
    showError(document.getElementById("form-error"), err);
  }
});
