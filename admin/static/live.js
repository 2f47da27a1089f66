// Live activity: enters, exits, dwells, check-ins, pushes and task updates as they happen (server-sent
// events), in a feed and as pulsing markers on the live map and the editor map.

import { openStream } from "./api.js";
import { $, formatClock, h } from "./dom.js";
import { emit, on, placeName, store } from "./store.js";
import { STILL, createBaseMap, fenceLayer } from "./map.js";

const L = window.L;
const VERBS = { enter: "entered", exit: "left", dwell: "is staying at", checkin: "checked in at", checkout: "checked out of" };
const PULSE_MS = 60000;
const FEED_MAX = 200;

let stream = null;
let liveMap = null;
let outlines = null;
let pulses = null;
let editorMap = () => null;
let unseen = 0;
let visible = () => false;
const recent = [];

function placeCentre(placeId) {
  const place = store.places.get(Number(placeId));
  if (!place || !place.fences.length) return null;
  const layer = fenceLayer(place.fences[0], {}, false);
  return layer instanceof L.Circle ? layer.getLatLng() : layer.getBounds().getCenter();
}

function where(item) {
  if (Number.isFinite(item.lat) && Number.isFinite(item.lon)) return L.latLng(item.lat, item.lon);
  return item.place_id != null ? placeCentre(item.place_id) : null;
}

function pulseOn(target, latlng, kind, label) {
  if (!target || !latlng) return;
  const marker = L.marker(latlng, {
    icon: L.divIcon({ className: `pulse pulse-${kind}`, iconSize: [18, 18], html: "<span></span>" }),
    keyboard: false,
    pmIgnore: true,
    title: label,
  });
  marker.bindTooltip(label);
  marker.addTo(target);
  setTimeout(() => marker.remove(), PULSE_MS);
}

function describe(message) {
  if (message.type === "push") {
    const title = message.title || (message.notification && message.notification.title) || "a push";
    const to = message.device_id != null ? ` to device #${message.device_id}` : "";
    const at = message.place_name || (message.place_id != null ? placeName(message.place_id) : "");
    const status = message.status ? ` (${message.status})` : "";
    return { kind: "push", label: "push", text: `Push “${title}”${to}${at ? ` at ${at}` : ""}${status}` };
  }
  if (message.type === "task") {
    const title = (message.title || "").replace(/^Task: /, "") || (message.task_id != null ? `task #${message.task_id}` : "a task");
    const who = message.device_id != null ? ` by device #${message.device_id}` : "";
    return { kind: "task", label: "task", text: `Task “${title}” is ${message.status || "updated"}${who}` };
  }
  const verb = VERBS[message.kind] || message.kind || "was seen at";
  const device = message.device_id != null ? `Device #${message.device_id}` : "A device";
  const place = message.place_name || placeName(message.place_id) || "a place";
  const zone = message.zone === "approach" ? " (approach zone)" : "";
  return { kind: message.kind || "event", label: message.kind || "event", text: `${device} ${verb} ${place}${zone}` };
}

function add(message) {
  const item = describe(message);
  const when = message.occurred_at || message.sent_at || message.at || null;
  const feed = $("#live-feed");
  const entry = h(
    "li",
    { class: `feed-item kind-${item.kind}`, dataset: { kind: item.kind } },
    h("time", { datetime: when || new Date().toISOString() }, formatClock(when)),
    h("span", { class: `tag kind-${item.kind}` }, item.label),
    h("span", { class: "feed-text" }, item.text),
  );
  feed.prepend(entry);
  while (feed.children.length > FEED_MAX) feed.lastElementChild.remove();
  const latlng = where(message);
  const stamped = { latlng, kind: item.kind, text: item.text, at: Date.now() };
  recent.push(stamped);
  while (recent.length > 100) recent.shift();
  if (pulses) pulseOn(pulses, latlng, item.kind, item.text);
  pulseOn(editorMap(), latlng, item.kind, item.text);
  if (!visible()) {
    unseen += 1;
    $("#live-badge").textContent = String(unseen);
    $("#live-badge").hidden = false;
  }
  if (message.type === "task") emit("task-changed", message);
  if (message.type === "push") emit("push", message);
}

function setState(state) {
  const label = { connecting: "connecting…", open: "connected", error: "reconnecting…", ended: "reconnecting…", closed: "stopped" }[state] || state;
  const node = $("#live-state");
  node.textContent = label;
  node.dataset.state = state;
}

export function startLive() {
  stopLive();
  $("#live-feed").replaceChildren();
  stream = openStream("/admin/v1/live", {
    onEvent: ({ data }) => {
      if (data && typeof data === "object") add(data);
      return false;
    },
    onState: setState,
  });
}

export function stopLive() {
  if (stream) stream.close();
  stream = null;
  setState("closed");
}

function drawOutlines() {
  if (!outlines) return;
  outlines.clearLayers();
  for (const place of store.places.values()) {
    for (const fence of place.fences) {
      outlines.addLayer(fenceLayer(fence, { color: "#5a6b80", weight: 1, fillOpacity: 0.08, interactive: false }, false));
    }
  }
}

export function showLiveTab() {
  unseen = 0;
  $("#live-badge").hidden = true;
  if (!liveMap) {
    liveMap = createBaseMap($("#live-map"), store.config);
    outlines = L.featureGroup([], { pmIgnore: true }).addTo(liveMap);
    pulses = L.layerGroup([], { pmIgnore: true }).addTo(liveMap);
    drawOutlines();
    if (outlines.getLayers().length) liveMap.fitBounds(outlines.getBounds(), { maxZoom: 16, animate: !STILL });
    for (const item of recent) {
      if (Date.now() - item.at < PULSE_MS) pulseOn(pulses, item.latlng, item.kind, item.text);
    }
  }
  liveMap.invalidateSize();
}

export function initLive({ getEditorMap, isVisible }) {
  editorMap = getEditorMap;
  visible = isVisible;
  on("places", drawOutlines);
  window.placecast = { ...(window.placecast || {}), liveMap: () => liveMap };
}
