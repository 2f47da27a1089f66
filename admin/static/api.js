// The admin API on the same origin: JSON in and out, the session cookie, the CSRF header on every
// change, the chosen organisation, and server-sent event streams read with fetch (so they carry headers).

const session = { csrf: null, organisation: null };
const unauthorizedHandlers = [];

export class ApiError extends Error {
  constructor(status, body) {
    const message = (body && (body.message || body.error)) || `HTTP ${status}`;
    super(message);
    this.status = status;
    this.body = body;
    this.problems = Array.isArray(body && body.detail) ? body.detail : [];
  }

  /** One line per problem, for a message box. */
  describe() {
    if (!this.problems.length) return this.message;
    return this.problems.map((p) => (p.field ? `${p.field}: ${p.reason}` : p.reason)).join("\n");
  }
}

export function setSession({ csrf, organisation }) {
  if (csrf !== undefined) session.csrf = csrf;
  if (organisation !== undefined) session.organisation = organisation;
}

export function currentOrganisation() {
  return session.organisation;
}

export function onUnauthorized(handler) {
  unauthorizedHandlers.push(handler);
}

/** The headers every request of the page carries (CSRF on changes, the organisation). */
export function headers(method, extra) {
  const out = { Accept: "application/json", ...extra };
  if (method !== "GET" && method !== "HEAD" && session.csrf) out["X-CSRF-Token"] = session.csrf;
  if (session.organisation != null) out["X-Organisation"] = String(session.organisation);
  return out;
}

export function buildUrl(path, query) {
  const url = new URL(path, window.location.origin);
  for (const [key, value] of Object.entries(query || {})) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(key, value);
  }
  return url.pathname + url.search;
}

async function readBody(response) {
  if (response.status === 204) return null;
  const type = response.headers.get("content-type") || "";
  if (type.includes("json")) {
    try {
      return await response.json();
    } catch {
      return null;
    }
  }
  const text = await response.text();
  return text ? { error: "http_error", message: text.slice(0, 300) } : null;
}

/** Call the admin API; throws ApiError with the server's problems on a non-2xx answer. */
export async function api(method, path, { json, form, query, signal, quiet401 = false } = {}) {
  const init = { method, credentials: "same-origin", signal, headers: headers(method) };
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  } else if (form !== undefined) {
    init.body = form; // FormData: the browser sets the multipart boundary
  }
  let response;
  try {
    response = await fetch(buildUrl(path, query), init);
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, { error: "network", message: "the server cannot be reached; check the connection" });
  }
  const body = await readBody(response);
  if (!response.ok) {
    const error = new ApiError(response.status, body);
    if (response.status === 401 && !quiet401) unauthorizedHandlers.forEach((handler) => handler(error));
    throw error;
  }
  return body;
}

export const get = (path, query, options = {}) => api("GET", path, { ...options, query });
export const post = (path, json, options = {}) => api("POST", path, { ...options, json });
export const patch = (path, json, options = {}) => api("PATCH", path, { ...options, json });
export const del = (path, options = {}) => api("DELETE", path, options);

/** All pages of a cursor-paginated list ({items, next_cursor}). */
export async function getAll(path, query = {}, { limit = 500, max = 20000 } = {}) {
  const items = [];
  let cursor;
  do {
    const page = await get(path, { ...query, limit, cursor });
    items.push(...page.items);
    cursor = page.next_cursor;
  } while (cursor != null && items.length < max);
  return items;
}

function parseEvent(block) {
  const event = { event: "message", data: [], id: null };
  for (const line of block.split(/\r?\n/)) {
    if (!line || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") event.event = value;
    else if (field === "data") event.data.push(value);
    else if (field === "id") event.id = value;
  }
  if (!event.data.length) return null;
  const text = event.data.join("\n");
  let data = text;
  try {
    data = JSON.parse(text);
  } catch {
    /* not JSON: pass the text on */
  }
  return { event: event.event, data, id: event.id };
}

/**
 * Read a server-sent event stream with fetch (cookie, CSRF-free GET, X-Organisation header).
 * onEvent({event, data, id}) returns true to stop. Reconnects with back-off unless `reconnect` is false.
 * Returns {close()}.
 */
export function openStream(path, { onEvent, onState = () => {}, reconnect = true } = {}) {
  const controller = new AbortController();
  let stopped = false;
  let lastId = null;
  let delay = 500;

  async function run() {
    while (!stopped) {
      onState("connecting");
      try {
        const extra = { Accept: "text/event-stream" };
        if (lastId) extra["Last-Event-ID"] = lastId;
        const response = await fetch(path, {
          credentials: "same-origin",
          headers: headers("GET", extra),
          signal: controller.signal,
          cache: "no-store",
        });
        if (!response.ok) {
          const error = new ApiError(response.status, await readBody(response));
          if (response.status === 401) unauthorizedHandlers.forEach((handler) => handler(error));
          onState("error", error);
          if (response.status >= 400 && response.status < 500 && response.status !== 429) return;
        } else {
          delay = 500;
          const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
          let buffer = "";
          let opened = false;
          for (;;) {
            const { value, done } = await reader.read();
            if (done) break;
            // Open once the server has said something (its first comment follows its subscription).
            if (!opened) {
              opened = true;
              onState("open");
            }
            buffer += value;
            const blocks = buffer.split(/\r?\n\r?\n/);
            buffer = blocks.pop();
            for (const block of blocks) {
              const parsed = parseEvent(block);
              if (!parsed) continue;
              if (parsed.id) lastId = parsed.id;
              if (onEvent(parsed) === true) {
                stopped = true;
                controller.abort();
                onState("closed");
                return;
              }
            }
          }
          onState("ended");
        }
      } catch (error) {
        if (stopped || error.name === "AbortError") return;
        onState("error", error);
      }
      if (!reconnect || stopped) return;
      await new Promise((resolve) => setTimeout(resolve, delay));
      delay = Math.min(delay * 2, 10000);
    }
  }

  run();
  return {
    close() {
      stopped = true;
      controller.abort();
    },
  };
}
