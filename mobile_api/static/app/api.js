// Calls to /v1 on the same origin with the device credential in the Authorization header.

import * as store from "./store.js";

export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.message) || `the server answered ${status}`);
    this.status = status;
    this.body = body;
  }
}

export async function credential() {
  return store.get("credential");
}

export async function call(method, path, body, { auth = true } = {}) {
  const headers = { Accept: "application/json" };
  if (auth) {
    const secret = await credential();
    if (!secret) throw new ApiError(401, { message: "this phone is not enrolled" });
    headers.Authorization = `Bearer ${secret}`;
  }
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: "no-store",
    credentials: "omit",
  });
  if (response.status === 204) return null;
  const text = await response.text();
  let parsed = null;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {
    parsed = { message: text };
  }
  if (!response.ok) throw new ApiError(response.status, parsed);
  return parsed;
}
