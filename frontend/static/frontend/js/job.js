// One job, live: progress (steps, stage, ETA), the few charts that tell whether the run is
// healthy, the other metrics grouped and folded away, constants as a table, a result summary,
// logs, cancel.
import { api, fmtMetric, h, pageData, showError, toast } from "./api.js";
import { badge, FINAL, jobDuration, producedLink, progressBar, progressParts } from "./jobs_common.js";

const $ = (id) => document.getElementById(id);
const jobId = pageData("job-id"); // data, not an inline script: the CSP runs only our own files
const Chart = window.Chart;

// Per kind, the charts to look at first: what should rise, fall or stay steady in a healthy run.
const HEALTH = {
  ppo: [
    { title: "Reward and objective", series: ["reward", "objective"], hint: "should rise" },
    { title: "KL to the starting policy", series: ["kl"], hint: "should stay small and steady" },
    { title: "Response length (tokens)", series: ["response_length"], hint: "a collapse means the policy found a shortcut" },
    { title: "Entropy", series: ["entropy"], hint: "falls slowly; a crash means mode collapse" },
  ],
  reward_model: [
    { title: "Loss", series: ["loss", "eval_loss"], hint: "should fall" },
    { title: "Pairwise accuracy", series: ["eval_accuracy", "accuracy"], hint: "held-out accuracy is what counts; 0.5 is chance" },
  ],
  sft: [{ title: "Loss", series: ["loss", "eval_loss"], hint: "should fall; a rising held-out loss means overfitting" }],
  dpo: [
    { title: "Loss", series: ["loss", "eval_loss"], hint: "should fall below 0.69" },
    { title: "Preference accuracy", series: ["eval_accuracy", "reward_accuracy"], hint: "0.5 is chance" },
    { title: "Reward margin", series: ["reward_margin", "eval_margin"], hint: "should grow" },
  ],
};
// Final values shown first in the result summary, per kind.
const SUMMARY = {
  ppo: ["reward", "objective", "score", "kl", "response_length", "entropy", "eos_rate"],
  reward_model: ["eval_accuracy", "eval_margin", "loss", "accuracy"],
  sft: ["eval_loss", "loss"],
  dpo: ["eval_accuracy", "eval_loss", "loss", "reward_accuracy", "reward_margin"],
};
// Counters of the run itself, not measurements: the progress bar already says them.
const BOOKKEEPING = new Set(["step", "total_steps", "iteration", "total_iterations", "epoch", "tasks_created"]);
// The rest of the series, grouped by the words of their names; the first group that matches takes it.
const GROUPS = [
  ["Losses", (w) => w.includes("loss")],
  ["Speed", (w) => w.includes("time") || w.includes("per") || w.includes("elapsed") || w.includes("tokens")],
  ["KL and policy change", (w) => ["kl", "ratio", "clip", "logprob", "entropy"].some((x) => w.includes(x))],
  ["Rewards and scores", (w) => ["reward", "score", "objective", "margin", "accuracy", "value", "eos", "distinct"].some((x) => w.includes(x))],
  ["Optimisation", (w) => w.includes("lr") || w.includes("grad")],
  ["Other", () => true],
];
// Sections appear in this order (the matching order above puts "time_score_s" under Speed).
const SHOWN_ORDER = ["Losses", "KL and policy change", "Rewards and scores", "Optimisation", "Speed", "Other"];
const UNIT = { ppo: "iterations", generate: "responses", evaluate: "evaluations" };
const COLORS = ["#2f5d8a", "#c2672b", "#2e7d4f", "#7a4fa0"];

const label = (name) => (name.startsWith("eval_") ? `held-out ${name.slice(5)}` : name).replace(/_/g, " ");

let kind = null;
const store = new Map(); // series name -> [{x: step, y: value}]
const charts = new Map(); // chart key -> {chart, series}
let lastStep = null;
let lastLogId = null;

/** Axis labels with just enough digits to tell neighbouring ticks apart ("-1.0002", "8e-6"). */
function tickLabel(value, index, ticks) {
  if (ticks.length < 2) return fmtMetric(value);
  const step = Math.abs(ticks[1].value - ticks[0].value) || Math.abs(value) || 1;
  const top = Math.max(...ticks.map((t) => Math.abs(t.value)));
  if (value === 0) return "0";
  if (top < 1e-3 || top >= 1e6) {
    const digits = Math.min(6, Math.max(0, Math.ceil(Math.log10(top / step))));
    return value.toExponential(digits).replace(/\.?0+e/, "e").replace("e+", "e");
  }
  const decimals = Math.min(10, Math.max(0, Math.ceil(-Math.log10(step) - 1e-9)));
  return value.toFixed(decimals);
}

