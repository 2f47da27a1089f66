// The visitor app: a printed QR code opens /app/c/<token>; on first use the visitor chooses what they agree to,
// the app enrols an anonymous device with the token (POST /v1/devices/enrol-by-qr), keeps its credential in
// IndexedDB, checks in and shows the place, its content and the inbox, live.

import { ApiError, call } from "./api.js";
import { LocationSharing } from "./location.js";
import * as push from "./push.js";
import * as store from "./store.js";
import { openInboxStream } from "./stream.js";

const $ = (id) => document.getElementById(id);
const SCREENS = ["loading", "welcome", "consent", "erased", "home"];
const PURPOSES = ["offers", "analytics"];
const state = { stopStream: null, inbox: new Map(), placeId: null };

window.placecast = state; // for the browser tests and curious developers: no secrets in it

function show(screen) {
  for (const id of SCREENS) $(id).hidden = id !== screen;
}

function say(message) {
  $("message").textContent = message || "";
  $("message").hidden = !message;
}

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  Object.assign(node, props);
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
}

function when(iso) {
  const date = new Date(iso);
  return el("time", { dateTime: iso, textContent: date.toLocaleString([], { dateStyle: "medium", timeStyle: "short" }) });
}

// The QR token from /app/c/<token>, taken out of the address bar at once (kept in IndexedDB until used).
async function takeTokenFromUrl() {
  const match = location.pathname.match(/^\/app\/c\/([^/]+)$/);
  if (!match) return;
  await store.set("pendingToken", decodeURIComponent(match[1]));
  history.replaceState(null, "", "/app/");
}

function tokenPlace(token) {
  const place = Number.parseInt(token.split(".")[0], 10);
  return Number.isFinite(place) ? place : null;
}

// --- enrolment, check-in ------------------------------------------------------------------------------------

async function enrol(token, consents) {
  const answer = await call(
    "POST",
    "/v1/devices/enrol-by-qr",
    {
      qr_token: token,
      locale: (navigator.language || "en").replace(/[^A-Za-z0-9_-]/g, "") || "en",
      timezone: Intl.DateTimeFormat().resolvedOptions().timeZone || "Europe/Helsinki",
      consents,
    },
    { auth: false },
  );
  await store.set("credential", answer.credential);
  await store.set("consents", consents);
  return answer;
}

async function checkIn(token) {
  const placeId = tokenPlace(token);
  const event = await call("POST", "/v1/checkins", { place_id: placeId, qr_token: token });
  await store.set("placeId", placeId);
  await store.set("checkedIn", { place_id: placeId, at: event.occurred_at || new Date().toISOString() });
  await store.remove("pendingToken");
  return placeId;
}

// --- the place, the inbox -----------------------------------------------------------------------------------

const OPEN_TEXT = { open: "Open now", closed: "Closed now", unknown: "Opening hours" };

function renderPlace(place) {
  $("place-name").textContent = place.name;
  $("place-address").textContent = place.address || "";
  const badge = $("open-now");
  badge.textContent = OPEN_TEXT[place.open_now] || OPEN_TEXT.unknown;
  badge.className = `badge ${place.open_now}`;
  $("opening-hours").textContent = place.opening_hours || "not published";
  const list = $("content");
  list.replaceChildren(
    ...place.content.map((item) =>
      el("li", { className: "content-item" }, el("h3", { textContent: item.title }), el("p", { textContent: item.body })),
    ),
  );
  $("content-empty").hidden = place.content.length > 0;
  document.title = `${place.name} — Placecast`;
}

async function loadPlace(placeId) {
  try {
    const place = await call("GET", `/v1/places/${placeId}/public`);
    await store.set("place", place);
    renderPlace(place);
  } catch (error) {
    const cached = await store.get("place");
    if (cached && cached.id === placeId) renderPlace(cached);
    if (error instanceof ApiError) throw error;
  }
  const checked = await store.get("checkedIn");
  $("checked-in").textContent =
    checked && checked.place_id === placeId
      ? `✓ You're checked in (${new Date(checked.at).toLocaleTimeString([], { timeStyle: "short" })})`
      : "";
}

function renderInbox(items, fresh = false) {
  for (const item of items) state.inbox.set(item.id, item);
  const sorted = [...state.inbox.values()].sort((a, b) => b.id - a.id);
  $("inbox").replaceChildren(
    ...sorted.map((item) => {
      const li = el(
        "li",
        { className: "inbox-item" },
        el("h3", { textContent: item.title }),
        el("p", { textContent: item.body }),
        item.created_at ? when(item.created_at) : null,
      );
      li.dataset.id = item.id;
      if (fresh && items.some((i) => i.id === item.id)) li.classList.add("new");
      return li;
    }),
  );
  $("inbox-empty").hidden = sorted.length > 0;
}

async function loadInbox() {
  let items;
  try {
    items = (await call("GET", "/v1/inbox?limit=50")).items;
    await store.set("inbox", items);
  } catch (error) {
    if (error instanceof ApiError) throw error;
    items = (await store.get("inbox")) || [];
  }
  renderInbox(items);
  return items.reduce((max, item) => Math.max(max, item.id), 0);
}

function startStream(after) {
  if (state.stopStream) state.stopStream();
  state.stopStream = openInboxStream({
    after,
    onNotification: (item) => {
      renderInbox([item], true);
      store.set("inbox", [...state.inbox.values()]);
    },
    onRevoked: () => forget().then(() => show("welcome")),
    onState: (status) => {
      state.stream = status;
    },
  });
}

// --- consent --------------------------------------------------------------------------------------------------

function readChoices(prefix) {
  return Object.fromEntries(PURPOSES.map((p) => [p, $(`${prefix}-${p}`).checked]));
}

