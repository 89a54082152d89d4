// One job, live: progress bar, a Chart.js line chart per metric series, logs, cancel.
import { api, h, pageData, showError, toast } from "./api.js";
import { badge, eta, FINAL, progressBar } from "./jobs_common.js";

const $ = (id) => document.getElementById(id);
const jobId = pageData("job-id"); // data, not an inline script: the CSP runs only our own files
const Chart = window.Chart;

// Metrics the stages report, in the order an admin looks at them; others follow by name.
const PREFERRED = ["loss", "accuracy", "eval_accuracy", "reward", "score", "kl", "length", "response_length"];
const charts = new Map(); // series name -> Chart
let lastStep = null;
let lastLogId = null;

function chartFor(name) {
  if (charts.has(name)) return charts.get(name);
  const canvas = h("canvas", { role: "img", "aria-label": `Chart of ${name} by step` });
  const box = h("div", { class: "chart-box", "data-metric": name }, canvas);
  const rank = (n) => { const i = PREFERRED.findIndex((p) => n === p || n.startsWith(p) || n.endsWith(p)); return i < 0 ? 99 : i; };
  const after = [...$("charts").children].find((el) => rank(el.dataset.metric) > rank(name));
  $("charts").insertBefore(box, after || null);
  const chart = new Chart(canvas, {
    type: "line",
    data: { datasets: [{ label: name, data: [], borderColor: "#2f5d8a", backgroundColor: "#2f5d8a", pointRadius: 0, borderWidth: 2, tension: 0.15 }] },
    options: {
      animation: false, maintainAspectRatio: false, parsing: false, normalized: true,
      scales: { x: { type: "linear", title: { display: true, text: "step" } } },
      plugins: { legend: { display: false }, title: { display: true, text: name } },
    },
  });
  charts.set(name, chart);
  return chart;
}

async function pollMetrics() {
  const q = lastStep === null ? "" : `?after=${lastStep}`;
  const data = await api(`/api/jobs/${jobId}/metrics${q}`);
  for (const [name, points] of Object.entries(data.series || {})) {
    if (!points.length) continue;
    const chart = chartFor(name);
    for (const [step, value] of points) {
      chart.data.datasets[0].data.push({ x: step, y: value });
      lastStep = lastStep === null ? step : Math.max(lastStep, step);
    }
    chart.update("none");
    chart.canvas.parentNode.dataset.points = String(chart.data.datasets[0].data.length);
  }
  $("no-metrics").hidden = charts.size > 0;
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

function showJob(job) {
  $("kind").textContent = job.kind;
  $("state").replaceChildren(badge(job.state));
  $("bar").replaceChildren(progressBar(job, "Job progress"));
  const p = job.progress || {};
  $("progress-text").textContent = p.total ? `step ${p.step} of ${p.total} ${FINAL.has(job.state) ? "" : eta(p.eta_seconds)}` : job.state === "queued" ? "waiting for a worker" : "";
  $("cancel").hidden = FINAL.has(job.state) || job.cancel_requested;
  $("jobs-link").href = `/manage/jobs?project=${job.project}`;
  $("config").textContent = JSON.stringify({ config: job.config, inputs: job.inputs }, null, 2);
  const out = job.outputs || {};
  $("outputs").replaceChildren();
  if (out.model_version) $("outputs").append("Produced model ", h("a", { href: `/manage/models#model-${out.model_version}` }, `#${out.model_version}`), ". ");
  if (job.error) showError($("notice"), new Error(job.error));
}

async function tick() {
  let job;
  try {
    job = await api(`/api/jobs/${jobId}`);
    showJob(job);
    await Promise.all([pollMetrics(), pollLogs()]);
  } catch (err) {
    showError($("notice"), err);
  }
  // Keep polling while the job can still change; one last read after it ends catches the tail.
  if (!job || !FINAL.has(job.state)) setTimeout(tick, document.hidden ? 5000 : 1500);
}

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
