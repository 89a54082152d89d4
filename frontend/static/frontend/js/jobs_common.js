// Bits the job list and the job page share: progress bars and text, durations, state badges,
// what a job produced.
import { h } from "./api.js";

export const FINAL = new Set(["succeeded", "failed", "cancelled"]);

export function progressPct(job) {
  const p = job.progress || {};
  if (job.state === "succeeded") return 100;
  return p.total ? Math.min(100, Math.round((100 * (p.step || 0)) / p.total)) : 0;
}

export function progressBar(job, label) {
  const pct = progressPct(job);
  return h("div", { class: "progress", role: "progressbar", "aria-label": label, "aria-valuemin": 0, "aria-valuemax": 100, "aria-valuenow": pct },
    h("span", { style: `width:${pct}%` }));
}

/** "1 min 20 s", "45 s", "2 h 5 min". */
export function duration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min${s % 60 ? ` ${s % 60} s` : ""}`;
  return `${Math.floor(s / 3600)} h${Math.round((s % 3600) / 60) ? ` ${Math.round((s % 3600) / 60)} min` : ""}`;
}

export function eta(seconds) {
  if (seconds === null || seconds === undefined) return "";
  if (seconds < 1) return "finishing";
  if (seconds < 90) return `about ${Math.round(seconds)} s left`;
  if (seconds < 3600) return `about ${Math.round(seconds / 60)} min left`;
  return `about ${Math.floor(seconds / 3600)} h ${Math.round((seconds % 3600) / 60)} min left`;
}

/** How long the job ran (or has been running, or waiting), as text. */
export function jobDuration(job, now = Date.now()) {
  const started = job.started_at ? Date.parse(job.started_at) : null;
  const finished = job.finished_at ? Date.parse(job.finished_at) : null;
  if (started && finished) return duration((finished - started) / 1000);
  if (started && !FINAL.has(job.state)) return `${duration((now - started) / 1000)} so far`;
  if (job.state === "queued") return `waiting ${duration((now - Date.parse(job.created_at)) / 1000)}`;
  return "";
}

/** "step 3 of 20", the stage and the ETA, as the parts a page shows. */
export function progressParts(job) {
  const p = job.progress || {};
  const stage = job.state === "running" ? p.stage || "starting" : job.state === "queued" ? "waiting for a worker" : "";
  const steps = p.total ? `${p.step || 0} / ${p.total}` : "";
  let left = "";
  if (job.state === "running") {
    if (p.eta_seconds !== null && p.eta_seconds !== undefined) left = eta(p.eta_seconds) + (p.eta_basis === "earlier job" ? " (from the last run)" : "");
    else left = "time left known after the first step";
  }
  return { stage, steps, left };
}

/** A link (or short text) for what the job made: its model version, its tasks, its report. */
export function producedLink(job) {
  const out = job.outputs || {};
  if (out.model_version) return h("a", { href: `/manage/models#model-${out.model_version}` }, `model #${out.model_version}`);
  if (out.tasks !== undefined) return h("span", {}, `${out.tasks} tasks, ${out.responses} responses`);
  if (out.candidate) return h("a", { href: `/manage/models#model-${out.candidate}` }, `report on #${out.candidate}`);
  return null;
}

export const badge = (state) => h("span", { class: `badge ${state}` }, state);