function makeChart(box, title, series, stepWord) {
  const canvas = h("canvas", { role: "img", "aria-label": `Chart of ${title} by ${stepWord}` });
  box.append(canvas);
  return new Chart(canvas, {
    type: "line",
    data: { datasets: series.map((name, i) => ({ label: label(name), data: [], borderColor: COLORS[i % COLORS.length], backgroundColor: COLORS[i % COLORS.length], borderWidth: 2, tension: 0.15, pointRadius: 3 })) },
    options: {
      animation: false, maintainAspectRatio: false, parsing: false, normalized: true,
      scales: {
        // Steps are whole numbers: no tick at 1.5.
        x: { type: "linear", title: { display: true, text: stepWord }, ticks: { precision: 0, callback: (v) => (Number.isInteger(v) ? v : "") } },
        y: { ticks: { callback: tickLabel } },
      },
      plugins: {
        // A series with no points yet (held-out loss before the first evaluation) stays out of the legend.
        legend: { display: series.length > 1, labels: { filter: (item, data) => data.datasets[item.datasetIndex].data.length > 0 } },
        title: { display: true, text: title },
        tooltip: { callbacks: { title: (items) => `${stepWord} ${items[0].parsed.x}`, label: (c) => `${c.dataset.label}: ${fmtMetric(c.parsed.y)}` } },
      },
    },
  });
}

function ensureChart(key, parent, title, series, { hint, big } = {}) {
  if (charts.has(key)) return charts.get(key);
  const stepWord = kind === "ppo" ? "iteration" : kind === "generate" ? "response" : "step";
  const box = h("div", { class: `chart-box${big ? " big" : ""}`, "data-metric": series[0], "data-title": title });
  parent.append(h("figure", { class: "chart" }, box, hint ? h("figcaption", { class: "small muted" }, hint) : null));
  const entry = { chart: makeChart(box, title, series, stepWord), series, box };
  charts.set(key, entry);
  return entry;
}

function refresh(entry) {
  entry.series.forEach((name, i) => {
    const points = store.get(name) || [];
    const ds = entry.chart.data.datasets[i];
    ds.data = points.slice();
    ds.pointRadius = points.length > 30 ? 0 : 3;
  });
  entry.chart.update("none");
  entry.box.dataset.points = String((store.get(entry.series[0]) || []).length);
}

const isConstant = (points) => points.every((p) => p.y === points[0].y);

function groupFor(name) {
  const title = GROUPS.find(([, test]) => test(name.split("_")))[0];
  let section = document.querySelector(`#groups section[data-group="${title}"]`);
  if (!section) {
    section = h("section", { "data-group": title, "aria-label": title }, h("h3", { class: "small" }, title), h("div", { class: "charts" }));
    const after = [...$("groups").children].find((el) => SHOWN_ORDER.indexOf(el.dataset.group) > SHOWN_ORDER.indexOf(title));
    $("groups").insertBefore(section, after || null);
  }
  return section.querySelector(".charts");
}

function layout() {
  const health = HEALTH[kind] || [];
  const inHealth = new Set(health.flatMap((c) => c.series));
  for (const def of health) {
    if (!def.series.some((n) => (store.get(n) || []).length)) continue;
    refresh(ensureChart(`health:${def.title}`, $("charts"), def.title, def.series, { hint: def.hint, big: true }));
  }
  const constants = [];
  let more = 0;
  for (const [name, points] of [...store.entries()].sort(([a], [b]) => a.localeCompare(b))) {
    if (inHealth.has(name) || BOOKKEEPING.has(name) || !points.length) continue;
    // A series that has never changed is a constant (kl_coef, a fixed batch size): a row, not a chart.
    if (!charts.has(name) && isConstant(points)) { constants.push([name, points[points.length - 1].y]); continue; }
    refresh(ensureChart(name, groupFor(name), label(name), [name]));
    more += 1;
  }
  $("constants").replaceChildren(...constants.map(([name, value]) => h("tr", { "data-metric": name }, h("th", { scope: "row" }, label(name)), h("td", {}, fmtMetric(value)))));
  $("more-count").textContent = `(${more} charts, ${constants.length} constants)`;
  $("more-metrics").hidden = more === 0 && constants.length === 0;
  $("no-metrics").hidden = $("charts").children.length > 0;
  if (!$("no-metrics").hidden && (store.size || kind === "generate" || kind === "evaluate")) {
    $("no-metrics").textContent = kind === "generate" ? "A generate job has no training curves: the progress bar counts the responses sampled."
      : kind === "evaluate" ? "An evaluation reports once, at the end: see the result." : "The first chart appears after the first step.";
  }
}

