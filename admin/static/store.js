// What the page knows: who is signed in, for which organisation and role, and the organisation's places.

import { getAll } from "./api.js";
import { h, $$ } from "./dom.js";

export const store = {
  config: null,
  user: null,
  organisations: [],
  organisation: null,
  places: new Map(),
  placesLoaded: false,
};

const listeners = new Map();

export function on(name, handler) {
  if (!listeners.has(name)) listeners.set(name, []);
  listeners.get(name).push(handler);
}

export function emit(name, payload) {
  for (const handler of listeners.get(name) || []) {
    try {
      handler(payload);
    } catch (error) {
      console.error(`listener of ${name} failed`, error);
    }
  }
}

export function role() {
  return store.organisation ? store.organisation.role : null;
}

export function canEdit() {
  return role() === "owner" || role() === "editor";
}

export function sortedPlaces() {
  return Array.from(store.places.values()).sort((a, b) => a.name.localeCompare(b.name));
}

export function placeName(id) {
  const place = store.places.get(Number(id));
  return place ? place.name : id == null ? "" : `place ${id}`;
}

export async function loadPlaces() {
  store.placesLoaded = false;
  const items = await getAll("/admin/v1/places");
  store.places = new Map(items.map((place) => [place.id, place]));
  store.placesLoaded = true;
  emit("places", { reload: true });
}

export function upsertPlace(place) {
  store.places.set(place.id, place);
  emit("places", { changed: place.id });
}

export function removePlace(id) {
  store.places.delete(id);
  emit("places", { removed: id });
}

export function kinds() {
  return Array.from(new Set(Array.from(store.places.values(), (place) => place.kind))).sort();
}

/** Keep every place <select> (class place-select) and the kind datalists in step with the places. */
export function refreshPlaceSelects() {
  const places = sortedPlaces();
  for (const select of $$("select.place-select")) {
    const keep = select.value;
    const options = [h("option", { value: "" }, places.length ? "— choose a place —" : "— no places yet —")];
    for (const place of places) options.push(h("option", { value: place.id }, `${place.name} (${place.kind})`));
    select.replaceChildren(...options);
    if (keep && store.places.has(Number(keep))) select.value = keep;
  }
  const kindOptions = kinds().map((kind) => h("option", { value: kind }));
  $$("#kind-options").forEach((list) => list.replaceChildren(...kindOptions.map((o) => o.cloneNode())));
  const filter = document.querySelector("#places-kind");
  if (filter) {
    const keep = filter.value;
    filter.replaceChildren(h("option", { value: "" }, "any"), ...kinds().map((kind) => h("option", { value: kind }, kind)));
    filter.value = keep;
  }
}
