// The admin UI's entry point: sign-in, the organisation and role, tabs, and wiring of the sections.

import { ApiError, del, get, onUnauthorized, post, setSession } from "./api.js";
import { $, $$, messageFor, toast } from "./dom.js";
import { canEdit, emit, loadPlaces, on, refreshPlaceSelects, role, store } from "./store.js";
import { getMap, initMap, select } from "./map.js";
import { initPlaces, showPlacesTab, showQrTab } from "./places.js";
import { contentFor, initContent, showContentTab } from "./content.js";
import { initTasks, refreshBoard } from "./tasks.js";
import { initWebhooks, refreshWebhooks } from "./webhooks.js";
import { initImportExport } from "./io.js";
import { initLive, showLiveTab, startLive, stopLive } from "./live.js";
import { initAnalytics, refreshAnalytics } from "./analytics.js";

const ORG_KEY = "placecast.organisation";
const EDIT_FORMS = ["#content-form", "#task-form", "#webhook-form", "#import-form"];
let activeTab = null;

const onShow = {
  map: () => {
    if (!getMap()) initMap(store.config);
    getMap().invalidateSize();
  },
  places: showPlacesTab,
  content: showContentTab,
  tasks: refreshBoard,
  webhooks: refreshWebhooks,
  qr: showQrTab,
  io: () => {},
  live: showLiveTab,
  analytics: () => refreshAnalytics(),
};

function selectTab(name, { focus = false } = {}) {
  if (!onShow[name]) name = "map";
  activeTab = name;
  for (const tab of $$("[role=tab]")) {
    const selected = tab.dataset.tab === name;
    tab.setAttribute("aria-selected", String(selected));
    tab.tabIndex = selected ? 0 : -1;
    if (selected && focus) tab.focus();
  }
  for (const panel of $$("[role=tabpanel]")) panel.hidden = panel.id !== `panel-${name}`;
  if (location.hash !== `#${name}`) history.replaceState(null, "", `#${name}`);
  Promise.resolve(onShow[name]()).catch((error) => toast(error instanceof ApiError ? messageFor(error) : String(error), "error"));
}

function initTabs() {
  const tabs = $$("[role=tab]");
  tabs.forEach((tab, index) => {
    tab.addEventListener("click", () => selectTab(tab.dataset.tab));
    tab.addEventListener("keydown", (event) => {
      const step = { ArrowRight: 1, ArrowLeft: -1, Home: -index, End: tabs.length - 1 - index }[event.key];
      if (step === undefined) return;
      event.preventDefault();
      const next = tabs[(index + step + tabs.length) % tabs.length];
      selectTab(next.dataset.tab, { focus: true });
    });
  });
}

function showLogin(message) {
  stopLive();
  $("#app").hidden = true;
  $("#login-screen").hidden = false;
  const error = $("#login-error");
  error.hidden = !message;
  error.textContent = message || "";
  $("#login-email").focus();
}

function applyRole() {
  const editable = canEdit();
  document.body.classList.toggle("readonly", !editable);
  $("#readonly-banner").hidden = editable;
  $("#role-badge").textContent = role() || "";
  for (const selector of EDIT_FORMS) {
    for (const control of $(selector).elements) {
      if (control.type === "submit" || control.tagName !== "FIELDSET") control.disabled = !editable;
    }
  }
  $("#tasks-refresh").disabled = false;
}

function chooseOrganisation(organisationId) {
  const organisation = store.organisations.find((o) => o.id === Number(organisationId)) || store.organisations[0] || null;
  store.organisation = organisation;
  setSession({ organisation: organisation ? organisation.id : null });
  if (organisation) localStorage.setItem(ORG_KEY, String(organisation.id));
  $("#org-select").value = organisation ? String(organisation.id) : "";
  applyRole();
  emit("session");
  loadPlaces().catch((error) => toast(error instanceof ApiError ? messageFor(error) : String(error), "error"));
  startLive();
  selectTab(activeTab || "map");
}

function startSession(me) {
  store.user = me.user;
  store.organisations = me.organisations || [];
  setSession({ csrf: me.csrf_token });
  $("#user-email").textContent = me.user ? me.user.email : "";
  const select = $("#org-select");
  select.replaceChildren(...store.organisations.map((o) => new Option(`${o.name}`, String(o.id))));
  select.hidden = store.organisations.length < 2;
  $("#login-screen").hidden = true;
  $("#app").hidden = false;
  if (!store.organisations.length) {
    toast("This account belongs to no organisation yet.", "error");
  }
  const wanted = location.hash.slice(1);
  activeTab = onShow[wanted] ? wanted : "map";
  chooseOrganisation(localStorage.getItem(ORG_KEY));
}

async function login(event) {
  event.preventDefault();
  const form = event.currentTarget;
  const button = $("button[type=submit]", form);
  button.disabled = true;
  $("#login-error").hidden = true;
  try {
    const me = await post("/admin/v1/session", { email: form.elements.email.value.trim(), password: form.elements.password.value }, { quiet401: true });
    form.elements.password.value = "";
    startSession(me);
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    const message =
      error.status === 401 ? "Wrong email or password." : error.status === 422 ? "Enter your email and password." : messageFor(error);
    showLogin(message);
  } finally {
    button.disabled = false;
  }
}

async function logout() {
  try {
    await del("/admin/v1/session");
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
  }
  setSession({ csrf: null });
  emit("session");
  showLogin("You are signed out.");
}

async function boot() {
  store.config = await fetch("/admin/config.json", { credentials: "same-origin" }).then((response) => response.json());
  initTabs();
  initPlaces({
    onShow: (placeId) => {
      selectTab("map");
      select(placeId, { zoom: true });
    },
  });
  initContent();
  initTasks();
  initWebhooks();
  initImportExport();
  initLive({ getEditorMap: getMap, isVisible: () => activeTab === "live" });
  initAnalytics();
  on("places", refreshPlaceSelects);
  on("place-selected", (placeId) => contentFor(placeId));
  let boardTimer = null;
  on("task-changed", () => {
    if (activeTab !== "tasks") return;
    clearTimeout(boardTimer);
    boardTimer = setTimeout(refreshBoard, 300);
  });
  $("#login-form").addEventListener("submit", login);
  $("#logout").addEventListener("click", logout);
  $("#org-select").addEventListener("change", (event) => chooseOrganisation(event.target.value));
  window.addEventListener("hashchange", () => {
    const wanted = location.hash.slice(1);
    if (onShow[wanted] && wanted !== activeTab && !$("#app").hidden) selectTab(wanted);
  });
  onUnauthorized(() => showLogin("Your session has ended; sign in again."));
  try {
    startSession(await get("/admin/v1/me", {}, { quiet401: true }));
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    showLogin(error.status === 401 ? "" : messageFor(error));
  }
  document.body.dataset.ready = "true";
}

boot().catch((error) => {
  console.error(error);
  document.body.dataset.ready = "error";
  toast(`The admin UI could not start: ${error.message || error}`, "error");
});
