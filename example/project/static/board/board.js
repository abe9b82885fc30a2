// The live board: the user's tasks in columns, kept equal to the database by pgobserve's
// client. Two sockets: /ws/tasks/ (a query subscription on every task of the user's
// projects, an instance subscription for the detail pane, and the writes) and
// /ws/projects/ (the user's projects: the column names and the project pickers).
// Every change is drawn from what the server pushes, including our own writes: a write's
// reply is not applied locally, so the board shows what the database holds.

import { connect } from "/static/pgobserve/client.js";

const config = JSON.parse(document.getElementById("board-config").textContent);
const byId = (id) => document.getElementById(id);
const boardEl = byId("board");
const reducedMotion = window.matchMedia("(prefers-reduced-motion: reduce)");

const tasksClient = connect(config.sockets.tasks);
const projectsClient = connect(config.sockets.projects);

/** @type {Map<number, {id: number, name: string, slug: string}>} */
let projects = new Map();
/** The tasks in the collection's order (newest first). */
let tasks = [];
/** pk → card element on the board. */
const cards = new Map();
/** column key → column element. */
const columns = new Map();
let groupBy = localStorage.getItem("pgobserve-board-group-by") === "project" ? "project" : "status";
let tasksReady = false;
let projectsReady = false;
/** The detail pane's task: {pk, row (a LiveRow), returnFocus, previous (value)}. */
let detail = null;
/** The task the psql hint's toggle command names. */
let hintPk = null;
let deleteArmed = null;
let toastTimer = null;

// ---------------------------------------------------------------------------------------
// Connection indicator: the worse of the two sockets' states.

const STATE_ORDER = ["closed", "reconnecting", "connecting", "open"];
const STATE_TEXT = {
  connecting: "Connecting…",
  open: "Live",
  reconnecting: "Reconnecting…",
  closed: "Disconnected",
};

function showConnection() {
  const states = [tasksClient.state, projectsClient.state];
  const state = STATE_ORDER.find((s) => states.includes(s)) ?? "connecting";
  const indicator = byId("connection");
  if (indicator.dataset.state === state) return;
  indicator.dataset.state = state;
  indicator.querySelector(".connection-text").textContent = STATE_TEXT[state];
  document.body.classList.toggle("is-offline", state !== "open");
}

for (const client of [tasksClient, projectsClient]) {
  client.on("state", showConnection);
  client.on("error", (error) => {
    if (error && (error.status === 4401 || error.status === 4403)) {
      byId("session-ended").hidden = false;
    } else if (error && error.status) {
      toast(describe(error), "error");
    }
  });
}
showConnection();

// ---------------------------------------------------------------------------------------
// Columns: Open / Done, or one per project.

function wantedColumns() {
  if (groupBy === "project") {
    return [...projects.values()].map((p) => ({ key: `project-${p.id}`, name: p.name }));
  }
  return [
    { key: "open", name: "Open" },
    { key: "done", name: "Done" },
  ];
}

function columnKeyOf(task) {
  if (groupBy === "project") return `project-${task.project}`;
  return task.done ? "done" : "open";
}

function renderColumns() {
  const wanted = wantedColumns();
  const keys = new Set(wanted.map((c) => c.key));
  for (const [key, column] of columns) {
    if (!keys.has(key)) {
      column.remove();
      columns.delete(key);
    }
  }
  let previous = null;
  for (const { key, name } of wanted) {
    let column = columns.get(key);
    if (!column) {
      column = byId("column-template").content.firstElementChild.cloneNode(true);
      column.id = `column-${key}`;
      column.dataset.column = key;
      const heading = column.querySelector("h2");
      heading.id = `column-${key}-heading`;
      column.setAttribute("aria-labelledby", heading.id);
      columns.set(key, column);
    }
    column.querySelector("h2").textContent = name;
    const place = previous ? previous.nextElementSibling : boardEl.querySelector(".column");
    if (place !== column) boardEl.insertBefore(column, place);
    previous = column;
  }
  boardEl.dataset.groupBy = groupBy;
  if (groupBy === "project" && wanted.length === 0 && projectsReady) {
    boardEl.dataset.empty = "no-projects";
  } else {
    delete boardEl.dataset.empty;
  }
  renderCards(null, { quiet: true }); // regrouping is not a change of the data
}

