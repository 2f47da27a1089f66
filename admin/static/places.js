// The places list (server-side search by name and kind, paged) and the printable QR check-in codes.

import { ApiError, get } from "./api.js";
import { $, h, messageFor, toast } from "./dom.js";
import { canEdit, on, store } from "./store.js";
import { initQrKey, showQrKey } from "./qr-key.js";

let nextCursor = null;
let lastQuery = {};
let showOnMap = () => {};

function row(place) {
  return h(
    "tr",
    { dataset: { placeId: place.id } },
    h("th", { scope: "row" }, place.name),
    h("td", {}, place.kind),
    h("td", {}, place.address || ""),
    h("td", { class: "small" }, place.opening_hours || ""),
    h("td", {}, place.fences.map((f) => (f.kind === "circle" ? `circle ${Math.round(f.radius_m)} m` : "polygon")).join(", ")),
    h(
      "td",
      { class: "row-actions" },
      h("button", { type: "button", class: "small", onclick: () => showOnMap(place.id), "aria-label": `Show ${place.name} on the map` }, "Show on map"),
      h("button", { type: "button", class: "small", onclick: () => showQr(place.id), "aria-label": `QR code of ${place.name}` }, "QR"),
    ),
  );
}

async function search(event, { more = false } = {}) {
  if (event) event.preventDefault();
  const f = $("#places-search").elements;
  if (!more) {
    lastQuery = { q: f.q.value.trim(), kind: f.kind.value };
    nextCursor = null;
  }
  const body = $("#places-rows");
  try {
    const page = await get("/admin/v1/places", { ...lastQuery, cursor: more ? nextCursor : undefined, limit: 100 });
    for (const place of page.items) store.places.set(place.id, place);
    const rows = page.items.map(row);
    if (more) body.append(...rows);
    else body.replaceChildren(...rows);
    nextCursor = page.next_cursor;
    $("#places-more").hidden = nextCursor == null;
    const shown = body.children.length;
    $("#places-summary").textContent = shown
      ? `${shown} place${shown === 1 ? "" : "s"} shown${nextCursor != null ? " (more available)" : ""}.`
      : "No place matches.";
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    $("#places-summary").textContent = messageFor(error);
  }
}

function showQr(placeId) {
  document.querySelector("#tab-qr").click();
  $("#qr-place").value = String(placeId);
  renderQr();
}

function renderQr() {
  const id = $("#qr-place").value;
  const sheet = $("#qr-sheet");
  if (!id) {
    sheet.hidden = true;
    return;
  }
  const place = store.places.get(Number(id));
  if (!canEdit()) {
    // The code is a credential for checking in: the server gives it to editors and owners only.
    sheet.hidden = true;
    toast("QR codes are check-in credentials: only editors and owners can print them.");
    return;
  }
  const image = $("#qr-image");
  image.onerror = () => toast("The QR code could not be made (see the server's answer at its URL).", "error");
  image.src = `/admin/v1/places/${id}/qr.svg`;
  image.alt = `QR check-in code for ${place ? place.name : `place ${id}`}`;
  $("#qr-name").textContent = place ? place.name : `Place ${id}`;
  sheet.hidden = false;
}

export function showQrTab() {
  showQrKey();
}

export function initPlaces({ onShow }) {
  showOnMap = onShow;
  initQrKey({ onRotated: renderQr }); // the code on screen was signed with the old key
  $("#places-search").addEventListener("submit", search);
  $("#places-more").addEventListener("click", () => search(null, { more: true }));
  $("#qr-place").addEventListener("change", renderQr);
  $("#qr-print").addEventListener("click", () => {
    if (!$("#qr-place").value) {
      toast("Choose a place first.");
      return;
    }
    window.print();
  });
  on("session", () => {
    $("#places-rows").replaceChildren();
    $("#places-summary").textContent = "";
    $("#qr-sheet").hidden = true;
  });
}

export function showPlacesTab() {
  if (!$("#places-rows").children.length) search();
}
