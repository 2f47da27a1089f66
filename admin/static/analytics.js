// Analytics for a date range: visits per place per day, median dwell, pushes sent and opened, staff task
// times — as Chart.js charts, with the numbers also in a table and in tiles for people who cannot see them.

import { ApiError, get } from "./api.js";
import { $, formatDuration, h, isoDay, messageFor } from "./dom.js";
import { on } from "./store.js";

const Chart = window.Chart;
const PALETTE = ["#2458a6", "#d46a00", "#2e8b57", "#a23b72", "#6a4c93", "#c0182b", "#1b9aaa", "#8c6d1f", "#4f5d75"];
const TOP_PLACES = 8;
const charts = {};

function reducedMotion() {
  return window.matchMedia("(prefers-reduced-motion: reduce)").matches;
}

// Says so on the canvas when a chart has nothing to show, rather than leaving empty axes.
const emptyNote = {
  id: "emptyNote",
  afterDraw(chart) {
    if (chart.data.datasets.some((set) => set.data.some((value) => value))) return;
    const { ctx, chartArea: area } = chart;
    ctx.save();
    ctx.textAlign = "center";
    ctx.fillStyle = "#5d6b7c";
    ctx.font = `14px ${Chart.defaults.font.family}`;
    ctx.fillText("No data in this range", (area.left + area.right) / 2, (area.top + area.bottom) / 2);
    ctx.restore();
  },
};

function draw(name, config) {
  if (charts[name]) charts[name].destroy();
  config.plugins = [emptyNote];
  config.options = {
    responsive: true,
    maintainAspectRatio: false,
    animation: reducedMotion() ? false : { duration: 300 },
    plugins: { legend: { position: "bottom", labels: { boxWidth: 12 } } },
    ...config.options,
  };
  charts[name] = new Chart($(`#chart-${name}`), config);
}

function daysBetween(from, to) {
  const days = [];
  const day = new Date(`${from}T00:00:00Z`);
  const end = new Date(`${to}T00:00:00Z`);
  while (day <= end && days.length < 400) {
    days.push(day.toISOString().slice(0, 10));
    day.setUTCDate(day.getUTCDate() + 1);
  }
  return days;
}

function visitsChart(rows, days) {
  const totals = new Map();
  for (const row of rows) totals.set(row.place_name, (totals.get(row.place_name) || 0) + row.visits);
  const ranked = Array.from(totals.entries()).sort((a, b) => b[1] - a[1]);
  const top = ranked.slice(0, TOP_PLACES).map(([name]) => name);
  const series = new Map(top.map((name) => [name, new Array(days.length).fill(0)]));
  if (ranked.length > TOP_PLACES) series.set("other places", new Array(days.length).fill(0));
  for (const row of rows) {
    const index = days.indexOf(String(row.day).slice(0, 10));
    if (index < 0) continue;
    const key = series.has(row.place_name) ? row.place_name : "other places";
    series.get(key)[index] += row.visits;
  }
  draw("visits", {
    type: "bar",
    data: {
      labels: days,
      datasets: Array.from(series.entries(), ([label, data], i) => ({ label, data, backgroundColor: PALETTE[i % PALETTE.length] })),
    },
    options: { scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true, ticks: { precision: 0 } } } },
  });
}

function dwellChart(rows) {
  const sorted = [...rows].sort((a, b) => b.median_s - a.median_s).slice(0, 15);
  draw("dwell", {
    type: "bar",
    data: {
      labels: sorted.map((row) => row.place_name),
      datasets: [{ label: "median dwell (min)", data: sorted.map((row) => Math.round((row.median_s / 60) * 10) / 10), backgroundColor: PALETTE[2] }],
    },
    options: { indexAxis: "y", plugins: { legend: { display: false } }, scales: { x: { beginAtZero: true } } },
  });
}

