// Admin: each project's policy history as the main line (base → SFT → PPO 1 → PPO 2 …) with the
// reward model and data beside each step, other branches under the step they came from, reward
// models listed with what used them; promote, roll back (to versions served before), archive.
import { api, fmtMetric, h, items, showError, toast } from "./api.js";
import { duration } from "./jobs_common.js";

const $ = (id) => document.getElementById(id);

// Bookkeeping values the stages also report; a step shows the ones that judge a model.
const BOOKKEEPING = new Set(["step", "total_steps", "iteration", "total_iterations", "epoch", "lr", "tokens", "elapsed_s",
  "step_time_s", "tokens_per_s", "grad_norm", "examples", "kl_coef", "train_pairs", "dropped_truncated"]);
const KEY_METRICS = ["eval_accuracy", "eval_loss", "reward", "kl", "eval_mean_reward", "eval_win_rate", "loss", "response_length"];
const DATA_WORD = { sft: "demonstrations", reward_model: "pairs", dpo: "pairs", ppo: "prompts" };
const KIND_WORD = { sft: "SFT", reward_model: "reward model", dpo: "DPO", ppo: "PPO", generate: "generate", evaluate: "evaluation" };

function metricText(metrics) {
  const entries = Object.entries(metrics || {}).filter(([k, v]) => typeof v === "number" && !BOOKKEEPING.has(k));
  entries.sort(([a], [b]) => (KEY_METRICS.indexOf(a) + 1 || 99) - (KEY_METRICS.indexOf(b) + 1 || 99));
  return entries.slice(0, 4).map(([k, v]) => `${k.replace(/^eval_/, "held-out ").replace(/_/g, " ")} ${fmtMetric(v)}`).join(" · ");
}

const when = (iso) => new Date(iso).toLocaleString([], { dateStyle: "short", timeStyle: "short" });

function servedText(m) {
  const periods = m.served || [];
  if (!periods.length) return null;
  const now = periods.find((p) => !p.until);
  const past = periods.filter((p) => p.until);
  const parts = [];
  if (now) parts.push(`served since ${when(now.from)}`);
  if (past.length) {
    const last = past[past.length - 1];
    parts.push(`served ${when(last.from)} for ${duration((Date.parse(last.until) - Date.parse(last.from)) / 1000)}${past.length > 1 ? ` (${past.length} times)` : ""}`);
  }
  return parts.join("; ");
}

function madeByText(m) {
  const job = m.made_by;
  if (!job) return m.source && m.source.startsWith("base:") ? `base model (${m.source.slice(5)})` : m.source || "";
  const data = job.examples !== null && job.examples !== undefined ? ` on ${job.examples} ${DATA_WORD[job.kind] || "examples"}` : "";
  return `${KIND_WORD[job.kind] || job.kind}${data}`;
}

async function act(path, method, message) {
  try {
    await api(path, { method, body: method === "POST" ? {} : undefined });
    toast(message);
    await load();
  } catch (err) {
    showError($("notice"), err);
  }
}

function actions(m) {
  const out = [];
  if (m.kind === "policy" && !m.promoted && !m.archived_at) {
    const rollback = m.served_before;
    const label = rollback ? `Roll back to #${m.id}` : `Promote #${m.id}`;
    out.push(h("button", { type: "button", onclick: () => {
      if (!confirm(`${rollback ? "Roll back to" : "Promote"} #${m.id} ${m.name}? It becomes the policy the API serves for its project.`)) return;
      act(`/api/models/${m.id}/promote`, "POST", `${m.name} ${rollback ? "is served again" : "promoted"}`);
    } }, label));
  }
  if (m.archived_at) out.push(h("button", { type: "button", onclick: () => act(`/api/models/${m.id}/archive`, "DELETE", `${m.name} unarchived`) }, `Unarchive #${m.id}`));
  else if (!m.promoted) out.push(h("button", { type: "button", class: "link", onclick: () => {
    if (!confirm(`Archive #${m.id} ${m.name}? It is hidden from lists; its files stay.`)) return;
    act(`/api/models/${m.id}/archive`, "POST", `${m.name} archived`);
  } }, "Archive"));
  return out;
}

function card(m, extra = []) {
  const served = servedText(m);
  return h("div", { class: `node${m.promoted ? " promoted" : ""}${m.archived_at ? " archived" : ""}`, id: `model-${m.id}`, "data-model": m.id },
    h("div", { class: "node-head" },
      h("strong", {}, `#${m.id} ${m.name}`),
      h("span", { class: `badge ${m.kind}` }, m.kind),
      m.promoted ? h("span", { class: "badge promoted" }, "served now") : null,
      m.archived_at ? h("span", { class: "badge" }, "archived") : null,
      h("span", { class: "spacer" }), ...actions(m)),
    h("div", { class: "node-facts small" },
      h("span", { class: "made-by" }, madeByText(m)),
      m.made_by ? h("a", { href: `/manage/jobs/${m.made_by.job}` }, `job ${m.made_by.job}`) : null,
      h("span", { class: "muted" }, `made ${when(m.created_at)}`),
      served ? h("span", { class: "served" }, served) : null),
    metricText(m.metrics) ? h("div", { class: "metrics small" }, metricText(m.metrics)) : null,
    ...extra);
}

