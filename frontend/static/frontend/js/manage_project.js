// Admin project page: settings, counts that follow imports and annotation, import JSONL (per-line
// errors), a paged prompt/task browser with each task's rankings, rounds and their progress.
import { api, clearErrorOnEdit, h, pageData, showError, toast } from "./api.js";
import { renderMessages } from "./chat.js";
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
    allow_remote_images: form.allow_remote_images.checked,
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
    loadCounts();
    loadBrowse(1);
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

// ---- counts: read again after an import and while annotators work ----
async function loadCounts() {
  try {
    const { counts } = await api(`/api/projects/${project.id}`);
    for (const el of document.querySelectorAll("#counts [data-count]")) el.textContent = counts[el.dataset.count];
  } catch { /* the next refresh tries again */ }
}

// ---- the prompt and task browser ----
const LETTERS = "ABCDEFGH";
const browse = { q: "", status: "all", page: 1, pages: 1 };

function orderText(groups, letterOf) {
  return groups.map((g) => g.map(letterOf).join(" = ")).join(" > ");
}

function taskView(task) {
  const letterOf = (id) => LETTERS[task.responses.findIndex((r) => r.id === id)] || `#${id}`;
  const state = task.complete ? "complete" : "open";
  return h("div", { class: "task-view", "data-task": task.id },
    h("h4", {}, `Task #${task.id}`, task.round ? ` · round ${task.round}` : "",
      ` · ${task.rankings_done} of ${task.rankings_needed} rankings `, h("span", { class: `badge ${state === "complete" ? "succeeded" : "running"}` }, state)),
    h("ol", { class: "task-responses", type: "A" }, task.responses.map((r) => h("li", {},
      h("span", { class: "response-text" }, r.text),
      r.truncated ? h("span", { class: "badge cut" }, "cut off") : null,
      task.gold_response === r.id ? h("span", { class: "badge succeeded" }, "gold") : null,
      h("span", { class: "small muted" }, ` ${r.source}${r.model_name ? ` · ${r.model_name}` : ""}`)))),
    task.rankings.length
      ? h("table", { class: "rankings", "aria-label": `Rankings of task ${task.id}` },
        h("thead", {}, h("tr", {}, h("th", {}, "Annotator"), h("th", {}, "Ranking, best first"), h("th", {}, "Flags"), h("th", {}, "Rationale"), h("th", {}, "When"))),
        h("tbody", {}, task.rankings.map((r) => h("tr", { class: r.superseded ? "superseded" : "" },
          h("td", {}, r.annotator),
          h("td", {}, orderText(r.groups, letterOf), r.superseded ? h("span", { class: "small muted" }, " (revised later)") : r.revises ? h("span", { class: "small muted" }, " (revision)") : null),
          h("td", { class: "small" }, r.flags.join(", ")),
          h("td", { class: "small" }, r.rationale),
          h("td", { class: "small muted" }, new Date(r.created_at).toLocaleString())))))
      : h("p", { class: "small muted" }, "Not ranked yet."));
}

function promptView(p) {
  const text = p.messages && p.messages.length ? p.messages[p.messages.length - 1].content : p.text;
  const ranked = p.tasks.reduce((n, t) => n + t.rankings_done, 0);
  const body = h("div", { class: "chat" });
  const details = h("details", { class: "prompt-row", "data-prompt": p.id },
    h("summary", {},
      h("span", { class: "prompt-id" }, `#${p.id}`),
      h("span", { class: "prompt-text" }, text.length > 140 ? `${text.slice(0, 140)}…` : text),
      h("span", { class: "small muted" }, p.tasks.length ? `${p.tasks.length} task${p.tasks.length > 1 ? "s" : ""} · ${ranked} ranking${ranked === 1 ? "" : "s"}` : "no tasks"),
      p.demonstrations ? h("span", { class: "small muted" }, ` · ${p.demonstrations} written`) : null,
      ...(p.tags || []).map((t) => h("span", { class: "badge" }, t))),
    body, ...p.tasks.map(taskView));
  // The full prompt is rendered (as sanitised Markdown) when the row is first opened.
  details.addEventListener("toggle", () => { if (details.open && !body.childElementCount) renderMessages(body, p.messages && p.messages.length ? p.messages : [{ role: "user", content: p.text }]); }, { once: false });
  return details;
}

async function loadBrowse(page = browse.page) {
  const params = new URLSearchParams({ q: browse.q, status: browse.status, page: String(page) });
  try {
    const data = await api(`/api/projects/${project.id}/prompts?${params}`);
    browse.page = data.page;
    browse.pages = data.pages;
    $("browse-summary").className = "small muted";
    $("browse-summary").removeAttribute("role");
    const first = data.count ? (data.page - 1) * data.page_size + 1 : 0;
    const last = Math.min(data.count, data.page * data.page_size);
    $("browse-summary").textContent = data.count ? `Prompts ${first}–${last} of ${data.count}` : browse.q || browse.status !== "all" ? "No prompt matches." : "No prompts yet: import some above.";
    $("browse-list").replaceChildren(...data.results.map(promptView));
    $("browse-page").textContent = `page ${data.page} of ${data.pages}`;
    $("browse-prev").disabled = data.page <= 1;
    $("browse-next").disabled = data.page >= data.pages;
  } catch (err) {
    showError($("browse-summary"), err);
  }
}

$("browse-form").addEventListener("submit", (e) => {
  e.preventDefault();
  browse.q = $("browse-q").value.trim();
  browse.status = $("browse-status").value;
  loadBrowse(1);
});
$("browse-status").addEventListener("change", () => { browse.status = $("browse-status").value; loadBrowse(1); });
$("browse-prev").addEventListener("click", () => loadBrowse(browse.page - 1));
$("browse-next").addEventListener("click", () => loadBrowse(browse.page + 1));

loadRounds();
loadBrowse(1);
// Rounds and counts move on their own (generation, annotation): refresh them now and then.
setInterval(() => { if (!document.hidden) { loadRounds(); loadCounts(); } }, 5000);
