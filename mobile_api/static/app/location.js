// Foreground location: watchPosition while the app is open and the visitor said yes, fixes posted in batches
// (POST /v1/fixes/batch, idempotent on batch_id: a batch that failed is sent again under the same id).

import { call } from "./api.js";

const FLUSH_EVERY_MS = 5000;
const FLUSH_AT = 5;

export class LocationSharing {
  constructor({ onEvents, onState, onError, onFix = () => {} }) {
    this.onFix = onFix;
    this.onEvents = onEvents;
    this.onState = onState;
    this.onError = onError;
    this.watch = null;
    this.pending = [];
    this.sending = null; // {batch_id, fixes} in flight or to retry
    this.timer = null;
    this.lastTs = 0;
  }

  get active() {
    return this.watch !== null;
  }

  start() {
    if (this.active) return;
    if (!("geolocation" in navigator)) {
      this.onError("This browser cannot share its location.");
      return;
    }
    this.watch = navigator.geolocation.watchPosition(
      (position) => this.add(position),
      (error) => {
        if (error.code === error.PERMISSION_DENIED) {
          this.stop();
          this.onError("Location is blocked for this site. Allow it in the browser's settings to use it.");
        } else {
          // Lost for a moment (indoors, a tunnel): the watch goes on and the next reading clears this.
          this.onError("Looking for your location…");
        }
      },
      { enableHighAccuracy: true, maximumAge: 0, timeout: 60000 },
    );
    this.timer = setInterval(() => this.flush(), FLUSH_EVERY_MS);
    this.onState(true);
  }

  stop() {
    if (this.watch !== null) navigator.geolocation.clearWatch(this.watch);
    this.watch = null;
    clearInterval(this.timer);
    this.timer = null;
    this.flush();
    this.onState(false);
  }

  add(position) {
    this.onFix();
    const { latitude, longitude, accuracy, speed } = position.coords;
    // Device time moves forward: two readings in one millisecond would be one fix twice.
    const ts = Math.max(position.timestamp || Date.now(), this.lastTs + 1);
    this.lastTs = ts;
    const fix = { lat: latitude, lon: longitude, ts: new Date(ts).toISOString() };
    if (Number.isFinite(accuracy)) fix.accuracy_m = Math.min(accuracy, 100000);
    if (Number.isFinite(speed) && speed >= 0) fix.speed_mps = speed;
    this.pending.push(fix);
    if (this.pending.length >= FLUSH_AT) this.flush();
  }

  async flush() {
    if (this.inFlight) return;
    if (!this.sending) {
      if (!this.pending.length) return;
      this.sending = { batch_id: crypto.randomUUID(), fixes: this.pending.splice(0, 1000) };
    }
    this.inFlight = true;
    try {
      const answer = await call("POST", "/v1/fixes/batch", this.sending);
      this.sending = null;
      if (answer && answer.events && answer.events.length) this.onEvents(answer.events);
    } catch (error) {
      if (error.status === 422 || error.status === 409) this.sending = null; // never acceptable: dropped
      else if (error.status === 401) this.stop();
    } finally {
      this.inFlight = false;
    }
    if (this.pending.length >= FLUSH_AT) this.flush();
  }
}
