// Admin: the model lineage as a tree (parents -> children), metrics, promote and roll back.
import { api, fmtNum, h, items, showError, toast } from "./api.js";

const $ = (id) => document.getElementById(id);

// Bookkeeping values the stages also report; the tree shows the ones that judge a model.
const BOOKKEEPING = new Set(["step", "total_steps", "epoch", "lr", "tokens", "elapsed_s", "step_time_s", "tokens_per_s", "grad_norm", "examples"]);

function metricText(metrics) {
  return Object.entries(metrics || {})
    .filter(([k, v]) => typeof v === "number" && !BOOKKEEPING.has(k))
    .slice(0, 6)
    .map(([k, v]) => `${k} ${fmtNum(v)}`)
    .join(" · ");
}

async function promote(model, promotedNow) {
  const rollback = promotedNow && new Date(model.created_at) < new Date(promotedNow.created_at);
  const verb = rollback ? "Roll back to" : "Promote";
  if (!confirm(`${verb} #${model.id} ${model.name}? It becomes the policy the API serves for its project.`)) return;
  try {
    await api(`/api/models/${model.id}/promote`, { method: "POST", body: model.project ? { project: model.project } : {} });
    toast(`${model.name} promoted`);
    load();
  } catch (err) {
    showError($("notice"), err);
  }
}

function node(model, byParent, promotedByProject) {
  const promotedNow = promotedByProject.get(model.project);
  const rollback = promotedNow && promotedNow.id !== model.id && new Date(model.created_at) < new Date(promotedNow.created_at);
  const label = rollback ? `Roll back to #${model.id}` : `Promote #${model.id}`;
  const children = byParent.get(model.id) || [];
  return h("li", { id: `model-${model.id}` },
    h("div", { class: `node${model.promoted ? " promoted" : ""}` },
      h("strong", {}, `#${model.id} ${model.name}`),
      h("span", { class: "badge" }, model.kind),
      model.promoted ? h("span", { class: "badge promoted" }, "promoted") : null,
      model.job ? h("a", { class: "small", href: `/manage/jobs/${model.job}` }, `job ${model.job}`) : h("span", { class: "small muted" }, model.source || ""),
      h("span", { class: "metrics" }, metricText(model.metrics)),
      model.kind === "policy" && !model.promoted ? h("button", { type: "button", onclick: () => promote(model, promotedNow) }, label) : null),
    children.length ? h("ul", { class: "tree" }, children.map((c) => node(c, byParent, promotedByProject))) : null);
}

async function load() {
  const models = items(await api("/api/models")).sort((a, b) => a.id - b.id);
  const ids = new Set(models.map((m) => m.id));
  const byParent = new Map();
  const roots = [];
  for (const m of models) {
    // A model with several parents (PPO: policy + reward model) hangs under the first known one.
    const parent = (m.parents || []).find((p) => ids.has(p));
    if (parent === undefined) roots.push(m);
    else byParent.set(parent, [...(byParent.get(parent) || []), m]);
  }
  const promotedByProject = new Map(models.filter((m) => m.promoted).map((m) => [m.project, m]));
  $("tree").replaceChildren(...(roots.length ? roots.map((m) => node(m, byParent, promotedByProject)) : [h("li", { class: "muted" }, "No models yet: import a base model or run bootstrap.")]));
}

load().catch((err) => showError($("notice"), err));
