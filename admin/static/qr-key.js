// The organisation's QR signing key: when it was last rotated and, for owners, a rotation that voids every printed
// code (POST /admin/v1/organisation/qr-key/rotate, which the server allows owners only).

import { ApiError, get, post } from "./api.js";
import { $, formatTime, messageFor, toast } from "./dom.js";
import { on, role } from "./store.js";

const WARNING =
  "Rotate the QR key?\n\nEvery QR code printed for this organisation stops working at once: visitors scanning " +
  "an old code are refused until you print and put up new codes for every place.";

function describe(state) {
  if (!state.exists) return "No QR code has been made yet.";
  return state.rotated_at ? `Key last rotated ${formatTime(state.rotated_at)}.` : "Key in use since the first code.";
}

export async function showQrKey() {
  const card = $("#qr-key");
  card.hidden = role() !== "owner";
  if (card.hidden) return;
  try {
    $("#qr-key-state").textContent = describe(await get("/admin/v1/organisation/qr-key"));
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    $("#qr-key-state").textContent = messageFor(error);
  }
}

async function rotate(onRotated) {
  if (!window.confirm(WARNING)) return;
  try {
    const state = await post("/admin/v1/organisation/qr-key/rotate", { confirm: true });
    $("#qr-key-state").textContent = describe(state);
    toast("QR key rotated: every printed code is void. Print new codes for each place.");
    onRotated();
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    toast(messageFor(error), "error");
  }
}

export function initQrKey({ onRotated }) {
  $("#qr-key-rotate").addEventListener("click", () => rotate(onRotated));
  on("session", () => {
    $("#qr-key").hidden = true;
    $("#qr-key-state").textContent = "";
  });
}