// ---------------------------------------------------------------------------------------
// Cards: placed in their column in the collection's order; enter, leave and change are
// animated by CSS classes.

function liveSibling(node) {
  while (node && node.classList.contains("is-leaving")) node = node.nextElementSibling;
  return node;
}

function makeCard(task) {
  const card = byId("card-template").content.firstElementChild.cloneNode(true);
  card.id = `task-${task.id}`;
  card.dataset.taskId = String(task.id);
  const title = card.querySelector(".card-title");
  title.id = `task-${task.id}-title`;
  card.setAttribute("aria-labelledby", title.id);
  return card;
}

function fillCard(card, task) {
  const project = projects.get(task.project);
  card.dataset.done = String(task.done);
  card.dataset.projectId = String(task.project);
  card.classList.toggle("is-done", task.done);
  const title = card.querySelector(".card-title");
  if (title.textContent !== task.title) title.textContent = task.title;
  title.setAttribute("aria-label", `${task.title}: open details`);
  const done = card.querySelector(".card-done");
  if (!card.classList.contains("is-pending")) done.checked = task.done;
  done.setAttribute("aria-label", `Done: ${task.title}`);
  card.querySelector(".chip").textContent = project ? project.name : `project ${task.project}`;
  card.querySelector(".card-id").textContent = `#${task.id}`;
  const updated = card.querySelector(".card-updated");
  updated.dateTime = task.updated_at;
  updated.textContent = timeOf(task.updated_at);
}

const classTimers = new WeakMap();

/** Adds `name` to `element` for `ms` (restarting its animation if it had it already). */
function restartClass(element, name, ms = 1500) {
  element.classList.remove(name);
  void element.offsetWidth; // restart the animation
  element.classList.add(name);
  const timers = classTimers.get(element) ?? {};
  clearTimeout(timers[name]);
  timers[name] = setTimeout(() => element.classList.remove(name), ms);
  classTimers.set(element, timers);
}

function enter(card) {
  restartClass(card, "is-entering", 400);
}

function flash(card) {
  restartClass(card, "is-changed", 1500);
}

function leave(card) {
  card.classList.add("is-leaving");
  card.removeAttribute("id");
  card.dataset.testid = "task-card-leaving";
  card.querySelectorAll("button, input").forEach((el) => (el.disabled = true));
  const remove = () => card.remove();
  if (reducedMotion.matches) return remove();
  card.addEventListener("animationend", remove, { once: true });
  setTimeout(remove, 600); // in case no animation runs (hidden tab, styles missing)
}

/** Draws `tasks` into the columns; `change` (from the collection) says what to highlight;
 * `quiet`: move cards between columns without animating them (regrouping). */
function renderCards(change, { quiet = false } = {}) {
  if (!tasksReady || columns.size === 0) {
    updateCounts();
    return;
  }
  const perColumn = new Map([...columns.keys()].map((key) => [key, []]));
  for (const task of tasks) perColumn.get(columnKeyOf(task))?.push(task);
  const shown = new Set();
  for (const [key, columnTasks] of perColumn) {
    const container = columns.get(key).querySelector(".column-cards");
    let previous = null;
    for (const task of columnTasks) {
      shown.add(task.id);
      let card = cards.get(task.id);
      const isNew = !card;
      if (isNew) {
        card = makeCard(task);
        cards.set(task.id, card);
      }
      const moved = !isNew && card.parentElement !== container;
      fillCard(card, task);
      const place = liveSibling(previous ? previous.nextElementSibling : container.firstElementChild);
      if (place !== card) container.insertBefore(card, place);
      if (isNew || (moved && !quiet)) enter(card);
      if (moved && !quiet) flash(card);
      previous = card;
    }
  }
  for (const [pk, card] of cards) {
    if (!shown.has(pk)) {
      cards.delete(pk);
      leave(card);
    }
  }
  if (change && change.type === "update") {
    const card = cards.get(change.pk);
    if (card) flash(card);
  }
  updateCounts();
}

