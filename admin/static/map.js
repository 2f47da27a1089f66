// The geofence editor: every place of the organisation on a Leaflet map; Leaflet-Geoman draws, edits,
// moves and removes shapes of the selected place (or of a new one); the side form holds its fields; the
// server's validation errors are shown on the map at the point it names, and next to the fields.

import { ApiError, del, patch, post } from "./api.js";
import { $, clearErrors, h, messageFor, showErrors, toast } from "./dom.js";
import { canEdit, emit, on, removePlace, store, upsertPlace } from "./store.js";

const L = window.L;
const STYLE = { color: "#2458a6", weight: 2, opacity: 0.9, fillColor: "#3b7dd8", fillOpacity: 0.15 };
const STYLE_SELECTED = { color: "#d46a00", weight: 3, opacity: 1, fillColor: "#f29b38", fillOpacity: 0.25, dashArray: null };
const STYLE_ERROR = { color: "#c0182b", weight: 3, opacity: 1, fillColor: "#e0404f", fillOpacity: 0.25, dashArray: "6 4" };
const BLANK_TILE = "data:image/gif;base64,R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7";
// People who ask for less motion get maps that jump instead of gliding.
export const STILL = window.matchMedia("(prefers-reduced-motion: reduce)").matches;
const EDIT_OPTIONS = { allowSelfIntersection: true, snappable: true, snapDistance: 12 };

let map = null;
let placesLayer = null; // read-only shapes of every place, one FeatureGroup per place
let editGroup = null; // working copies of the selected place's shapes (Geoman acts only on these)
let errorLayer = null; // popups and markers of the server's geometry errors
const readOnlyGroups = new Map();
let selection = null; // {placeId: number|null, fences: [L.Layer], dirty: boolean}
let fittedOnce = false;

/** A Leaflet map with the configured tiles; it works (plain background) when no tile loads. */
export function createBaseMap(element, config) {
  const still = STILL;
  const base = L.map(element, {
    center: config.map_center,
    zoom: config.map_zoom,
    keyboard: true,
    zoomSnap: 0.5,
    zoomAnimation: !still,
    fadeAnimation: !still,
    markerZoomAnimation: !still,
    inertia: !still,
  });
  if (config.tile_url) {
    // A tile that does not load leaves the plain background; nothing else depends on tiles.
    const tiles = L.tileLayer(config.tile_url, {
      maxZoom: 19,
      attribution: config.tile_attribution,
      errorTileUrl: BLANK_TILE,
    });
    tiles.on("tileerror", () => element.classList.add("tiles-offline"));
    tiles.on("tileload", (event) => {
      if (event.tile && event.tile.src !== BLANK_TILE) element.classList.remove("tiles-offline");
    });
    tiles.addTo(base);
  }
  L.control.scale({ imperial: false }).addTo(base);
  return base;
}

export function fenceLayer(fence, style, editable) {
  const options = { ...style, pmIgnore: !editable };
  const geometry = fence.geometry;
  if (geometry.type === "Point") {
    return L.circle([geometry.coordinates[1], geometry.coordinates[0]], { ...options, radius: fence.radius_m });
  }
  const levels = geometry.type === "MultiPolygon" ? 2 : 1;
  return L.polygon(L.GeoJSON.coordsToLatLngs(geometry.coordinates, levels), options);
}

function toFence(layer) {
  if (layer instanceof L.Circle) {
    const centre = layer.getLatLng();
    return { geometry: { type: "Point", coordinates: [centre.lng, centre.lat] }, radius_m: Math.round(layer.getRadius() * 10) / 10 };
  }
  return { geometry: layer.toGeoJSON(15).geometry };
}

function centreOf(layer) {
  return layer instanceof L.Circle ? layer.getLatLng() : layer.getBounds().getCenter();
}

