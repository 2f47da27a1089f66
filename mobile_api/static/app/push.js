// "Notify me here": a Web Push subscription with the server's VAPID key, registered for this device.

import { call } from "./api.js";

function keyBytes(base64url) {
  const base64 = base64url.replace(/-/g, "+").replace(/_/g, "/") + "=".repeat((4 - (base64url.length % 4)) % 4);
  return Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
}

export function supported() {
  return "serviceWorker" in navigator && "PushManager" in window && "Notification" in window;
}

export async function current() {
  if (!supported()) return null;
  const registration = await navigator.serviceWorker.getRegistration("/app/");
  return registration ? registration.pushManager.getSubscription() : null;
}

export async function subscribe() {
  const { public_key: key } = await call("GET", "/v1/push/vapid-public-key", undefined, { auth: false });
  const permission = await Notification.requestPermission();
  if (permission !== "granted") throw new Error("Notifications are blocked for this site in the browser's settings.");
  const registration = await navigator.serviceWorker.ready;
  let subscription = await registration.pushManager.getSubscription();
  if (!subscription) {
    subscription = await registration.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: keyBytes(key) });
  }
  await call("PUT", "/v1/devices/me/web-push", subscription.toJSON());
  return subscription;
}

export async function unsubscribe({ tellServer = true } = {}) {
  const subscription = await current();
  if (subscription) await subscription.unsubscribe();
  if (tellServer) await call("DELETE", "/v1/devices/me/web-push");
}
