// The visitor app's service worker: the app shell from the cache when the network is away, and Web Push
// notifications. API calls (/v1) always go to the network: nothing about the visitor is cached here.

const CACHE = "placecast-app-v1";
const SHELL = [
  "/app/",
  "/app/static/app.js",
  "/app/static/api.js",
  "/app/static/store.js",
  "/app/static/stream.js",
  "/app/static/location.js",
  "/app/static/push.js",
  "/app/static/app.css",
  "/app/static/icon.svg",
  "/app/static/icon-192.png",
  "/app/manifest.webmanifest",
];

self.addEventListener("install", (event) => {
  event.waitUntil(
    caches
      .open(CACHE)
      .then((cache) => cache.addAll(SHELL))
      .then(() => self.skipWaiting()),
  );
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    caches
      .keys()
      .then((keys) => Promise.all(keys.filter((key) => key !== CACHE).map((key) => caches.delete(key))))
      .then(() => self.clients.claim()),
  );
});

// Network first (so an update is seen at once), the cached copy when offline. Every page of the app is the shell.
self.addEventListener("fetch", (event) => {
  const url = new URL(event.request.url);
  if (event.request.method !== "GET" || url.origin !== self.location.origin || !url.pathname.startsWith("/app")) {
    return;
  }
  const navigation = event.request.mode === "navigate";
  const key = navigation ? "/app/" : event.request;
  event.respondWith(
    fetch(event.request)
      .then((response) => {
        if (response.ok) {
          const copy = response.clone();
          caches.open(CACHE).then((cache) => cache.put(key, copy));
        }
        return response;
      })
      .catch(() => caches.match(key).then((hit) => hit || Response.error())),
  );
});

self.addEventListener("push", (event) => {
  let message = {};
  try {
    message = event.data ? event.data.json() : {};
  } catch {
    message = { title: "Placecast", body: event.data ? event.data.text() : "" };
  }
  if (message.silent) return;
  event.waitUntil(
    self.registration.showNotification(message.title || "Placecast", {
      body: message.body || "",
      icon: "/app/static/icon-192.png",
      badge: "/app/static/icon-192.png",
      tag: message.notification_id ? `n-${message.notification_id}` : undefined,
      data: { notification_id: message.notification_id },
    }),
  );
});

self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  event.waitUntil(
    self.clients.matchAll({ type: "window", includeUncontrolled: true }).then((windows) => {
      const open = windows.find((client) => new URL(client.url).pathname.startsWith("/app"));
      return open ? open.focus() : self.clients.openWindow("/app/");
    }),
  );
});
