// Content items with all their rules, a live preview of the push, and the list of existing items.

import { ApiError, del, get, post } from "./api.js";
import { $, $$, clearErrors, formatDuration, h, messageFor, showErrors, toast } from "./dom.js";
import { canEdit, on, placeName } from "./store.js";

const DAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
const TRIGGERS = { enter: "on entering", dwell: "after staying a while in", checkin: "on checking in at", exit: "on leaving" };

function form() {
  return $("#content-form");
}

function target() {
  return form().elements.target.value;
}

function values() {
  const f = form().elements;
  const text = (value) => (value.trim() === "" ? null : value.trim());
  const body = {
    title: f.title.value.trim(),
    body: f.body.value.trim(),
    trigger: f.trigger.value,
    zone: f.zone.value,
    audience_role: f.audience_role.value || null,
    audience_tags: f.audience_tags.value.split(",").map((tag) => tag.trim()).filter(Boolean),
    cooldown_s: Math.round(Number(f.cooldown_h.value || 0) * 3600),
    consent_purpose: f.consent_purpose.value,
    schedule: {},
  };
  if (target() === "place") body.place_id = f.place_id.value ? Number(f.place_id.value) : null;
  else body.place_kind = text(f.place_kind.value);
  if (text(f.deep_link.value)) body.deep_link = text(f.deep_link.value);
  if (text(f.image_url.value)) body.image_url = text(f.image_url.value);
  if (f.daily_cap.value !== "") body.daily_cap = Number(f.daily_cap.value);
  if (f.quiet_from.value || f.quiet_to.value) body.quiet_hours = [f.quiet_from.value, f.quiet_to.value];
  const schedule = body.schedule;
  if (f.valid_from.value) schedule.valid_from = f.valid_from.value;
  if (f.valid_to.value) schedule.valid_to = f.valid_to.value;
  const days = $$("input[name=day]:checked", form()).map((box) => Number(box.value));
  if (days.length && days.length < 7) schedule.days = days;
  if (f.hours_from.value || f.hours_to.value) schedule.hours = [f.hours_from.value, f.hours_to.value];
  if (f.only_when_open.checked) schedule.only_when_open = true;
  return body;
}

function ruleSummary(item) {
  const parts = [];
  const where = item.place_id != null ? placeName(item.place_id) : item.place_kind ? `any ${item.place_kind}` : "(no place chosen)";
  parts.push(`Sent ${TRIGGERS[item.trigger] || item.trigger} ${item.zone === "approach" ? "the approach zone of" : ""} ${where}`.replace(/\s+/g, " "));
  parts.push(item.audience_role ? `to ${item.audience_role}s` : "to everyone");
  if (item.audience_tags && item.audience_tags.length) parts.push(`tagged ${item.audience_tags.join(", ")}`);
  const s = item.schedule || {};
  const when = (value) => String(value).replace("T", " ");
  if (s.valid_from || s.valid_to) parts.push(`from ${s.valid_from ? when(s.valid_from) : "now"} until ${s.valid_to ? when(s.valid_to) : "further notice"}`);
  if (s.days && s.days.length) parts.push(`on ${s.days.map((d) => DAYS[d]).join(", ")}`);
  if (s.hours) parts.push(`between ${s.hours[0]} and ${s.hours[1]}`);
  if (s.only_when_open) parts.push("only while open");
  parts.push(item.cooldown_s ? `at most once per ${formatDuration(item.cooldown_s)} per visitor` : "no cooldown");
  if (item.daily_cap) parts.push(`at most ${item.daily_cap} a day per device`);
  if (item.quiet_hours) parts.push(`silent ${item.quiet_hours[0]}–${item.quiet_hours[1]} (device time)`);
  parts.push(`needs “${item.consent_purpose}” consent`);
  return `${parts.join(" · ")}.`;
}