function updateCounts() {
  for (const column of columns.values()) {
    const count = column.querySelectorAll('[data-testid="task-card"]').length;
    column.querySelector(".count").textContent = String(count);
    column.classList.toggle("is-empty", count === 0);
  }
  const open = tasks.filter((t) => !t.done).length;
  document.title = tasksReady ? `(${open} open) Board · pgobserve` : "Board · pgobserve";
  updateHint();
}

// ---------------------------------------------------------------------------------------
// The subscriptions.

const projectList = projectsClient.subscribeQuery(
  {},
  {
    orderBy: ["name", "id"],
    onChange(items) {
      projects = new Map(items.map((p) => [p.id, p]));
      projectsReady = true;
      fillProjectPickers();
      renderColumns();
      markReady();
      if (detail?.row.value) fillDetail(detail.row.value, null);
    },
  },
);

const taskList = tasksClient.subscribeQuery(
  {},
  {
    orderBy: ["-id"],
    onChange(items, change) {
      tasks = items;
      tasksReady = true;
      renderCards(change);
      markReady();
    },
  },
);

projectList.ready.then(
  () => {
    projectsReady = true;
    projects = new Map(projectList.items.map((p) => [p.id, p]));
    fillProjectPickers();
    renderColumns();
    markReady();
  },
  (error) => toast(`Cannot load your projects: ${describe(error)}`, "error"),
);

taskList.ready.then(
  () => {
    tasksReady = true;
    tasks = taskList.items;
    renderCards(null);
    markReady();
  },
  (error) => toast(`Cannot load your tasks: ${describe(error)}`, "error"),
);

function markReady() {
  if (!tasksReady || !projectsReady || boardEl.dataset.ready) return;
  boardEl.querySelector(".board-loading")?.remove();
  boardEl.dataset.ready = "true";
  boardEl.removeAttribute("aria-busy");
  const wanted = /^#task-(\d+)$/.exec(location.hash);
  if (wanted) openDetail(Number(wanted[1]));
}

function fillProjectPickers() {
  for (const select of [byId("new-task-project"), byId("detail-project")]) {
    const selected = select.value;
    select.replaceChildren(
      ...[...projects.values()].map((p) => new Option(p.name, String(p.id))),
    );
    if (projects.has(Number(selected))) select.value = selected;
  }
  const form = byId("new-task");
  form.classList.toggle("is-disabled", projects.size === 0);
  byId("new-task-submit").disabled = projects.size === 0;
}

renderColumns();

// ---------------------------------------------------------------------------------------
// Writes: through the socket's CRUD actions. The board changes when the push arrives.

byId("new-task").addEventListener("submit", async (event) => {
  event.preventDefault();
  const input = byId("new-task-title");
  const title = input.value.trim();
  if (!title) return input.focus();
  const button = byId("new-task-submit");
  button.disabled = true;
  try {
    await tasksClient.create({ title, project: Number(byId("new-task-project").value) });
    input.value = "";
    input.focus();
  } catch (error) {
    toast(`Not added: ${describe(error)}`, "error");
  } finally {
    button.disabled = projects.size === 0;
  }
});

boardEl.addEventListener("change", async (event) => {
  const box = event.target;
  if (!box.classList.contains("card-done")) return;
  const card = box.closest(".card");
  const pk = Number(card.dataset.taskId);
  card.classList.add("is-pending");
  try {
    await tasksClient.patch(pk, { done: box.checked });
  } catch (error) {
    box.checked = !box.checked;
    toast(`Not changed: ${describe(error)}`, "error");
  } finally {
    card.classList.remove("is-pending");
  }
});

boardEl.addEventListener("click", (event) => {
  const title = event.target.closest(".card-title");
  if (title) openDetail(Number(title.closest(".card").dataset.taskId));
});

