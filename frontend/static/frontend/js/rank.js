// The ranking page: lease a task, rank its responses (pairwise or N-way, keyboard or drag),
// flag, skip, submit, keep the lease alive, and load the next task without reloading the page;
// revise the last ranking while its task is open.
import { api, clearErrorOnEdit, h, pageData, showError, toast } from "./api.js";
import { promptOf, renderMessages } from "./chat.js";
import { allowRemoteImages, renderMarkdown } from "./markdown.js";
import Sortable from "../vendor/sortable.esm.js";

const project = pageData("page-data");
allowRemoteImages(project.allow_remote_images);
const $ = (id) => document.getElementById(id);
const LETTERS = "ABCDEFGH";

const state = {
  task: null, lease: null, prompt: null,
  mode: "pair",       // "pair" for two responses, "nway" for more
  choice: null,       // pairwise: "A" | "B" | "tie" | "bad"
  items: [],          // n-way: [{id, tie}] best first; tie = tied with the item above
  selected: null,     // n-way: response id picked with a digit
  touched: false,     // n-way: the annotator moved something (or kept the shown order on purpose)
  shownAt: 0, busy: false, heartbeat: null, last: null, done: 0,
  lastRanking: null,  // what was submitted last: {id, task, prompt, groups, flags, rationale, choice}
  revising: null,     // while revising: the current task's state, put back afterwards
};

// ---- the ranking as the API wants it: groups of response ids, best first ----
function groups() {
  if (state.mode === "pair") {
    const [a, b] = state.task.responses.map((r) => r.id);
    if (state.choice === "A") return [[a], [b]];
    if (state.choice === "B") return [[b], [a]];
    if (state.choice === "tie" || state.choice === "bad") return [[a, b]];
    return null;
  }
  // The shown order is A, B, C…: submitting it untouched would be a ranking nobody made.
  if (!state.touched) return null;
  const out = [];
  for (const item of state.items) {
    if (item.tie && out.length) out[out.length - 1].push(item.id);
    else out.push([item.id]);
  }
  return out;
}

const letterOf = (id) => LETTERS[state.task.responses.findIndex((r) => r.id === id)];

// ---- rendering ----
function showNotice(kind, message) {
  const box = $("notice");
  box.className = `notice ${kind}`;
  box.textContent = message;
  box.hidden = false;
  box.setAttribute("role", kind === "error" ? "alert" : "status");
}
const clearNotice = () => { $("notice").hidden = true; };

function renderTask() {
  const { task } = state;
  state.prompt = promptOf(task);
  renderMessages($("prompt"), state.prompt.messages);
  const wrap = $("responses");
  wrap.className = `responses ${state.mode === "pair" ? "side" : "stack"}`;
  wrap.replaceChildren(...task.responses.map((r, i) => {
    const body = h("div", { class: "body" });
    renderMarkdown(body, r.text);
    return h("article", { class: `response${r.truncated ? " truncated" : ""}`, "data-id": r.id, "aria-label": `Response ${LETTERS[i]}` },
      h("header", {}, h("span", { class: "letter", "aria-hidden": "true" }, LETTERS[i]),
        h("strong", {}, `Response ${LETTERS[i]}`),
        r.truncated ? h("span", { class: "badge cut", title: "The model hit its token limit: this answer stops mid-way." }, "cut off at the token limit") : null,
        h("span", { class: "place badge", "data-place": "" })),
      body);
  }));
  $("pair-choices").hidden = state.mode !== "pair";
  $("order-help").hidden = state.mode === "pair";
  $("pair-summary").hidden = state.mode !== "pair";
  for (const b of document.querySelectorAll("#pair-choices [data-choice=tie], #pair-choices [data-choice=bad]")) {
    b.disabled = !project.allow_ties;
    b.title = project.allow_ties ? "" : "This project does not allow ties";
  }
  for (const box of document.querySelectorAll("input[name=flag]")) box.checked = false;
  $("rationale").value = "";
  renderRanking();
}

