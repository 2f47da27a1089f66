// Import (GeoJSON or OSM extract) with progress from the server's event stream, and GeoJSON export.

import { ApiError, headers, openStream } from "./api.js";
import { $, clearErrors, h, messageFor, showErrors, toast } from "./dom.js";
import { loadPlaces, on } from "./store.js";

const PHASES = {
  uploading: "Uploading the file",
  queued: "Queued",
  reading: "Reading the file",
  parsing: "Reading the file",
  validating: "Checking the geometry",
  storing: "Storing places",
  writing: "Storing places",
  done: "Finished",
  failed: "Failed",
};

let stream = null;

function setProgress(phase, done, total) {
  const bar = $("#import-bar");
  $("#import-phase").textContent = PHASES[phase] || phase || "Working";
  if (total) {
    bar.max = total;
    bar.value = Math.min(done || 0, total);
    $("#import-count").textContent = phase === "uploading" ? `${Math.round((100 * done) / total)} %` : `${done || 0} of ${total}`;
  } else {
    bar.removeAttribute("value"); // indeterminate
    $("#import-count").textContent = done ? `${done}` : "";
  }
}

function upload(form) {
  return new Promise((resolve, reject) => {
    const request = new XMLHttpRequest();
    request.open("POST", "/admin/v1/imports");
    for (const [name, value] of Object.entries(headers("POST"))) request.setRequestHeader(name, value);
    request.responseType = "json";
    request.upload.onprogress = (event) => {
      if (event.lengthComputable) setProgress("uploading", event.loaded, event.total);
    };
    request.onload = () => {
      const body = request.response;
      if (request.status >= 200 && request.status < 300) resolve(body);
      else reject(new ApiError(request.status, body));
    };
    request.onerror = () => reject(new ApiError(0, { message: "the upload failed: the server cannot be reached" }));
    request.send(new FormData(form));
  });
}

function refusedRows(refused) {
  return refused.map((item, position) => {
    const problems = Array.isArray(item.problems)
      ? item.problems.map((p) => (p.field ? `${p.field}: ${p.reason}` : p.reason)).join("; ")
      : item.reason || item.message || JSON.stringify(item);
    const feature = item.name || (item.index != null ? `#${item.index}` : `#${position + 1}`);
    return h("tr", {}, h("td", {}, String(feature)), h("td", {}, item.external_ref || item.ref || ""), h("td", {}, problems));
  });
}

function finish(data) {
  const failed = data.phase === "failed";
  const refused = Array.isArray(data.refused) ? data.refused : [];
  $("#import-summary").hidden = false;
  $("#import-result").replaceChildren(
    ...(failed ? [h("strong", { class: "form-error" }, `The import failed: ${data.error || "unknown error"}. `)] : []),
    h("span", { class: "count", dataset: { what: "created" } }, `${data.created || 0} created`),
    ", ",
    h("span", { class: "count", dataset: { what: "updated" } }, `${data.updated || 0} updated`),
    ", ",
    h("span", { class: "count", dataset: { what: "refused" } }, `${data.refused_count ?? refused.length} refused`),
    ".",
  );
  $("#import-refused").replaceChildren(
    ...(refused.length ? refusedRows(refused) : [h("tr", {}, h("td", { colspan: 3, class: "muted" }, "Nothing was refused."))]),
  );
  $("#import-start").disabled = false;
  if (!failed) {
    setProgress("done", data.total || data.done || 1, data.total || data.done || 1);
    toast(`Import finished: ${data.created || 0} created, ${data.updated || 0} updated, ${data.refused_count ?? refused.length} refused.`, "ok");
  } else {
    $("#import-phase").textContent = "Failed";
  }
  loadPlaces().catch(() => {});
}

async function submit(event) {
  event.preventDefault();
  const form = event.currentTarget;
  const box = $("#import-form-errors");
  clearErrors(form, box);
  if (!form.elements.file.files.length) {
    showErrors(form, new ApiError(422, { detail: [{ field: "file", reason: "choose a file to import" }] }), box);
    return;
  }
  if (stream) stream.close();
  $("#import-summary").hidden = true;
  $("#import-progress").hidden = false;
  $("#import-start").disabled = true;
  setProgress("uploading", 0, 1);
  let job;
  try {
    job = await upload(form);
  } catch (error) {
    $("#import-start").disabled = false;
    $("#import-progress").hidden = true;
    if (!(error instanceof ApiError)) throw error;
    showErrors(form, error, box);
    return;
  }
  setProgress("queued", 0, 0);
  stream = openStream(`/admin/v1/imports/${job.id}/events`, {
    onEvent: ({ data }) => {
      if (!data || typeof data !== "object") return false;
      if (data.phase === "done" || data.phase === "failed") {
        finish(data);
        return true;
      }
      setProgress(data.phase, data.done, data.total);
      return false;
    },
    onState: (state, error) => {
      if (state === "error" && error instanceof ApiError && error.status >= 400 && error.status < 500) {
        $("#import-start").disabled = false;
        box.replaceChildren(h("div", {}, messageFor(error)));
        box.hidden = false;
      }
    },
  });
}

async function exportGeojson(event) {
  // A plain link cannot carry the organisation header; fetch, then hand the browser a file.
  event.preventDefault();
  try {
    const response = await fetch("/admin/v1/export/geojson", { credentials: "same-origin", headers: headers("GET") });
    if (!response.ok) throw new ApiError(response.status, await response.json().catch(() => null));
    const blob = await response.blob();
    const url = URL.createObjectURL(blob);
    const link = h("a", { href: url, download: `places-${new Date().toISOString().slice(0, 10)}.geojson` });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    toast(messageFor(error), "error");
  }
}

export function initImportExport() {
  $("#import-form").addEventListener("submit", submit);
  $("#export-link").addEventListener("click", exportGeojson);
  on("session", () => {
    if (stream) stream.close();
    $("#import-summary").hidden = true;
    $("#import-progress").hidden = true;
    $("#import-start").disabled = false;
  });
}