function pushesChart(pushes, perDay, days) {
  if (Array.isArray(perDay) && perDay.length) {
    const sent = new Array(days.length).fill(0);
    const opened = new Array(days.length).fill(0);
    for (const row of perDay) {
      const index = days.indexOf(String(row.day).slice(0, 10));
      if (index < 0) continue;
      sent[index] += row.sent || 0;
      opened[index] += row.opened || 0;
    }
    draw("pushes", {
      type: "bar",
      data: { labels: days, datasets: [{ label: "sent", data: sent, backgroundColor: PALETTE[0] }, { label: "opened", data: opened, backgroundColor: PALETTE[1] }] },
      options: { scales: { y: { beginAtZero: true, ticks: { precision: 0 } } } },
    });
    return;
  }
  draw("pushes", {
    type: "bar",
    data: { labels: ["sent", "opened"], datasets: [{ label: "pushes", data: [pushes.sent || 0, pushes.opened || 0], backgroundColor: [PALETTE[0], PALETTE[1]] }] },
    options: { plugins: { legend: { display: false } }, scales: { y: { beginAtZero: true, ticks: { precision: 0 } } } },
  });
}

function tasksChart(tasks) {
  const minutes = (seconds) => (seconds == null ? null : Math.round((seconds / 60) * 10) / 10);
  draw("tasks", {
    type: "bar",
    data: {
      labels: ["to acknowledge", "to complete"],
      datasets: [{ label: "median minutes", data: [minutes(tasks.median_ack_s), minutes(tasks.median_done_s)], backgroundColor: [PALETTE[4], PALETTE[2]] }],
    },
    options: { plugins: { legend: { display: false } }, scales: { y: { beginAtZero: true } } },
  });
}

function kpis(data) {
  const pushes = data.pushes || {};
  const tasks = data.tasks || {};
  const visits = (data.visits_per_place_per_day || []).reduce((n, row) => n + row.visits, 0);
  const rate = pushes.sent ? `${Math.round((100 * (pushes.opened || 0)) / pushes.sent)} %` : "–";
  const tile = (label, value, what) => h("div", { class: "kpi card", dataset: { kpi: what } }, h("div", { class: "kpi-value" }, String(value)), h("div", { class: "kpi-label" }, label));
  $("#an-kpis").replaceChildren(
    tile("visits", visits, "visits"),
    tile("pushes sent", pushes.sent || 0, "sent"),
    tile("pushes opened", `${pushes.opened || 0} (${rate})`, "opened"),
    tile("median time to acknowledge", formatDuration(tasks.median_ack_s), "ack"),
    tile("median time to complete", formatDuration(tasks.median_done_s), "done"),
    tile("tasks done / open", `${tasks.done || 0} / ${tasks.open || 0}`, "tasks"),
  );
}

function table(rows) {
  const sorted = [...rows].sort((a, b) => String(a.day).localeCompare(String(b.day)) || b.visits - a.visits);
  $("#an-rows").replaceChildren(
    ...(sorted.length
      ? sorted.map((row) => h("tr", {}, h("td", {}, String(row.day).slice(0, 10)), h("td", {}, row.place_name), h("td", {}, row.visits)))
      : [h("tr", {}, h("td", { colspan: 3, class: "muted" }, "No visits in this range."))]),
  );
}

export async function refreshAnalytics(event) {
  if (event) event.preventDefault();
  const f = $("#analytics-form").elements;
  const status = $("#an-status");
  status.textContent = "loading…";
  try {
    // Days are counted in the browser's time zone, as the date pickers are.
    const tz = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
    const data = await get("/admin/v1/analytics", { from: f.from.value, to: f.to.value, tz });
    const days = daysBetween(f.from.value, f.to.value);
    const visits = data.visits_per_place_per_day || [];
    visitsChart(visits, days);
    dwellChart(data.median_dwell_s || []);
    pushesChart(data.pushes || {}, data.pushes_per_day, days);
    tasksChart(data.tasks || {});
    kpis(data);
    table(visits);
    status.textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    status.textContent = messageFor(error);
  }
}

export function initAnalytics() {
  const f = $("#analytics-form").elements;
  const today = new Date();
  f.to.value = isoDay(today);
  f.from.value = isoDay(new Date(today.getTime() - 6 * 86400000));
  $("#analytics-form").addEventListener("submit", refreshAnalytics);
  if (Chart) {
    Chart.defaults.font.family = getComputedStyle(document.body).fontFamily;
    Chart.defaults.color = "#333";
  }
  on("session", () => {
    for (const name of Object.keys(charts)) {
      charts[name].destroy();
      delete charts[name];
    }
  });
  window.placecast = { ...(window.placecast || {}), charts };
}