for (const radio of document.querySelectorAll('input[name="group-by"]')) {
  radio.checked = radio.value === groupBy;
  radio.addEventListener("change", () => {
    groupBy = radio.value;
    localStorage.setItem("pgobserve-board-group-by", groupBy);
    renderColumns();
  });
}

// ---------------------------------------------------------------------------------------
// The detail pane: an instance subscription on one task.

const pane = byId("detail");
const detailTitle = byId("detail-title");

function openDetail(pk) {
  if (detail?.pk === pk) return byId("detail-heading").focus();
  const returnFocus = detail?.returnFocus ?? document.activeElement;
  closeDetail({ restoreFocus: false });
  pane.hidden = false;
  pane.dataset.taskId = String(pk);
  pane.dataset.state = "loading";
  byId("detail-pk").textContent = `#${pk}`;
  byId("detail-log").replaceChildren();
  byId("detail-error").hidden = true;
  detailTitle.dataset.dirty = "";
  const admin = byId("detail-admin");
  if (admin && config.adminTask) admin.href = config.adminTask.replace("{pk}", pk);
  requestAnimationFrame(() => pane.classList.add("is-open"));
  document.body.classList.add("has-detail");
  const current = { pk, returnFocus, previous: null, row: null };
  detail = current;
  current.row = tasksClient.subscribeInstance(pk, {
    onChange(value, action) {
      if (detail === current) fillDetail(value, action);
    },
  });
  current.row.ready.catch((error) => {
    if (detail !== current) return;
    pane.dataset.state = "gone";
    byId("detail-gone").hidden = false;
    setDetailEnabled(false);
    log(`refused: ${describe(error)}`);
  });
  history.replaceState(null, "", `#task-${pk}`);
  for (const card of cards.values()) card.classList.toggle("is-selected", card === cards.get(pk));
  byId("detail-heading").focus();
}

function closeDetail({ restoreFocus = true } = {}) {
  disarm(); // a Delete armed for this task must not carry over to the next one
  if (!detail) return;
  const { row, returnFocus } = detail;
  detail = null;
  row.unsubscribe();
  pane.classList.remove("is-open");
  pane.hidden = true;
  delete pane.dataset.taskId;
  document.body.classList.remove("has-detail");
  for (const card of cards.values()) card.classList.remove("is-selected");
  if (location.hash) history.replaceState(null, "", location.pathname + location.search);
  if (restoreFocus && returnFocus?.isConnected) returnFocus.focus();
}

function setDetailEnabled(enabled) {
  for (const el of byId("detail-form").elements) el.disabled = !enabled;
}

function fillDetail(value, action) {
  const previous = detail.previous;
  if (action) log(summary(action, previous, value));
  if (value === null) {
    pane.dataset.state = "gone";
    byId("detail-gone").hidden = false;
    setDetailEnabled(false);
    detail.previous = null;
    return;
  }
  pane.dataset.state = "live";
  byId("detail-gone").hidden = true;
  setDetailEnabled(true);
  // Keep what the user is typing; anything else follows the row.
  if (!(detailTitle.dataset.dirty && document.activeElement === detailTitle)) {
    detailTitle.value = value.title;
    detailTitle.dataset.dirty = "";
  }
  byId("detail-project").value = String(value.project);
  byId("detail-done").checked = value.done;
  const updated = byId("detail-updated");
  updated.dateTime = value.updated_at;
  updated.textContent = new Date(value.updated_at).toLocaleString();
  if (action === "update") restartClass(pane, "is-changed");
  detail.previous = value;
}

function summary(action, before, after) {
  if (action === "reset") return after ? "snapshot: subscribed" : "snapshot: not visible";
  if (action === "delete" || after === null) return "delete: gone from your projects";
  if (!before) return `${action}`;
  const changed = Object.keys(after)
    .filter((k) => k !== "updated_at" && JSON.stringify(before[k]) !== JSON.stringify(after[k]))
    .map((k) => `${k} ${show(k, before[k])} → ${show(k, after[k])}`);
  return `${action}: ${changed.join(", ") || "touched"}`;
}

