// Admin project page: import JSONL (per-line errors), start rounds and follow their progress.
import { api, clearErrorOnEdit, h, pageData, showError, toast } from "./api.js";
import { renderMarkdown } from "./markdown.js";

const project = pageData("page-data");
const $ = (id) => document.getElementById(id);
if (project.guidelines) renderMarkdown($("guidelines"), project.guidelines);

$("settings-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const form = e.target;
  const box = $("settings-result");
  const body = {
    responses_per_task: Number(form.responses_per_task.value),
    rankings_per_task: Number(form.rankings_per_task.value),
    allow_ties: form.allow_ties.checked,
    policy_algorithm: form.policy_algorithm.value,
    require_approval: form.require_approval.checked,
    guidelines: form.guidelines.value,
  };
  try {
    const saved = await api(`/api/projects/${project.id}`, { method: "PATCH", body });
    box.hidden = true;
    renderMarkdown($("guidelines"), saved.guidelines || "");
    toast("Settings saved");
  } catch (err) {
    showError(box, err);
  }
});

$("import-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const box = $("import-result");
  const file = $("import-file").files[0];
  if (!file) return;
  const body = new FormData();
  body.append("file", file);
  try {
    const r = await api(`/api/projects/${project.id}/import`, { method: "POST", body });
    box.className = "notice info";
    box.setAttribute("role", "status");
    box.replaceChildren(h("div", {}, `Imported ${r.prompts_created} prompts and ${r.tasks_created} tasks from ${r.lines} lines.`));
    if (r.duplicates.length) {
      box.append(h("div", {}, `${r.duplicates.length} duplicate line(s) skipped: `,
        r.duplicates.slice(0, 20).map((d) => `line ${d.line}`).join(", ")));
    }
    box.hidden = false;
    toast("Import done");
  } catch (err) {
    showError(box, err);
  }
});

clearErrorOnEdit($("settings-form"), $("settings-result"));
clearErrorOnEdit($("import-form"), $("import-result"));
clearErrorOnEdit($("round-form"), $("round-error"));

function roundPrompts() {
  const mode = $("round-prompts").value;
  const raw = $("round-prompts-value").value.trim();
  if (mode === "sample") return { sample: Number(raw) };
  if (mode === "ids") return raw.split(/[\s,]+/).filter(Boolean).map(Number);
  return "unused";
}

$("round-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const strategy = $("round-strategy").value;
  const sampling = { strategy, max_new_tokens: Number($("round-max-tokens").value) };
  if (strategy !== "greedy") sampling.temperature = Number($("round-temperature").value);
  if (strategy === "top_k") sampling.top_k = Number($("round-top-k").value);
  if (strategy === "top_p") sampling.top_p = Number($("round-top-p").value);
  try {
    const r = await api(`/api/projects/${project.id}/rounds`, {
      method: "POST",
      body: {
        prompts: roundPrompts(), responses_per_prompt: Number($("round-n").value), sampling,
        auto: { enabled: $("round-auto").checked },
      },
    });
    $("round-error").hidden = true;
    toast(`Round ${r.round.number} started`);
    loadRounds();
  } catch (err) {
    showError($("round-error"), err);
  }
});

async function loadRounds() {
  const body = $("rounds");
  try {
    const rounds = await api(`/api/projects/${project.id}/rounds`);
    if (!rounds.length) {
      body.replaceChildren(h("tr", {}, h("td", { colspan: 5, class: "muted" }, "No rounds yet.")));
      return;
    }
    body.replaceChildren(...rounds.map((r) => {
      const p = r.progress || {};
      const pct = p.tasks ? Math.round((100 * p.tasks_complete) / p.tasks) : 0;
      const s = (r.settings && r.settings.sampling) || {};
      const stage = h("td", {}, h("span", { class: `badge ${r.status}` }, r.status.replace("_", " ")),
        r.settings && r.settings.auto && r.settings.auto.enabled ? h("span", { class: "muted small" }, " self-running") : "");
      if (r.status === "failed") {
        const retry = h("button", { type: "button", class: "small" }, "Retry");
        retry.addEventListener("click", async () => {
          retry.disabled = true;
          try {
            await api(`/api/rounds/${r.id}/retry`, { method: "POST" });
            toast(`Round ${r.number} resumes from ${r.failed_stage.replace("_", " ")}`);
          } catch (err) {
            toast(`Could not retry: ${err.message}`);
          }
          loadRounds();
        });
        stage.append(h("div", { class: "small error-text" }, `failed in ${r.failed_stage.replace("_", " ")}: ${r.reason}`), retry);
      }
      return h("tr", {},
        h("td", {}, `#${r.number}`),
        stage,
        h("td", {}, h("div", { class: "row" },
          h("div", { class: "progress", role: "progressbar", "aria-label": `Round ${r.number} tasks complete`, "aria-valuenow": pct, "aria-valuemin": 0, "aria-valuemax": 100 },
            h("span", { style: `width:${pct}%` })),
          h("span", { class: "small" }, `${p.tasks_complete ?? 0} / ${p.tasks ?? 0}`))),
        h("td", { class: "small" }, ...(r.jobs || []).flatMap((j, i) => [i ? ", " : "",
          h("a", { href: `/manage/jobs/${j.id}`, title: j.error || j.state }, `${j.kind.replace("_", " ")} #${j.id}`),
          h("span", { class: `badge ${j.state}` }, j.state)])),
        h("td", { class: "small muted" }, Object.entries(s).filter(([, v]) => v !== null && v !== undefined && !(Array.isArray(v) && !v.length)).map(([k, v]) => `${k}=${v}`).join(" ")));
    }));
  } catch (err) {
    body.replaceChildren(h("tr", {}, h("td", { colspan: 5 }, `Could not load rounds: ${err.message}`)));
  }
}

loadRounds();
// Rounds move on their own (generation, annotation): refresh their progress now and then.
setInterval(() => { if (!document.hidden) loadRounds(); }, 5000);
