// Webhook subscriptions, their dead-letter list and retry.

import { ApiError, del, get, post } from "./api.js";
import { $, $$, clearErrors, formatTime, h, messageFor, showErrors, toast } from "./dom.js";
import { canEdit, on } from "./store.js";

const EVENT_KINDS = ["enter", "exit", "dwell", "checkin", "checkout"];
let openSubscription = null;

export async function refreshWebhooks() {
  const list = $("#webhook-list");
  try {
    const { items } = await get("/admin/v1/webhooks");
    list.replaceChildren(
      ...items.map((hook) =>
        h(
          "li",
          { dataset: { webhookId: hook.id } },
          h("strong", {}, hook.url),
          h("span", { class: `tag ${hook.active ? "" : "warn"}` }, hook.active ? "active" : "inactive"),
          h("div", { class: "small muted" }, `${hook.event_types.length ? hook.event_types.join(", ") : "every event"} · since ${formatTime(hook.created_at)}`),
          h(
            "div",
            { class: "row-actions" },
            h("button", { type: "button", class: "small", onclick: () => showDead(hook) }, "Dead letters"),
            canEdit()
              ? h("button", { type: "button", class: "small danger", "aria-label": `Delete webhook ${hook.url}`, onclick: () => remove(hook) }, "Delete")
              : null,
          ),
        ),
      ),
    );
    if (!items.length) list.replaceChildren(h("li", { class: "muted" }, "No subscriptions."));
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    list.replaceChildren(h("li", { class: "form-error" }, messageFor(error)));
  }
}

async function showDead(hook) {
  openSubscription = hook;
  const card = $("#dead-letters");
  card.hidden = false;
  $("#dead-title").textContent = `Dead letters of ${hook.url}`;
  const rows = $("#dead-rows");
  try {
    const { items } = await get(`/admin/v1/webhooks/${hook.id}/deliveries`, { status: "dead" });
    rows.replaceChildren(
      ...items.map((delivery) =>
        h(
          "tr",
          {},
          h("td", {}, `#${delivery.id}`),
          h("td", {}, `#${delivery.event_id}`),
          h("td", {}, delivery.attempts),
          h("td", { class: "small" }, delivery.last_error || ""),
          h("td", { class: "small" }, formatTime(delivery.created_at)),
          h(
            "td",
            {},
            canEdit() ? h("button", { type: "button", class: "small", onclick: () => retry(delivery) }, "Retry") : null,
          ),
        ),
      ),
    );
    if (!items.length) rows.replaceChildren(h("tr", {}, h("td", { colspan: 6, class: "muted" }, "No dead letters: every delivery got through or is still being tried.")));
    card.scrollIntoView({ block: "nearest" });
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    rows.replaceChildren(h("tr", {}, h("td", { colspan: 6, class: "form-error" }, messageFor(error))));
  }
}

async function retry(delivery) {
  try {
    await post(`/admin/v1/webhook-deliveries/${delivery.id}/retry`);
    toast(`Delivery #${delivery.id} is queued again.`, "ok");
    if (openSubscription) showDead(openSubscription);
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    toast(messageFor(error), "error");
  }
}

async function remove(hook) {
  if (!window.confirm(`Stop sending events to ${hook.url}?`)) return;
  try {
    await del(`/admin/v1/webhooks/${hook.id}`);
    toast("Subscription deleted.", "ok");
    $("#dead-letters").hidden = true;
    refreshWebhooks();
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    toast(messageFor(error), "error");
  }
}

async function submit(event) {
  event.preventDefault();
  const form = event.currentTarget;
  const box = $("#webhook-form-errors");
  clearErrors(form, box);
  const body = {
    url: form.elements.url.value.trim(),
    event_types: $$("input[name=event_type]:checked", form).map((box) => box.value),
  };
  try {
    const created = await post("/admin/v1/webhooks", body);
    const secret = $("#webhook-secret");
    secret.replaceChildren(
      "Signing secret (shown once; the receiver checks X-Placecast-Signature with it): ",
      h("code", {}, created.secret),
    );
    secret.hidden = false;
    form.elements.url.value = "";
    refreshWebhooks();
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    showErrors(form, error, box);
  }
}

export function initWebhooks() {
  const form = $("#webhook-form");
  const group = $("[data-field=event_types]", form);
  for (const kind of EVENT_KINDS) {
    const id = `wf-kind-${kind}`;
    group.append(h("input", { type: "checkbox", id, name: "event_type", value: kind }), h("label", { for: id }, kind));
  }
  form.addEventListener("submit", submit);
  on("session", () => {
    $("#webhook-list").replaceChildren();
    $("#dead-letters").hidden = true;
    $("#webhook-secret").hidden = true;
  });
}