function setFlags(flags, rationale) {
  for (const box of document.querySelectorAll("input[name=flag]")) box.checked = flags.includes(box.value);
  $("rationale").value = rationale || "";
}

function renderRanking() {
  const cards = [...document.querySelectorAll("#responses .response")];
  const g = groups();
  const placeOf = new Map();
  (g || []).forEach((group, i) => group.forEach((id) => placeOf.set(id, { place: i + 1, tied: group.length > 1 })));
  for (const card of cards) {
    const id = Number(card.dataset.id);
    const p = placeOf.get(id);
    const badge = card.querySelector(".place");
    card.classList.remove("win", "lose", "tie", "bad", "selected");
    badge.textContent = "";
    if (state.mode === "pair") {
      if (state.choice === "bad") card.classList.add("bad");
      else if (state.choice === "tie") card.classList.add("tie");
      else if (p) card.classList.add(p.place === 1 ? "win" : "lose");
      if (p && state.choice) badge.textContent = state.choice === "bad" ? "bad" : state.choice === "tie" ? "tie" : p.place === 1 ? "better" : "worse";
    } else if (p) {
      badge.textContent = `#${p.place}${p.tied ? " (tie)" : ""}`;
      if (p.place === 1) card.classList.add("win");
      if (id === state.selected) card.classList.add("selected");
    }
  }
  for (const b of document.querySelectorAll("#pair-choices button")) b.setAttribute("aria-pressed", String(b.dataset.choice === state.choice));
  const list = $("order");
  if (state.mode === "pair") {
    list.replaceChildren();
    const words = { A: "A is better than B", B: "B is better than A", tie: "A and B are tied", bad: "Both are bad (tied, flagged)" };
    $("pair-summary").textContent = state.choice ? words[state.choice] : "Not chosen yet: press 1, 2, T or B.";
  } else {
    let place = 0;
    list.classList.toggle("untouched", !state.touched);
    $("order-status").hidden = state.touched;
    $("order-status").textContent = "Not ranked yet: this is only the order they are shown in. Move one, or keep this order if it already is your ranking.";
    list.replaceChildren(...state.items.map((item, i) => {
      if (!item.tie || i === 0) place += 1;
      const letter = letterOf(item.id);
      const text = state.task.responses.find((r) => r.id === item.id).text;
      return h("li", { "data-id": item.id, class: `${item.id === state.selected ? "selected" : ""} ${item.tie && i > 0 ? "tied" : ""}`,
        "aria-label": `Place ${place}: response ${letter}${item.tie && i > 0 ? ", tied with the one above" : ""}` },
        h("span", { class: "place" }, String(place)),
        h("span", { class: "letter badge" }, letter),
        h("span", { class: "snippet" }, text.slice(0, 80)),
        item.tie && i > 0 ? h("span", { class: "tie-label" }, "tie") : null,
        h("span", { class: "moves" },
          h("button", { type: "button", "aria-label": `Move ${letter} up`, onclick: () => move(item.id, -1) }, "↑"),
          h("button", { type: "button", "aria-label": `Move ${letter} down`, onclick: () => move(item.id, 1) }, "↓"),
          h("button", { type: "button", "aria-label": `Tie ${letter} with the one above`, onclick: () => toggleTie(item.id) }, "=")));
    }));
  }
  $("keep-row").hidden = state.mode === "pair" || state.touched;
  if (state.mode === "pair") $("order-status").hidden = true;
  $("submit").disabled = state.busy || !groups();
  $("submit").firstChild.textContent = state.revising ? "Save revision " : "Submit ";
  $("skip").disabled = Boolean(state.revising); // the task in hand is skipped from its own view
  $("revise-last").hidden = !state.lastRanking || Boolean(state.revising);
}

// ---- edits of the ranking ----
function choose(choice) {
  if ((choice === "tie" || choice === "bad") && !project.allow_ties) return;
  state.choice = choice;
  renderRanking();
}

