// Bits the job list and the job page share: progress bars and state badges.
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

export function eta(seconds) {
  if (seconds === null || seconds === undefined) return "";
  if (seconds < 90) return `about ${Math.round(seconds)} s left`;
  return `about ${Math.round(seconds / 60)} min left`;
}

export const badge = (state) => h("span", { class: `badge ${state}` }, state);