function show(key, value) {
  if (key === "project") return projects.get(value)?.name ?? String(value);
  return typeof value === "string" ? `“${value}”` : String(value);
}

function log(text) {
  const item = document.createElement("li");
  const time = document.createElement("time");
  time.textContent = new Date().toLocaleTimeString();
  item.append(time, " ", text);
  const list = byId("detail-log");
  list.prepend(item);
  while (list.children.length > 8) list.lastElementChild.remove();
}

detailTitle.addEventListener("input", () => (detailTitle.dataset.dirty = "1"));

byId("detail-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  if (!detail) return;
  const errorEl = byId("detail-error");
  errorEl.hidden = true;
  try {
    await tasksClient.patch(detail.pk, {
      title: detailTitle.value.trim(),
      project: Number(byId("detail-project").value),
    });
    detailTitle.dataset.dirty = "";
    toast("Saved");
  } catch (error) {
    errorEl.textContent = describe(error);
    errorEl.hidden = false;
  }
});

byId("detail-done").addEventListener("change", async (event) => {
  if (!detail) return;
  try {
    await tasksClient.patch(detail.pk, { done: event.target.checked });
  } catch (error) {
    event.target.checked = !event.target.checked;
    toast(`Not changed: ${describe(error)}`, "error");
  }
});

byId("detail-delete").addEventListener("click", async (event) => {
  const button = event.currentTarget;
  if (!detail) return;
  if (!deleteArmed) {
    button.textContent = "Click again to delete";
    button.classList.add("is-armed");
    deleteArmed = setTimeout(disarm, 4000);
    return;
  }
  disarm();
  try {
    await tasksClient.delete(detail.pk);
  } catch (error) {
    toast(`Not deleted: ${describe(error)}`, "error");
  }
});

function disarm() {
  clearTimeout(deleteArmed);
  deleteArmed = null;
  const button = byId("detail-delete");
  button.textContent = "Delete";
  button.classList.remove("is-armed");
}

byId("detail-close").addEventListener("click", () => closeDetail());
document.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && detail) closeDetail();
});

// ---------------------------------------------------------------------------------------
// The psql hint: the toggle command names a task on the board; copy buttons.

function updateHint() {
  const code = byId("psql-toggle");
  if (!code) return;
  if (hintPk === null || !tasks.some((t) => t.id === hintPk)) hintPk = tasks[0]?.id ?? null;
  const pk = hintPk === null ? "<id>" : String(hintPk);
  code.textContent = code.dataset.template.replace("{pk}", pk);
}

document.addEventListener("click", async (event) => {
  const button = event.target.closest("[data-copy]");
  if (!button) return;
  const code = byId(button.dataset.copy);
  try {
    await navigator.clipboard.writeText(code.textContent);
    button.textContent = "Copied";
  } catch {
    window.getSelection().selectAllChildren(code); // no clipboard access: select it instead
    button.textContent = "Selected";
  }
  setTimeout(() => (button.textContent = "Copy"), 1500);
});

// ---------------------------------------------------------------------------------------
// Small things.

function toast(message, kind = "info") {
  const el = byId("toast");
  el.textContent = message;
  el.dataset.kind = kind;
  el.hidden = false;
  restartClass(el, "is-shown", 300);
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => (el.hidden = true), kind === "error" ? 6000 : 2500);
}

/** A PgObserveError's field errors as a sentence. */
function describe(error) {
  if (!error) return "unknown error";
  if (Array.isArray(error.errors) && error.errors.length) {
    return error.errors
      .map((e) =>
        typeof e === "string"
          ? e
          : Object.entries(e)
              .map(([field, messages]) => `${field}: ${[].concat(messages).join(" ")}`)
              .join("; "),
      )
      .join("; ");
  }
  if (error.status === 0) return "no reply (the connection dropped; try again)";
  return error.message || String(error);
}

function timeOf(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  const today = new Date().toDateString() === date.toDateString();
  return today
    ? date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" })
    : date.toLocaleDateString();
}