function areaM2(layer) {
  if (layer instanceof L.Circle) return Math.PI * layer.getRadius() ** 2;
  const rings = layer.getLatLngs();
  const polygons = Array.isArray(rings[0][0]) ? rings : [rings];
  let total = 0;
  for (const polygon of polygons) {
    polygon.forEach((ring, index) => {
      let sum = 0;
      const lat0 = (ring[0].lat * Math.PI) / 180;
      const k = 6371008.8;
      for (let i = 0; i < ring.length; i += 1) {
        const a = ring[i];
        const b = ring[(i + 1) % ring.length];
        const ax = ((a.lng * Math.PI) / 180) * Math.cos(lat0) * k;
        const bx = ((b.lng * Math.PI) / 180) * Math.cos(lat0) * k;
        sum += ax * ((b.lat * Math.PI) / 180) * k - bx * ((a.lat * Math.PI) / 180) * k;
      }
      total += (index === 0 ? 1 : -1) * Math.abs(sum / 2);
    });
  }
  return total;
}

function describe(layer) {
  if (layer instanceof L.Circle) return `Circle, radius ${Math.round(layer.getRadius())} m`;
  const rings = layer.getLatLngs();
  const polygons = Array.isArray(rings[0][0]) ? rings : [rings];
  const vertices = polygons.reduce((n, polygon) => n + polygon.reduce((m, ring) => m + ring.length, 0), 0);
  const kind = polygons.length > 1 ? "Multipolygon" : polygons[0].length > 1 ? "Polygon with holes" : "Polygon";
  return `${kind}, ${vertices} vertices, ${Math.round(areaM2(layer)).toLocaleString()} m²`;
}

// --- the places layer --------------------------------------------------------------------------------

function renderPlaces() {
  if (!map) return;
  placesLayer.clearLayers();
  readOnlyGroups.clear();
  for (const place of store.places.values()) {
    const group = L.featureGroup(
      place.fences.map((fence) => fenceLayer(fence, STYLE, false)),
      { pmIgnore: true },
    );
    group.bindTooltip(place.name, { sticky: true, className: "place-tooltip" });
    group.on("click", (event) => {
      if (map.pm.globalDrawModeEnabled()) return;
      L.DomEvent.stopPropagation(event);
      select(place.id);
    });
    readOnlyGroups.set(place.id, group);
    if (!selection || selection.placeId !== place.id) placesLayer.addLayer(group);
  }
  const count = store.places.size;
  $("#place-count").textContent = store.placesLoaded
    ? `${count} place${count === 1 ? "" : "s"} in this organisation.`
    : "Loading places…";
  if (!fittedOnce && store.places.size) {
    fittedOnce = true;
    map.fitBounds(placesLayer.getBounds(), { maxZoom: 17, padding: [20, 20], animate: !STILL });
  }
}

// --- selection and the side form ---------------------------------------------------------------------

function form() {
  return $("#place-form");
}

function fillForm(place) {
  const f = form();
  f.elements.name.value = place ? place.name : "";
  f.elements.kind.value = place ? place.kind : "";
  f.elements.address.value = (place && place.address) || "";
  f.elements.opening_hours.value = (place && place.opening_hours) || "";
  f.elements.timezone.value = (place && place.timezone) || "Europe/Helsinki";
  f.elements.approach_m.value = place && place.approach_m != null ? place.approach_m : "";
  const tuned = place && place.gps_tuning && Object.keys(place.gps_tuning).length;
  f.elements.gps_tuning.value = tuned ? JSON.stringify(place.gps_tuning) : "";
  $("#pf-gps").open = Boolean(tuned);
  $("#place-form-title").textContent = place ? place.name : "New place";
  $("#place-form-note").textContent = place
    ? `Shapes you draw now are added to this place${place.external_ref ? ` · ${place.external_ref}` : ""}.`
    : "Fill in the fields and save; shapes you draw now belong to this new place.";
  $("#pf-delete").hidden = !place;
}

