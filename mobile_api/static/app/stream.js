// The inbox's live stream (GET /v1/inbox/stream, server-sent events) read with fetch(), because EventSource
// cannot send the Authorization header and the credential must not go into a URL.

import { credential } from "./api.js";

function parse(block) {
  const event = { type: "message", data: "" };
  for (const line of block.split("\n")) {
    if (line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "event") event.type = value;
    else if (field === "data") event.data += (event.data ? "\n" : "") + value;
    else if (field === "id") event.id = value;
  }
  return event;
}

// Calls onNotification(item) for each new item, onRevoked() when the server says the credential stopped working.
// Reconnects after errors (with backoff), resuming after the last id seen. Returns a function that stops it.
export function openInboxStream({ after, onNotification, onRevoked, onState }) {
  let last = after || 0;
  let stopped = false;
  let controller = null;
  let delay = 1000;

  async function connect() {
    while (!stopped) {
      controller = new AbortController();
      try {
        const secret = await credential();
        if (!secret) return;
        const response = await fetch(`/v1/inbox/stream?after=${last}`, {
          headers: { Authorization: `Bearer ${secret}`, Accept: "text/event-stream" },
          cache: "no-store",
          credentials: "omit",
          signal: controller.signal,
        });
        if (response.status === 401 || response.status === 404) {
          onRevoked();
          return;
        }
        if (!response.ok || !response.body) throw new Error(`stream answered ${response.status}`);
        onState("live");
        delay = 1000;
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += value.replace(/\r\n?/g, "\n");
          let end;
          while ((end = buffer.indexOf("\n\n")) >= 0) {
            const event = parse(buffer.slice(0, end));
            buffer = buffer.slice(end + 2);
            if (event.type === "notification") {
              const item = JSON.parse(event.data);
              last = Math.max(last, item.id);
              onNotification(item);
            } else if (event.type === "revoked") {
              onRevoked();
              return;
            }
          }
        }
      } catch (error) {
        if (stopped) return;
      }
      onState("reconnecting");
      await new Promise((resolve) => setTimeout(resolve, delay));
      delay = Math.min(delay * 2, 30000);
    }
  }

  connect();
  return () => {
    stopped = true;
    if (controller) controller.abort();
  };
}