function renderPreview() {
  const v = values();
  $("#pp-title").textContent = v.title || "Title of the push";
  $("#pp-body").textContent = v.body || "The message visitors will read.";
  const image = $("#pp-image");
  // Only same-origin images are previewed: the page loads nothing from other hosts.
  const sameOrigin = v.image_url && new URL(v.image_url, location.href).origin === location.origin;
  image.hidden = !sameOrigin;
  if (sameOrigin) image.src = v.image_url;
  $("#pp-rules").textContent = ruleSummary(v);
}

async function refreshList() {
  const list = $("#content-list");
  try {
    const items = await get("/admin/v1/content");
    list.replaceChildren(
      ...items.map((item) =>
        h(
          "li",
          { dataset: { contentId: item.id } },
          h("div", {}, h("strong", {}, item.title), item.active === false ? h("span", { class: "tag" }, "inactive") : null),
          h("div", { class: "small" }, item.body),
          h("div", { class: "small muted" }, ruleSummary(item)),
          canEdit()
            ? h("button", { type: "button", class: "small danger", "aria-label": `Delete content ${item.title}`, onclick: () => remove(item) }, "Delete")
            : null,
        ),
      ),
    );
    if (!items.length) list.replaceChildren(h("li", { class: "muted" }, "No content yet."));
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    list.replaceChildren(h("li", { class: "form-error" }, messageFor(error)));
  }
}

async function remove(item) {
  if (!window.confirm(`Delete “${item.title}”?`)) return;
  try {
    await del(`/admin/v1/content/${item.id}`);
    toast(`Deleted “${item.title}”.`, "ok");
    refreshList();
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    toast(messageFor(error), "error");
  }
}

/** Point the server's rule problems at the controls they are about (the rule parser reports them all as
 * `schedule`, and a missing target as `body`). */
function retarget(error) {
  error.problems = error.problems.map((problem) => {
    const reason = String(problem.reason || "").replace(/^content \d+: /, "").replace(/^Value error, /, "");
    let field = problem.field;
    if (/place_id|place_kind/.test(reason) && field === "body") field = target() === "kind" ? "place_kind" : "place_id";
    else if (/^quiet_hours/.test(reason)) field = "quiet_from";
    else if (/^schedule\.hours/.test(reason)) field = "hours_from";
    else if (/^schedule\.valid_from/.test(reason)) field = "valid_from";
    else if (/^schedule\.valid_to/.test(reason)) field = "valid_to";
    return { ...problem, field, reason };
  });
  return error;
}

async function submit(event) {
  event.preventDefault();
  const box = $("#content-form-errors");
  clearErrors(form(), box);
  try {
    const item = await post("/admin/v1/content", values());
    toast(`Created “${item.title}”.`, "ok");
    // Back to the defaults (rules left over from the last item are easy to miss), the place kept.
    const place = form().elements.place_id.value;
    form().reset();
    form().elements.place_id.value = place;
    syncTarget();
    renderPreview();
    refreshList();
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    showErrors(form(), retarget(error), box, { quiet_hours: "quiet_from" });
  }
}

function syncTarget() {
  $$("[data-target]", form()).forEach((node) => {
    node.hidden = node.dataset.target !== target();
  });
}

export function initContent() {
  const days = $(".days", form());
  DAYS.forEach((day, index) => {
    const id = `cf-day-${index}`;
    days.append(h("input", { type: "checkbox", id, name: "day", value: index }), h("label", { for: id }, day));
  });
  form().addEventListener("input", renderPreview);
  form().addEventListener("change", (event) => {
    if (event.target.name === "target") syncTarget();
    renderPreview();
  });
  form().addEventListener("submit", submit);
  on("session", () => $("#content-list").replaceChildren());
  renderPreview();
}

export function showContentTab() {
  renderPreview();
  refreshList();
}

/** Pre-select a place in the form (from the map or the places list). */
export function contentFor(placeId) {
  form().elements.target.value = "place";
  form().elements.place_id.value = String(placeId);
  syncTarget();
  renderPreview();
}