function move(id, delta) {
  const i = state.items.findIndex((x) => x.id === id);
  const j = i + delta;
  if (i < 0 || j < 0 || j >= state.items.length) return;
  const [item] = state.items.splice(i, 1);
  item.tie = false; // moving takes an item out of its tie group
  state.items.splice(j, 0, item);
  state.items[0].tie = false;
  state.selected = id;
  state.touched = true;
  renderRanking();
}

function toggleTie(id) {
  if (!project.allow_ties) return toast("This project does not allow ties");
  const i = state.items.findIndex((x) => x.id === id);
  if (i <= 0) return toast("The first response has nothing above it to tie with");
  state.items[i].tie = !state.items[i].tie;
  state.selected = id;
  state.touched = true;
  renderRanking();
}

function keepOrder() {
  if (state.mode !== "nway" || state.touched) return;
  state.touched = true;
  renderRanking();
}

function pick(digit) {
  const r = state.task.responses[digit - 1];
  if (!r) return;
  state.selected = r.id;
  renderRanking();
}

// Dragging reorders the list; the DOM order after the drop becomes the ranking.
Sortable.create($("order"), {
  animation: 120,
  filter: "button",
  preventOnFilter: false,
  onEnd() {
    const ids = [...$("order").children].map((li) => Number(li.dataset.id));
    const byId = new Map(state.items.map((x) => [x.id, x]));
    state.items = ids.map((id) => byId.get(id));
    if (state.items.length) state.items[0].tie = false;
    state.touched = true;
    renderRanking();
  },
});

// ---- the lease: heartbeats while the page is open ----
function stopHeartbeat() { clearInterval(state.heartbeat); state.heartbeat = null; }

function startHeartbeat() {
  stopHeartbeat();
  // A third of the lease leaves two more tries before it runs out if one request fails.
  const every = Math.max(2000, Math.min(60000, (project.lease_seconds * 1000) / 3));
  state.heartbeat = setInterval(async () => {
    if (!state.lease || state.busy) return;
    try {
      const lease = await api(`/api/leases/${state.lease.id}/heartbeat`, { method: "POST", body: {} });
      if (lease && lease.expires_at) state.lease.expires_at = lease.expires_at;
      else if (lease && lease.lease) state.lease = lease.lease;
    } catch (err) {
      if (err.status === 409 || err.status === 404) leaseLost();
    }
  }, every);
}

function leaseLost() {
  stopHeartbeat();
  if (state.revising) { state.revising = null; $("revising").hidden = true; }
  showNotice("warn", "Your time on that task ran out, so nothing was saved for it and it went back to the pool. The next task is below.");
  loadNext({ keepNotice: true });
}

// ---- loading, submitting, skipping ----
async function loadNext({ keepNotice = false } = {}) {
  stopHeartbeat();
  if (!keepNotice) clearNotice();
  state.busy = true;
  $("workspace").classList.add("loading"); // the old task stays visible, dimmed, until the new one is in
  try {
    const data = await api(`/api/projects/${project.id}/tasks/next`, { method: "POST", body: {} });
    state.busy = false;
    $("workspace").classList.remove("loading");
    if (!data) {
      state.task = state.lease = null;
      $("workspace").hidden = true;
      $("empty").hidden = false;
      remaining = 0;
      showProgress();
      return;
    }
    state.task = data.task;
    state.lease = data.lease;
    state.mode = data.task.responses.length === 2 ? "pair" : "nway";
    state.choice = null;
    state.items = data.task.responses.map((r) => ({ id: r.id, tie: false }));
    state.selected = null;
    state.touched = false;
    state.shownAt = performance.now();
    $("empty").hidden = true;
    $("workspace").hidden = false;
    renderTask();
    showProgress();
    startHeartbeat();
    window.scrollTo({ top: 0 });
  } catch (err) {
    state.busy = false;
    $("workspace").classList.remove("loading");
    showNotice("error", `Could not load a task: ${err.message}`);
  }
  refreshRemaining();
}