function fillChoices(prefix, consents) {
  for (const p of PURPOSES) $(`${prefix}-${p}`).checked = Boolean(consents && consents[p]);
}

async function saveChoices(event) {
  event.preventDefault();
  const consents = readChoices("choice");
  try {
    const saved = await call("PUT", "/v1/devices/me/consents", { consents });
    await store.set("consents", saved);
    $("choices-note").textContent = "Saved. Your choices apply from now on.";
    updateNotify();
  } catch (error) {
    $("choices-note").textContent = `Not saved: ${error.message}`;
  }
}

// --- location ---------------------------------------------------------------------------------------------------

const sharing = new LocationSharing({
  onState: (on) => {
    state.locating = on;
    $("location-banner").hidden = !on;
    $("location-toggle").textContent = on ? "Stop using my location" : "Use my location";
    $("location-toggle").setAttribute("aria-pressed", String(on));
    $("location-note").textContent = on ? "Your location is being used while this app is open." : "";
  },
  onError: (message) => {
    $("location-note").textContent = message;
  },
  onFix: () => {
    if ($("location-note").textContent.startsWith("Looking")) {
      $("location-note").textContent = "Your location is being used while this app is open.";
    }
  },
  onEvents: (events) => {
    state.events = (state.events || []).concat(events);
    const arrived = events.filter((e) => e.kind === "enter" && e.place_name);
    if (arrived.length) $("location-place").textContent = `You're at ${arrived[arrived.length - 1].place_name}.`;
  },
});

function toggleLocation() {
  if (sharing.active) sharing.stop();
  else sharing.start();
}

// --- notifications ------------------------------------------------------------------------------------------------

async function updateNotify() {
  const button = $("notify");
  const note = $("notify-note");
  if (!push.supported()) {
    button.disabled = true;
    note.textContent = "This browser cannot show notifications from web apps.";
    return;
  }
  const consents = (await store.get("consents")) || {};
  const subscribed = await push.current().catch(() => null);
  button.textContent = subscribed ? "Stop notifications" : "Notify me here";
  if (subscribed) note.textContent = "Notifications are on for this phone.";
  else if (!consents.offers) note.textContent = 'Notifications bring events and offers: allow "Tell me about events and offers" below first.';
  else note.textContent = "";
}

async function toggleNotify() {
  const note = $("notify-note");
  try {
    if (await push.current()) {
      await push.unsubscribe();
      note.textContent = "Notifications are off.";
    } else {
      const consents = (await store.get("consents")) || {};
      if (!consents.offers) {
        note.textContent = 'Allow "Tell me about events and offers" below first.';
        return;
      }
      await push.subscribe();
      note.textContent = "Notifications are on for this phone.";
    }
  } catch (error) {
    note.textContent =
      error instanceof ApiError && error.status === 404
        ? "This server does not send notifications to browsers."
        : `Notifications could not be turned on: ${error.message}`;
    return;
  }
  updateNotify();
}

// --- erase ------------------------------------------------------------------------------------------------------

async function forget() {
  if (state.stopStream) state.stopStream();
  state.stopStream = null;
  if (sharing.active) sharing.stop();
  await push.unsubscribe({ tellServer: false }).catch(() => {});
  await store.clear();
  state.inbox.clear();
}

async function erase() {
  const sure = window.confirm(
    "Delete my data? This deletes this phone's visits, locations, messages and notification settings from the server. It cannot be undone.",
  );
  if (!sure) return;
  try {
    await call("DELETE", "/v1/devices/me");
  } catch (error) {
    if (!(error instanceof ApiError && error.status === 401)) {
      say(`Your data could not be deleted: ${error.message}. Try again when you're online.`);
      return;
    }
  }
  await forget();
  show("erased");
  $("erased-title").focus();
}

// --- start ----------------------------------------------------------------------------------------------------

async function home(placeId) {
  state.placeId = placeId;
  show("home");
  fillChoices("choice", await store.get("consents"));
  updateNotify();
  if (placeId) await loadPlace(placeId);
  else $("place-name").textContent = "Placecast";
  const after = await loadInbox();
  startStream(after);
}

async function firstUse(token) {
  show("consent");
  $("consent-form").onsubmit = async (event) => {
    event.preventDefault();
    const button = $("consent-continue");
    button.disabled = true;
    say("");
    try {
      if (!(await store.get("credential"))) await enrol(token, readChoices("consent"));
      const placeId = await checkIn(token);
      await home(placeId);
    } catch (error) {
      button.disabled = false;
      say(error.message);
    }
  };
}

function bind() {
  $("location-toggle").addEventListener("click", toggleLocation);
  $("location-stop").addEventListener("click", () => sharing.stop());
  $("notify").addEventListener("click", toggleNotify);
  $("erase").addEventListener("click", erase);
  $("choices-form").addEventListener("submit", saveChoices);
  window.addEventListener("pagehide", () => sharing.active && sharing.stop());
  const online = () => {
    $("net").hidden = navigator.onLine;
  };
  window.addEventListener("online", online);
  window.addEventListener("offline", online);
  online();
  if ("serviceWorker" in navigator) {
    navigator.serviceWorker.register("/app/sw.js", { scope: "/app/" }).catch(() => {});
  }
}

async function start() {
  await takeTokenFromUrl();
  const token = await store.get("pendingToken");
  const enrolled = await store.get("credential");
  try {
    if (!enrolled) {
      if (token) await firstUse(token);
      else show("welcome");
      return;
    }
    let placeId = (await store.get("placeId")) || null;
    if (token) placeId = await checkIn(token);
    await home(placeId);
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) {
      await forget(); // erased or rotated elsewhere: start again
      if (token) await store.set("pendingToken", token);
      return start();
    }
    say(navigator.onLine ? error.message : "You're offline. What you saw last is shown.");
  }
}

bind();
start();