function renderFenceList(errors = new Map()) {
  const list = $("#pf-fences");
  if (!selection) {
    list.replaceChildren();
    return;
  }
  list.replaceChildren(
    ...selection.fences.map((layer, index) =>
      h(
        "li",
        { class: errors.has(index) ? "error" : "" },
        h("span", {}, `${index + 1}. ${describe(layer)}`),
        errors.has(index) ? h("span", { class: "field-error" }, errors.get(index)) : null,
        h("button", { type: "button", class: "small", onclick: () => map.fitBounds(boundsOf(layer), { maxZoom: 18, animate: !STILL }) }, "Show"),
        canEdit()
          ? h("button", { type: "button", class: "small danger", "aria-label": `Remove shape ${index + 1}`, onclick: () => removeFence(layer) }, "Remove")
          : null,
      ),
    ),
  );
  $("#pf-save").textContent = selection.placeId == null ? "Create place" : "Save place";
  $("#pf-cancel").textContent = selection.dirty ? "Discard changes" : "Close";
}

function boundsOf(layer) {
  return layer instanceof L.Circle ? layer.getBounds() : layer.getBounds().pad(0.2);
}

function showForm() {
  form().hidden = false;
  $("#place-empty").hidden = true;
  $("#map-hint").hidden = true;
  for (const control of form().elements) {
    if (control.id !== "pf-cancel") control.disabled = !canEdit() && control.tagName !== "FIELDSET";
  }
}

function hideForm() {
  form().hidden = true;
  $("#place-empty").hidden = false;
  $("#map-hint").hidden = !canEdit();
  clearErrors(form(), $("#place-form-errors"));
}

function addWorkingLayer(layer) {
  if (!editGroup.hasLayer(layer)) editGroup.addLayer(layer);
  layer.setStyle(STYLE_SELECTED);
  if (canEdit() && layer.pm) layer.pm.enable(EDIT_OPTIONS);
}

function endSelection() {
  if (!selection) return;
  for (const layer of selection.fences) if (layer.pm) layer.pm.disable();
  editGroup.clearLayers();
  errorLayer.clearLayers();
  const group = selection.placeId != null && readOnlyGroups.get(selection.placeId);
  selection = null;
  if (group) placesLayer.addLayer(group);
  hideForm();
}

/** Select a place: its shapes become editable working copies, its fields go to the side form. */
export function select(placeId, { zoom = false } = {}) {
  const place = store.places.get(placeId);
  if (!place || !map) return;
  if (selection && selection.placeId === placeId) {
    if (zoom) map.fitBounds(editGroup.getBounds(), { maxZoom: 18, animate: !STILL });
    return;
  }
  if (selection && selection.dirty && !window.confirm("Discard the unsaved changes of the place being edited?")) return;
  endSelection();
  const group = readOnlyGroups.get(placeId);
  if (group) placesLayer.removeLayer(group);
  selection = { placeId, fences: [], dirty: false };
  for (const fence of place.fences) {
    const layer = fenceLayer(fence, STYLE_SELECTED, true);
    selection.fences.push(layer);
    addWorkingLayer(layer);
  }
  fillForm(place);
  showForm();
  renderFenceList();
  if (zoom && selection.fences.length) map.fitBounds(editGroup.getBounds(), { maxZoom: 18, animate: !STILL });
  emit("place-selected", placeId);
}

function startDraft(layer) {
  endSelection();
  selection = { placeId: null, fences: [layer], dirty: true };
  addWorkingLayer(layer);
  fillForm(null);
  showForm();
  renderFenceList();
  form().elements.name.focus({ preventScroll: true });
}

function markDirty(layer) {
  if (!selection) return;
  selection.dirty = true;
  if (layer && selection.fences.includes(layer)) layer.setStyle(STYLE_SELECTED);
  renderFenceList();
}

function addShape(layer) {
  if (selection) {
    selection.fences.push(layer);
    addWorkingLayer(layer);
    markDirty();
  } else {
    startDraft(layer);
  }
}

