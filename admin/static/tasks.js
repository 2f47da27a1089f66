// Staff tasks: the form and the board (open / notified / acknowledged / done, who and when).

import { ApiError, get, post } from "./api.js";
import { $, $$, clearErrors, formatDuration, formatTime, h, messageFor, showErrors, toast } from "./dom.js";
import { on, placeName } from "./store.js";

const STATUSES = ["open", "notified", "acknowledged", "done"];

function card(task) {
  const when = (label, value) => (value ? h("div", { class: "small" }, `${label} ${formatTime(value)}`) : null);
  const ackTook = task.acknowledged_at && task.notified_at ? (new Date(task.acknowledged_at) - new Date(task.notified_at)) / 1000 : null;
  return h(
    "li",
    { class: `task ${task.escalated_at ? "escalated" : ""}`, dataset: { taskId: task.id } },
    h("strong", {}, task.title),
    task.escalated_at ? h("span", { class: "tag warn" }, "escalated") : null,
    h("div", { class: "small muted" }, task.place_id != null ? placeName(task.place_id) : `every ${task.place_kind}`, task.team ? ` · team ${task.team}` : ""),
    task.body ? h("div", { class: "small" }, task.body) : null,
    task.assigned_device_id != null ? h("div", { class: "small" }, `Device #${task.assigned_device_id}`) : null,
    when("Created", task.created_at),
    when("Notified", task.notified_at),
    when("Acknowledged", task.acknowledged_at),
    ackTook != null ? h("div", { class: "small muted" }, `acknowledged after ${formatDuration(ackTook)}`) : null,
    when("Done", task.done_at),
    task.note ? h("blockquote", { class: "small" }, task.note) : null,
  );
}

export async function refreshBoard() {
  try {
    const tasks = await get("/admin/v1/tasks");
    for (const status of STATUSES) {
      const column = $(`#task-board [data-status="${status}"]`);
      const mine = tasks.filter((task) => task.status === status);
      $("ul", column).replaceChildren(...(mine.length ? mine.map(card) : [h("li", { class: "muted small empty" }, "nothing here")]));
      $("h3", column).dataset.count = String(mine.length);
    }
    const other = tasks.filter((task) => !STATUSES.includes(task.status));
    if (other.length) $(`#task-board [data-status="open"] ul`).append(...other.map(card));
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    toast(messageFor(error), "error");
  }
}

async function submit(event) {
  event.preventDefault();
  const form = event.currentTarget;
  const box = $("#task-form-errors");
  clearErrors(form, box);
  const f = form.elements;
  const body = {
    place_id: f.place_id.value ? Number(f.place_id.value) : null,
    title: f.title.value.trim(),
    body: f.body.value.trim(),
    team: f.team.value.trim() || null,
    ack_within_s: Math.round(Number(f.ack_within_min.value || 30) * 60),
  };
  try {
    const task = await post("/admin/v1/tasks", body);
    toast(`Created task “${task.title}”.`, "ok");
    f.title.value = "";
    f.body.value = "";
    refreshBoard();
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    error.problems = error.problems.map((problem) =>
      problem.field === "body" && /place_id/.test(problem.reason)
        ? { ...problem, field: "place_id", reason: "choose a place" }
        : problem,
    );
    showErrors(form, error, box, { ack_within_s: "ack_within_min" });
  }
}

export function initTasks() {
  $("#task-form").addEventListener("submit", submit);
  $("#tasks-refresh").addEventListener("click", refreshBoard);
  on("session", () => $$("#task-board ul").forEach((list) => list.replaceChildren()));
}
