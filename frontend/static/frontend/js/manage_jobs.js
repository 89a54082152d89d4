// Admin: launch a training job with a checked JSON config, and list the project's jobs.
import { api, clearErrorOnEdit, h, items, showError } from "./api.js";
import { badge, FINAL, jobDuration, producedLink, progressBar, progressParts } from "./jobs_common.js";

const $ = (id) => document.getElementById(id);

// A few fields worth adjusting per kind; everything else keeps the stage's default.
const STARTERS = {
  sft: { epochs: 2, learning_rate: 2e-5, batch_size: 8, max_steps: null },
  reward_model: { epochs: 1, learning_rate: 1e-5, batch_size: 8, loss: "bradley_terry" },
  ppo: { iterations: 20, rollout_batch_size: 8, learning_rate: 3e-6, kl_coef: 0.05 },
  dpo: { epochs: 1, learning_rate: 5e-7, batch_size: 8 },
  generate: { strategy: "top_p", temperature: 0.8, top_p: 0.95, max_new_tokens: 128, responses_per_prompt: 2 },
};
const HELP = {
  sft: "Trains the policy on the project's demonstrations (next-token loss on the answers).",
  reward_model: "Trains a scalar reward head on the project's pairs; reports held-out pairwise accuracy.",
  ppo: "Optimises the policy against the reward model with a KL penalty to the starting policy.",
  dpo: "Trains the policy directly on the pairs; no reward model needed.",
  generate: "Samples responses from the policy for prompts (rounds start this for you).",
};

const project = () => $("project").value;

function showKind() {
  const kind = $("kind").value;
  $("config").value = JSON.stringify(STARTERS[kind], null, 2);
  $("config-help").textContent = HELP[kind];
  $("reward-field").hidden = kind !== "ppo";
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
  let config;
  try {
    config = JSON.parse($("config").value || "{}");
    if (typeof config !== "object" || Array.isArray(config) || config === null) throw new Error("the config must be a JSON object");
  } catch (err) {
    return showError($("launch-error"), new Error(`Config is not valid JSON: ${err.message}`));
  }
  const inputs = {};
  if ($("policy").value) inputs.policy = Number($("policy").value);
  if ($("kind").value === "ppo" && $("reward").value) inputs.reward_model = Number($("reward").value);
  try {
    const job = await api(`/api/projects/${project()}/jobs`, { method: "POST", body: { kind: $("kind").value, config, inputs } });
    window.location.assign(`/manage/jobs/${job.id}`);
  } catch (err) {
    // Config errors come back per field in details: list them all.
    if (err.details && typeof err.details === "object" && !Array.isArray(err.details)) {
      err.details = { errors: Object.entries(err.details).map(([field, msg]) => ({ line: undefined, error: `${field}: ${msg}` })) };
    }
    showError($("launch-error"), err);
  }
});

$("kind").addEventListener("change", showKind);
clearErrorOnEdit($("launch-form"), $("launch-error"));
$("project").addEventListener("change", () => {
  history.replaceState(null, "", `?project=${project()}`);
  loadModels();
  loadJobs();
});
showKind();
loadModels().catch(() => {});
loadJobs().catch(() => {});
setInterval(() => { if (!document.hidden) loadJobs().catch(() => {}); }, 4000);