function removeFence(layer) {
  if (!selection) return;
  selection.fences = selection.fences.filter((item) => item !== layer);
  if (editGroup.hasLayer(layer)) editGroup.removeLayer(layer);
  if (selection.placeId == null && !selection.fences.length) {
    endSelection();
    return;
  }
  markDirty();
}

function formValues() {
  const f = form().elements;
  const text = (value) => (value.trim() === "" ? null : value.trim());
  const body = {
    name: f.name.value.trim(),
    kind: f.kind.value.trim(),
    address: text(f.address.value),
    opening_hours: text(f.opening_hours.value),
    approach_m: f.approach_m.value === "" ? null : Number(f.approach_m.value),
    gps_tuning: {},
  };
  const tuning = f.gps_tuning.value.trim();
  if (tuning) {
    try {
      body.gps_tuning = JSON.parse(tuning);
    } catch {
      body.gps_tuning = tuning; // not JSON: the server says so next to the field
    }
  }
  if (f.timezone.value.trim()) body.timezone = f.timezone.value.trim();
  return body;
}

function showGeometryErrors(error) {
  errorLayer.clearLayers();
  const byFence = new Map();
  for (const problem of error.problems) {
    const match = /^fences\[(\d+)\]/.exec(problem.field || "");
    if (!match) continue;
    const index = Number(match[1]);
    const layer = selection.fences[index];
    if (!layer) continue;
    layer.setStyle(STYLE_ERROR);
    byFence.set(index, byFence.has(index) ? `${byFence.get(index)}; ${problem.reason}` : problem.reason);
    const anchor = Array.isArray(problem.point) ? L.latLng(problem.point[1], problem.point[0]) : centreOf(layer);
    if (Array.isArray(problem.point)) {
      errorLayer.addLayer(L.circleMarker(anchor, { radius: 8, color: "#c0182b", weight: 3, fillColor: "#fff", fillOpacity: 1, pmIgnore: true, interactive: false }));
    }
    const popup = L.popup({ className: "pc-error-popup", autoClose: false, closeOnClick: false, autoPan: true, maxWidth: 280 })
      .setLatLng(anchor)
      .setContent(h("div", { role: "alert", dataset: { code: problem.code || "", field: problem.field } }, h("strong", {}, `Shape ${index + 1}: `), problem.reason));
    errorLayer.addLayer(popup);
  }
  renderFenceList(byFence);
}

async function save(event) {
  event.preventDefault();
  if (!selection) return;
  const box = $("#place-form-errors");
  clearErrors(form(), box);
  errorLayer.clearLayers();
  selection.fences.forEach((layer) => layer.setStyle(STYLE_SELECTED));
  const body = { ...formValues(), fences: selection.fences.map(toFence) };
  const button = $("#pf-save");
  button.disabled = true;
  try {
    const place =
      selection.placeId == null
        ? await post("/admin/v1/places", body)
        : await patch(`/admin/v1/places/${selection.placeId}`, body);
    selection.dirty = false;
    endSelection();
    upsertPlace(place);
    toast(`Saved “${place.name}” with ${place.fences.length} geofence${place.fences.length === 1 ? "" : "s"}.`, "ok");
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    // Problems of a shape are shown on the map and in the list of shapes; the rest next to the fields.
    const onShapes = error.problems.filter((p) => /^fences\[\d+\]/.test(p.field || ""));
    const elsewhere = error.problems.filter((p) => !onShapes.includes(p));
    if (elsewhere.some((p) => /^gps_tuning\b/.test(p.field || ""))) $("#pf-gps").open = true;
    if (elsewhere.length || !onShapes.length) {
      const rest = Object.assign(new ApiError(error.status, error.body), { problems: elsewhere });
      showErrors(form(), rest, box);
    }
    if (onShapes.length) {
      showGeometryErrors(error);
      if (!elsewhere.length) box.replaceChildren(h("div", {}, "A shape is not valid: see the message on the map."));
    }
    if (error.status !== 422 && !error.problems.length) box.replaceChildren(h("div", {}, messageFor(error)));
    box.hidden = false;
  } finally {
    button.disabled = !canEdit();
  }
}