async function pollMetrics() {
  const q = lastStep === null ? "" : `?after=${lastStep}`;
  const data = await api(`/api/jobs/${jobId}/metrics${q}`);
  for (const [name, points] of Object.entries(data.series || {})) {
    if (!store.has(name)) store.set(name, []);
    for (const [step, value] of points) {
      if (typeof value !== "number") continue;
      store.get(name).push({ x: step, y: value });
      lastStep = lastStep === null ? step : Math.max(lastStep, step);
    }
  }
  layout();
}

async function pollLogs() {
  const q = lastLogId === null ? "" : `?after=${lastLogId}`;
  const data = await api(`/api/jobs/${jobId}/logs${q}`);
  const box = $("logs");
  const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 30;
  for (const line of data.lines || []) {
    box.append(h("div", { class: line.level }, `${new Date(line.at).toLocaleTimeString()} ${line.level} ${line.message}`));
    lastLogId = line.id ?? lastLogId;
  }
  if (atBottom) box.scrollTop = box.scrollHeight;
}

const row = (name, value) => h("tr", {}, h("th", { scope: "row" }, name), h("td", {}, value));

function showResult(job) {
  const out = job.outputs || {};
  if (!FINAL.has(job.state) || !Object.keys(out).length) { $("result").hidden = true; return; }
  const rows = [];
  const made = producedLink(job);
  if (made) rows.push(row("Produced", made));
  if (out.examples !== undefined) rows.push(row("Data", `${out.examples} examples (held-out ones included)`));
  if (out.policy) rows.push(row("Sampled from", h("a", { href: `/manage/models#model-${out.policy}` }, `policy #${out.policy}`)));
  rows.push(row("Duration", jobDuration(job)));
  const metrics = out.metrics || out.evaluation || {};
  const first = kind === "evaluate" ? Object.keys(metrics) : SUMMARY[kind] || [];
  for (const name of first) if (metrics[name] !== undefined) rows.push(row(label(name), fmtMetric(metrics[name])));
  // A stage's note says why a number is missing (too few held-out pairs for an accuracy).
  for (const [name, value] of Object.entries(metrics)) if (name.endsWith("note") && typeof value === "string") rows.push(row("Note", value));
  $("result-rows").replaceChildren(...rows);
  const rest = Object.entries(metrics).filter(([k, v]) => !first.includes(k) && !BOOKKEEPING.has(k) && !k.endsWith("note") && (typeof v === "number" || typeof v === "string"));
  $("result-all").replaceChildren(...rest.sort(([a], [b]) => a.localeCompare(b)).map(([k, v]) => row(label(k), fmtMetric(v))));
  $("result-more").hidden = !rest.length;
  $("result").hidden = false;
}

function showJob(job) {
  kind = job.kind;
  $("kind").textContent = job.kind.replace("_", " ");
  $("state").replaceChildren(badge(job.state));
  $("bar").replaceChildren(progressBar(job, "Job progress"));
  const parts = progressParts(job);
  const p = job.progress || {};
  $("progress-steps").textContent = parts.steps ? `${parts.steps} ${UNIT[job.kind] || "steps"}` : "";
  $("stage").textContent = parts.stage;
  $("progress-eta").textContent = parts.left;
  const took = jobDuration(job);
  $("progress-duration").textContent = took ? (FINAL.has(job.state) ? `took ${took}` : took) : "";
  if (FINAL.has(job.state) && p.total && job.state !== "succeeded") $("progress-eta").textContent = `stopped at ${p.step || 0} of ${p.total}`;
  $("cancel").hidden = FINAL.has(job.state) || job.cancel_requested;
  $("jobs-link").href = `/manage/jobs?project=${job.project}`;
  $("config").textContent = JSON.stringify({ config: job.config, inputs: job.inputs }, null, 2);
  showResult(job);
  if (job.error) showError($("notice"), new Error(job.error));
}

async function tick() {
  let job;
  try {
    job = await api(`/api/jobs/${jobId}`);
    kind = job.kind;
    if (FINAL.has(job.state)) {
      // The last read takes every point again: the closing evaluation lands on the last step,
      // which an earlier poll may already have passed.
      store.clear();
      lastStep = null;
    }
    await Promise.all([pollMetrics(), pollLogs()]);
    showJob(job);
  } catch (err) {
    showError($("notice"), err);
  }
  // Keep polling while the job can still change; one last read after it ends catches the tail.
  if (!job || !FINAL.has(job.state)) setTimeout(tick, document.hidden ? 5000 : 1500);
}

$("more-metrics").addEventListener("toggle", () => { for (const { chart } of charts.values()) chart.resize(); });

$("cancel").addEventListener("click", async () => {
  if (!confirm("Cancel this job? A running job stops at its next step.")) return;
  try {
    showJob(await api(`/api/jobs/${jobId}/cancel`, { method: "POST", body: {} }));
    toast("Cancel requested");
  } catch (err) {
    showError($("notice"), err);
  }
});

tick();