// "Task 12 · 5 left in this project · 3 done this session": the count comes from the API after
// each task, without holding up the task itself.
let remaining = null;
function showProgress() {
  const parts = [];
  const task = state.revising ? state.revising.task : state.task;
  if (task) parts.push(`Task ${task.id}`);
  if (remaining !== null) parts.push(`${remaining} left in this project`);
  if (state.done) parts.push(`${state.done} done this session`);
  $("progress").textContent = parts.join(" · ");
}
async function refreshRemaining() {
  try {
    remaining = (await api(`/api/projects/${project.id}/tasks/remaining`)).remaining;
  } catch { remaining = null; }
  showProgress();
}

const selectedFlags = () => [...document.querySelectorAll("input[name=flag]:checked")].map((b) => b.value);

async function submit() {
  const ranking = groups();
  if (!state.task || state.busy) return;
  if (!ranking) return toast(state.mode === "pair" ? "Choose first: 1, 2, T or B" : "Rank first: move a response, or press K to keep the shown order");
  const flags = selectedFlags();
  const rationale = $("rationale").value.trim();
  // "Both bad" is a tie marked unusable: no pair, and the both_bad flag says why.
  if (state.choice === "bad" && !flags.includes("both_bad")) flags.push("both_bad");
  if (state.revising) return saveRevision(ranking, flags, rationale);
  const task = state.task;
  const winner = task.responses.find((r) => r.id === ranking[0][0]);
  state.busy = true;
  renderRanking();
  try {
    const reply = await api(`/api/tasks/${task.id}/rankings`, {
      method: "POST",
      body: { lease: state.lease.id, ranking, flags, rationale, time_spent_ms: Math.round(performance.now() - state.shownAt) },
    });
    state.lastRanking = { id: reply.ranking, task, prompt: state.prompt, groups: ranking, flags, rationale, choice: state.choice };
    $("revise-last").hidden = $("empty-revise").hidden = false;
    state.done += 1;
    state.last = ranking[0].length === 1 && state.choice !== "bad" ? { prompt: state.prompt, winner } : null;
    $("edit-winner").hidden = $("empty-edit-winner").hidden = !state.last;
    state.busy = false;
    toast("Saved");
    await loadNext();
  } catch (err) {
    state.busy = false;
    if (err.status === 409) {
      leaseLost();
      return;
    }
    renderRanking();
    showNotice("error", err.message);
  }
}

// ---- revising the last ranking: its task is shown again with that ranking; saving replaces it
// (the server keeps the old one on record) and the task in hand comes back as it was ----
const itemsFromGroups = (groups) => groups.flatMap((g) => g.map((id, j) => ({ id, tie: j > 0 })));

function forgetLastRanking() {
  state.lastRanking = null;
  $("revise-last").hidden = $("empty-revise").hidden = true;
}

function startRevision() {
  const last = state.lastRanking;
  if (!last || state.busy || state.revising) return;
  state.revising = { task: state.task, mode: state.mode, choice: state.choice, items: state.items, selected: state.selected,
    touched: state.touched, shownAt: state.shownAt, prompt: state.prompt, flags: selectedFlags(), rationale: $("rationale").value };
  state.task = last.task;
  state.mode = last.task.responses.length === 2 ? "pair" : "nway";
  state.choice = last.choice;
  state.items = itemsFromGroups(last.groups);
  state.touched = true;
  state.selected = null;
  state.shownAt = performance.now();
  $("empty").hidden = true;
  $("workspace").hidden = false;
  renderTask();
  setFlags(last.flags.filter((f) => f !== "both_bad"), last.rationale);
  renderRanking();
  $("revising-text").textContent = `Revising your last ranking (task ${last.task.id}). Saving replaces it; the earlier one stays on record.`;
  $("revising").hidden = false;
  clearNotice();
  window.scrollTo({ top: 0 });
}