async function deleteSelected() {
  if (!selection || selection.placeId == null) return;
  const place = store.places.get(selection.placeId);
  if (!window.confirm(`Delete “${place.name}” with its geofences, content and tasks?`)) return;
  try {
    await del(`/admin/v1/places/${place.id}`);
    selection.dirty = false;
    endSelection();
    removePlace(place.id);
    toast(`Deleted “${place.name}”.`, "ok");
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    showErrors(form(), error, $("#place-form-errors"));
  }
}

function addCircleAtCentre() {
  const radius = Number($("#pf-circle-radius").value) || 40;
  addShape(L.circle(map.getCenter(), { ...STYLE_SELECTED, radius }));
}

// --- Geoman ------------------------------------------------------------------------------------------

function configureTools() {
  map.pm.removeControls();
  if (!canEdit()) return;
  map.pm.setGlobalOptions({
    ...EDIT_OPTIONS,
    layerGroup: editGroup,
    pathOptions: STYLE_SELECTED,
    templineStyle: { color: "#d46a00" },
    hintlineStyle: { color: "#d46a00", dashArray: [5, 5] },
  });
  map.pm.addControls({
    position: "topleft",
    drawMarker: false,
    drawCircleMarker: false,
    drawPolyline: false,
    drawText: false,
    cutPolygon: false,
    rotateMode: false,
    drawPolygon: true,
    drawRectangle: true,
    drawCircle: true,
    editMode: true,
    dragMode: true,
    removalMode: true,
  });
  // Geoman puts the name on the container; give it to the focusable button too.
  for (const container of map.getContainer().querySelectorAll(".leaflet-pm-toolbar .button-container[title]")) {
    const button = container.querySelector("a.leaflet-buttons-control-button");
    if (button) button.setAttribute("aria-label", container.getAttribute("title"));
  }
}

export function initMap(config) {
  map = createBaseMap($("#map"), config);
  placesLayer = L.featureGroup([], { pmIgnore: true }).addTo(map);
  editGroup = L.featureGroup([], { pmIgnore: true }).addTo(map);
  errorLayer = L.layerGroup([], { pmIgnore: true }).addTo(map);
  map.on("pm:create", (event) => addShape(event.layer));
  map.on("pm:remove", (event) => {
    if (selection && selection.fences.includes(event.layer)) removeFence(event.layer);
  });
  editGroup.on("pm:edit pm:dragend", (event) => markDirty(event.layer));
  form().addEventListener("submit", save);
  form().addEventListener("input", () => markDirty());
  form().addEventListener("keydown", (event) => {
    if (event.key === "Escape" && (!selection || !selection.dirty || window.confirm("Discard the changes?"))) cancel();
  });
  $("#pf-cancel").addEventListener("click", cancel);
  $("#pf-delete").addEventListener("click", deleteSelected);
  $("#pf-add-circle").addEventListener("click", addCircleAtCentre);
  const zones = typeof Intl.supportedValuesOf === "function" ? Intl.supportedValuesOf("timeZone") : ["Europe/Helsinki", "UTC"];
  $("#timezone-options").replaceChildren(...zones.map((zone) => h("option", { value: zone })));
  on("places", renderPlaces);
  on("session", () => {
    endSelection();
    fittedOnce = false;
    configureTools();
  });
  configureTools();
  renderPlaces();
  // Handy for people (and tests) who want to drive the map from the console.
  window.placecast = { ...(window.placecast || {}), map, select };
  return map;
}

function cancel() {
  if (selection) {
    selection.dirty = false;
    endSelection();
  }
}

export function getMap() {
  return map;
}