function projectSection(project, models, byId) {
  const mine = models.filter((m) => m.project === project.id);
  const policyParent = (m) => (m.parents || []).map((id) => byId.get(id)).find((p) => p && p.kind === "policy");
  const rewardParents = (m) => (m.parents || []).map((id) => byId.get(id)).filter((p) => p && p.kind === "reward");
  const policies = mine.filter((m) => m.kind === "policy");
  const head = policies.find((m) => m.promoted) || policies.reduce((a, b) => (!a || b.id > a.id ? b : a), null);
  const line = [];
  for (let m = head; m && !line.includes(m); m = policyParent(m)) line.unshift(m);
  const onLine = new Set(line.map((m) => m.id));
  // Policies trained from a step but not on the line (a DPO try beside a PPO run): under that step.
  const children = new Map();
  for (const m of policies) {
    if (onLine.has(m.id)) continue;
    const parent = policyParent(m);
    const key = parent ? parent.id : null;
    children.set(key, [...(children.get(key) || []), m]);
  }
  const rewards = mine.filter((m) => m.kind === "reward");
  const usedBy = new Map(rewards.map((r) => [r.id, policies.filter((p) => (p.parents || []).includes(r.id))]));

  const beside = (m) => {
    const rms = rewardParents(m);
    return rms.length ? [h("div", { class: "beside small" }, "reward model: ", ...rms.flatMap((r, i) => [i ? ", " : "",
      h("a", { href: `#model-${r.id}` }, `#${r.id} ${r.name}`), ` (${madeByText(r)}${metricText(r.metrics) ? `; ${metricText(r.metrics)}` : ""})`]))] : [];
  };
  const branch = (m) => h("li", {}, card(m, beside(m)),
    (children.get(m.id) || []).length ? h("ul", { class: "branches" }, children.get(m.id).map(branch)) : null);
  const step = (m) => h("li", { class: "step" }, card(m, beside(m)),
    (children.get(m.id) || []).length ? h("div", { class: "small muted", style: "margin:.3rem 0 0 .2rem" }, "also trained from this step:") : null,
    (children.get(m.id) || []).length ? h("ul", { class: "branches" }, children.get(m.id).map(branch)) : null);
  const orphans = (children.get(null) || []).filter((m) => !onLine.has(m.id));

  return h("section", { class: "panel lineage", "aria-label": `Models of ${project.name}`, "data-project": project.id },
    h("h2", { style: "margin-top:0" }, project.name),
    line.length ? h("ol", { class: "steps", "aria-label": `Policy history of ${project.name}` }, line.map(step))
      : h("p", { class: "muted small" }, "No policy yet."),
    orphans.length ? h("div", {}, h("h3", { class: "small" }, "Other policies"), h("ul", { class: "branches" }, orphans.map(branch))) : null,
    rewards.length ? h("div", {}, h("h3", { class: "small" }, "Reward models"),
      h("ul", { class: "branches", "aria-label": `Reward models of ${project.name}` }, rewards.map((r) => {
        const from = policyParent(r) || (r.parents || []).map((id) => byId.get(id)).find(Boolean);
        const users = usedBy.get(r.id) || [];
        return h("li", {}, card(r, [h("div", { class: "beside small" },
          from ? ["trained from ", h("a", { href: `#model-${from.id}` }, `#${from.id}`), ". "] : null,
          users.length ? ["used by ", ...users.flatMap((p, i) => [i ? ", " : "", h("a", { href: `#model-${p.id}` }, `#${p.id}`)])] : "not used by a policy yet")]));
      }))) : null);
}

async function load() {
  const archived = $("show-archived").checked ? "include" : "exclude";
  const [models, projects] = await Promise.all([api(`/api/models?archived=${archived}`).then(items), api("/api/projects").then(items)]);
  models.sort((a, b) => a.id - b.id);
  const byId = new Map(models.map((m) => [m.id, m]));
  const sections = projects.filter((p) => models.some((m) => m.project === p.id)).map((p) => projectSection(p, models, byId));
  $("projects").replaceChildren(...(sections.length ? sections : [h("div", { class: "panel muted" }, "No models yet: import a base model or run bootstrap.")]));
  // Base models of no project that no project's history starts from yet.
  const shown = new Set([...document.querySelectorAll("#projects [data-model]")].map((el) => Number(el.dataset.model)));
  const loose = models.filter((m) => m.project === null && !shown.has(m.id));
  $("unassigned").hidden = !loose.length;
  $("unassigned-list").replaceChildren(...loose.map((m) => h("li", { class: "step" }, card(m))));
  if (location.hash) document.querySelector(location.hash)?.scrollIntoView({ block: "center" });
}

$("show-archived").addEventListener("change", () => load().catch((err) => showError($("notice"), err)));
load().catch((err) => showError($("notice"), err));