function endRevision() {
  const back = state.revising;
  if (!back) return;
  state.revising = null;
  $("revising").hidden = true;
  if (!back.task) {
    state.task = null;
    $("workspace").hidden = true;
    $("empty").hidden = false;
    showProgress();
    return;
  }
  Object.assign(state, { task: back.task, mode: back.mode, choice: back.choice, items: back.items, selected: back.selected,
    touched: back.touched, shownAt: back.shownAt });
  renderTask();
  setFlags(back.flags, back.rationale);
  renderRanking();
  showProgress();
}

async function saveRevision(ranking, flags, rationale) {
  const last = state.lastRanking;
  state.busy = true;
  renderRanking();
  try {
    const reply = await api(`/api/rankings/${last.id}/revise`, {
      method: "POST", body: { ranking, flags, rationale, time_spent_ms: Math.round(performance.now() - state.shownAt) },
    });
    state.lastRanking = { ...last, id: reply.ranking, groups: ranking, flags, rationale, choice: state.choice };
    state.busy = false;
    endRevision();
    showNotice("info", `Your ranking of task ${last.task.id} is revised; the earlier one stays on record.`);
    toast("Revision saved");
  } catch (err) {
    state.busy = false;
    if (err.status === 409 || err.status === 404) {
      // The task closed meanwhile (its round moved on to training), or a newer ranking exists.
      forgetLastRanking();
      endRevision();
      showNotice("warn", `That ranking can no longer be revised: ${err.message}`);
      return;
    }
    renderRanking();
    showNotice("error", err.message);
  }
}

async function skip(reason) {
  if (!state.task || state.busy || state.revising) return;
  state.busy = true;
  try {
    await api(`/api/tasks/${state.task.id}/skip`, { method: "POST", body: { lease: state.lease.id, reason } });
    state.busy = false;
    toast("Skipped");
    await loadNext();
  } catch (err) {
    state.busy = false;
    if (err.status === 409) return leaseLost();
    showNotice("error", err.message);
  }
}

function openSkip() {
  if (!state.task || state.revising) return;
  const dialog = $("skip-dialog");
  $("skip-form").reset();
  dialog.showModal();
}

$("skip-dialog").addEventListener("close", () => {
  const dialog = $("skip-dialog");
  if (dialog.returnValue !== "skip") return;
  const picked = dialog.querySelector("input[name=reason]:checked").value;
  const own = $("skip-other").value.trim();
  const reason = picked === "other" ? own || "other" : own ? `${picked}: ${own}` : picked;
  skip(reason);
});

// ---- writing mode from the ranking page ----
let writeTarget = null;
function openWriter(target) {
  writeTarget = target;
  $("write-title").textContent = target.based_on ? "Improve the winning response" : "Write the ideal answer";
  const first = target.prompt.messages[target.prompt.messages.length - 1];
  $("write-context").textContent = `Prompt: ${(first && first.content || "").slice(0, 200)}`;
  $("write-text").value = target.based_on ? target.based_on.text : "";
  $("write-error").hidden = true;
  $("write-dialog").showModal();
  $("write-text").focus();
}

$("write-save").addEventListener("click", async () => {
  const text = $("write-text").value;
  if (!text.trim()) return showError($("write-error"), new Error("Write something first."));
  if (!writeTarget.prompt.id) return showError($("write-error"), new Error("This task does not say which prompt it belongs to."));
  try {
    await api(`/api/prompts/${writeTarget.prompt.id}/demonstrations`, {
      method: "POST", body: { text, based_on_response: writeTarget.based_on ? writeTarget.based_on.id : null },
    });
    $("write-dialog").close();
    if (writeTarget.based_on) { state.last = null; $("edit-winner").hidden = $("empty-edit-winner").hidden = true; }
    toast("Answer saved");
  } catch (err) {
    showError($("write-error"), err);
  }
});

