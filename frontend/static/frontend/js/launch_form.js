// The launch form of a job, built from GET /api/job-kinds: each kind's config fields with their
// defaults, allowed values and one-line help, as the config classes declare them (the page copies
// no default). A JSON view of the same config is kept for power users; errors the API names per
// field appear under that field and go away once it is edited.
import { api, h } from "./api.js";

// Shown first when a kind has them; the rest fold under "All fields". Presentation only.
const FIRST = ["iterations", "epochs", "max_steps", "learning_rate", "batch_size", "rollout_batch_size",
  "kl_coef", "loss", "beta", "responses_per_prompt", "strategy", "temperature", "top_p", "top_k",
  "max_new_tokens", "scorer", "lora", "sampling"];

const isNumber = (f) => f.type.includes("int") || f.type.includes("float");
const isJson = (f) => f.type.some((t) => ["dict", "list", "object", "SamplingConfig", "LoraOptions"].includes(t));
const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);

export class LaunchForm {
  constructor({ kindSelect, fieldsBox, jsonBox, jsonToggle, helpBox }) {
    Object.assign(this, { kindSelect, fieldsBox, jsonBox, jsonToggle, helpBox });
    this.kinds = {};
    this.inputs = {};
    this.jsonMode = false;
    kindSelect.addEventListener("change", () => this.render());
    jsonToggle.addEventListener("click", () => this.toggleJson());
  }

  async load() {
    const kinds = await api("/api/job-kinds");
    this.kinds = Object.fromEntries(kinds.map((k) => [k.kind, k]));
    this.kindSelect.replaceChildren(...kinds.map((k) => h("option", { value: k.kind }, k.kind.replace("_", " "))));
    this.render();
  }

  get kind() { return this.kinds[this.kindSelect.value]; }

  render() {
    const kind = this.kind;
    this.helpBox.textContent = kind.help;
    this.inputs = {};
    const rows = [...kind.fields].sort((a, b) => rank(a) - rank(b));
    const first = rows.filter((f) => FIRST.includes(f.name));
    const rest = rows.filter((f) => !FIRST.includes(f.name));
    const grid = (fields) => h("div", { class: "fields" }, ...fields.map((f) => this.field(f)));
    const more = h("details", { class: "more-fields" }, h("summary", {}, `All fields (${rest.length} more)`), grid(rest));
    this.fieldsBox.replaceChildren(grid(first), more);
    this.jsonBox.value = JSON.stringify(this.config(), null, 2);
    this.setJsonMode(false);
  }

  field(f) {
    const id = `cfg-${f.name}`;
    let input;
    if (f.choices) {
      input = h("select", { id }, ...f.choices.map((c) => h("option", { value: c }, c)));
      input.value = f.default;
    } else if (f.type.includes("bool")) {
      input = h("select", { id }, h("option", { value: "true" }, "yes"), h("option", { value: "false" }, "no"));
      input.value = String(f.default);
    } else if (isJson(f)) {
      input = h("textarea", { id, rows: 2, class: "json-field", spellcheck: "false" });
      input.value = f.default === null ? "" : JSON.stringify(f.default);
    } else if (isNumber(f)) {
      input = h("input", { id, type: "number", step: f.type.includes("float") ? "any" : "1" });
      if (f.min !== null && !f.min_exclusive) input.min = f.min;
      if (f.max !== null) input.max = f.max;
      input.value = f.default === null ? "" : f.default;
    } else {
      input = h("input", { id, type: "text" });
      input.value = f.default ?? "";
    }
    const error = h("div", { class: "small error-text", id: `${id}-error`, hidden: true });
    input.addEventListener("input", () => { error.hidden = true; input.removeAttribute("aria-invalid"); });
    this.inputs[f.name] = { f, input, error };
    const range = f.choices ? "" : rangeText(f);
    return h("div", { class: "field" },
      h("label", { for: id }, f.name.replaceAll("_", " ")),
      input,
      h("span", { class: "small muted" }, f.help + (range ? ` (${range})` : "")),
      error);
  }

  // The config from the form: only the fields that differ from their defaults are sent.
  config() {
    const out = {};
    for (const [name, { f, input }] of Object.entries(this.inputs)) {
      const value = read(f, input);
      if (value !== undefined && !same(value, f.default)) out[name] = value;
    }
    return out;
  }

  value() {
    if (!this.jsonMode) return this.config();
    const parsed = JSON.parse(this.jsonBox.value || "{}");
    if (typeof parsed !== "object" || Array.isArray(parsed) || parsed === null) throw new Error("the config must be a JSON object");
    return parsed;
  }

  toggleJson() {
    if (!this.jsonMode) {
      this.jsonBox.value = JSON.stringify(this.config(), null, 2);
      this.setJsonMode(true);
      return;
    }
    const parsed = this.value();  // a JSON error stays in the JSON view
    this.render();
    for (const [name, v] of Object.entries(parsed)) {
      const entry = this.inputs[name];
      if (!entry) continue;
      entry.input.value = typeof v === "object" && v !== null ? JSON.stringify(v) : String(v);
    }
  }

  setJsonMode(on) {
    this.jsonMode = on;
    this.jsonBox.closest(".field").hidden = !on;
    this.fieldsBox.hidden = on;
    this.jsonToggle.textContent = on ? "Edit as a form" : "Edit as JSON";
  }

  // Per-field errors from the API ({field: message}); true when at least one was placed.
  showErrors(details) {
    let placed = false;
    for (const [name, message] of Object.entries(details || {})) {
      const entry = this.inputs[name.split(".")[0]];
      if (!entry) continue;
      entry.error.textContent = message;
      entry.error.hidden = false;
      entry.input.setAttribute("aria-invalid", "true");
      entry.input.closest("details")?.setAttribute("open", "");
      placed = true;
    }
    return placed;
  }
}

function rank(f) {
  const i = FIRST.indexOf(f.name);
  return i === -1 ? FIRST.length : i;
}

function rangeText(f) {
  if (f.min === null && f.max === null) return f.nullable ? "empty: off" : "";
  const low = f.min === null ? "" : `${f.min_exclusive ? ">" : "≥"} ${f.min}`;
  const high = f.max === null ? "" : `≤ ${f.max}`;
  return [low, high].filter(Boolean).join(", ") + (f.nullable ? "; empty: off" : "");
}

function read(f, input) {
  const raw = input.value.trim();
  if (raw === "") return f.nullable ? null : undefined;
  if (f.type.includes("bool") && !f.choices) return raw === "true";
  if (isJson(f)) {
    try { return JSON.parse(raw); } catch { return raw; }  // the API names the field if it is wrong
  }
  if (isNumber(f) && !f.choices) return Number(raw);
  return raw;
}
