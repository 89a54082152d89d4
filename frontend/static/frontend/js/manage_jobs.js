// Admin: launch a job from a form built from its kind's config fields, and list the project's jobs.
import { api, clearErrorOnEdit, h, items, showError } from "./api.js";
import { badge, FINAL, jobDuration, producedLink, progressBar, progressParts } from "./jobs_common.js";
import { LaunchForm } from "./launch_form.js";

const $ = (id) => document.getElementById(id);

const project = () => $("project").value;

const form = new LaunchForm({ kindSelect: $("kind"), fieldsBox: $("config-fields"), jsonBox: $("config"),
  jsonToggle: $("config-json"), helpBox: $("config-help") });

function showKind() {
  $("reward-field").hidden = !(form.kind && form.kind.inputs.includes("reward_model"));
}

async function loadModels() {
  if (!project()) return;
  const models = items(await api(`/api/models`));
  const mine = models.filter((m) => m.project === null || String(m.project) === project());
  const fill = (select, kind, first) => select.replaceChildren(h("option", { value: "" }, first),
    ...mine.filter((m) => m.kind === kind).map((m) => h("option", { value: m.id }, `#${m.id} ${m.name}${m.promoted ? " (promoted)" : ""}`)));
  fill($("policy"), "policy", "the promoted policy");
  fill($("reward"), "reward", "the newest reward model");
}

function progressCell(j) {
  const { stage, steps, left } = progressParts(j);
  return h("td", { class: "progress-cell" },
    h("div", { class: "row" }, progressBar(j, `Job ${j.id} progress`), h("span", { class: "small stat-inline" }, steps)),
    stage || left ? h("div", { class: "small muted" }, [stage, left].filter(Boolean).join(" · ")) : null);
}

async function loadJobs() {
  if (!project()) return;
  const jobs = items(await api(`/api/jobs?project=${project()}`));
  $("jobs").replaceChildren(...(jobs.length ? jobs.map((j) => h("tr", { "data-job": j.id },
    h("td", {}, h("a", { href: `/manage/jobs/${j.id}` }, `#${j.id}`)),
    h("td", {}, j.kind.replace("_", " ")), h("td", {}, badge(j.state)),
    progressCell(j),
    h("td", { class: "small" }, jobDuration(j)),
    h("td", { class: "small" }, producedLink(j) || h("span", { class: "muted" }, FINAL.has(j.state) ? "nothing" : "–")),
    h("td", { class: "small muted" }, new Date(j.created_at).toLocaleString()))) : [h("tr", {}, h("td", { colspan: 7, class: "muted" }, "No jobs yet."))]));
  return jobs;
}

$("launch-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  $("launch-error").hidden = true;
  let config;
  try {
    config = form.value();
  } catch (err) {
    return showError($("launch-error"), new Error(`Config is not valid JSON: ${err.message}`));
  }
  const inputs = {};
  if ($("policy").value) inputs.policy = Number($("policy").value);
  if (form.kind.inputs.includes("reward_model") && $("reward").value) inputs.reward_model = Number($("reward").value);
  try {
    const job = await api(`/api/projects/${project()}/jobs`, { method: "POST", body: { kind: $("kind").value, config, inputs } });
    window.location.assign(`/manage/jobs/${job.id}`);
  } catch (err) {
    // Config errors name their fields: they go under each field, and once above the form.
    const placed = !form.jsonMode && err.code === "invalid_config" && form.showErrors(err.details);
    const fields = placed ? Object.keys(err.details).join(", ") : "";
    showError($("launch-error"), placed ? new Error(`Invalid ${form.kind.kind} config: ${fields} (see the fields marked above)`) : err);
  }
});

$("kind").addEventListener("change", showKind);
clearErrorOnEdit($("launch-form"), $("launch-error"));
$("project").addEventListener("change", () => {
  history.replaceState(null, "", `?project=${project()}`);
  loadModels();
  loadJobs();
});
form.load().then(showKind).catch((err) => showError($("launch-error"), err));
loadModels().catch(() => {});
loadJobs().catch(() => {});
setInterval(() => { if (!document.hidden) loadJobs().catch(() => {}); }, 4000);