clearErrorOnEdit($("write-form"), $("write-error"));
const writeIdeal = () => state.task && openWriter({ prompt: state.prompt, based_on: null });
const editWinner = () => state.last && openWriter({ prompt: state.last.prompt, based_on: state.last.winner });
$("write-ideal").addEventListener("click", writeIdeal);
$("edit-winner").addEventListener("click", editWinner);
$("empty-edit-winner").addEventListener("click", editWinner);
$("revise-last").addEventListener("click", startRevision);
$("empty-revise").addEventListener("click", startRevision);
$("revise-cancel").addEventListener("click", endRevision);
$("keep-order").addEventListener("click", keepOrder);

// ---- controls and keys ----
for (const b of document.querySelectorAll("#pair-choices button")) b.addEventListener("click", () => choose(b.dataset.choice));
$("submit").addEventListener("click", submit);
$("skip").addEventListener("click", openSkip);
$("retry").addEventListener("click", () => loadNext());
$("rationale").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); submit(); }
  if (e.key === "Escape") e.target.blur();
});

const FLAG_KEYS = { u: "unsafe", n: "nonsense", r: "refusal", o: "other" };

document.addEventListener("keydown", (e) => {
  if (e.ctrlKey || e.metaKey || e.altKey) return;
  if (document.querySelector("dialog[open]")) return;
  const tag = (e.target.tagName || "").toLowerCase();
  if (tag === "textarea" || (tag === "input" && e.target.type === "text")) return;
  const key = e.key.length === 1 ? e.key.toLowerCase() : e.key;
  if (key === "e" && !state.busy) { e.preventDefault(); editWinner(); return; }
  if (key === "z" && !state.busy) { e.preventDefault(); startRevision(); return; }
  if (key === "Escape" && state.revising) { e.preventDefault(); endRevision(); return; }
  if (!state.task || state.busy) return;
  let handled = true;
  if (state.mode === "pair" && (key === "1" || key === "2")) choose(key === "1" ? "A" : "B");
  else if (state.mode === "pair" && key === "t") choose("tie");
  else if (state.mode === "pair" && key === "b") choose("bad");
  else if (state.mode === "nway" && /^[1-8]$/.test(key)) pick(Number(key));
  else if (state.mode === "nway" && (key === "ArrowUp" || key === "ArrowDown") && state.selected !== null) move(state.selected, key === "ArrowUp" ? -1 : 1);
  else if (state.mode === "nway" && (key === "t" || key === "=") && state.selected !== null) toggleTie(state.selected);
  else if (state.mode === "nway" && key === "k") keepOrder();
  else if (key === "Enter" && tag !== "button") submit();
  else if (key === "s") openSkip();
  else if (FLAG_KEYS[key]) {
    const box = document.querySelector(`input[name=flag][value=${FLAG_KEYS[key]}]`);
    box.checked = !box.checked;
    toast(`${box.value}: ${box.checked ? "on" : "off"}`);
  } else if (key === "/") $("rationale").focus();
  else if (key === "w") writeIdeal();
  else if (key === "e") editWinner();
  else handled = false;
  if (handled) e.preventDefault();
});

// After a reload the page still knows the last ranking, so it can still be revised.
function pairChoice(task, groups, flags) {
  if (groups.length === 1) return flags.includes("both_bad") ? "bad" : "tie";
  return groups[0][0] === task.responses[0].id ? "A" : "B";
}

async function restoreLastRanking() {
  if (state.lastRanking) return;
  try {
    const last = await api(`/api/projects/${project.id}/rankings/last`);
    if (!last || !last.revisable || state.lastRanking) return;
    const { task } = last;
    state.lastRanking = { id: last.id, task, prompt: promptOf(task), groups: last.groups, flags: last.flags,
      rationale: last.rationale, choice: task.responses.length === 2 ? pairChoice(task, last.groups, last.flags) : null };
    $("revise-last").hidden = Boolean(state.revising);
    $("empty-revise").hidden = false;
  } catch { /* nothing to revise */ }
}

if ($("guidelines")) renderMarkdown($("guidelines"), project.guidelines);
loadNext();
restoreLastRanking();
