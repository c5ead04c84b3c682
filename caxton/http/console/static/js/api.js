// The credential (kept in sessionStorage only: gone when the tab closes) and every call to
// the server. Calls go to this origin only; errors carry the server's error envelope.
const KEY = "caxton.credential";

export function credential() {
  return sessionStorage.getItem(KEY) || "";
}

export function setCredential(value) {
  if (value) sessionStorage.setItem(KEY, value);
  else sessionStorage.removeItem(KEY);
}

export class ApiError extends Error {
  constructor(status, body) {
    const error = (body && body.error) || {};
    super(error.message || `the server answered ${status}`);
    this.status = status;
    this.code = error.code || `HTTP_${status}`;
    this.details = error.details || {};
    this.requestId = error.request_id || null;
  }
}

function headers(extra) {
  const out = { Accept: "application/json", ...extra };
  const value = credential();
  if (value) out.Authorization = `Bearer ${value}`;
  return out;
}

/** fetch a JSON route of /api/v1 (``path`` starts with /). */
export async function api(path, { method = "GET", body, signal } = {}) {
  const init = { method, headers: headers(body === undefined ? {} : { "Content-Type": "application/json" }), signal, credentials: "omit", cache: "no-store" };
  if (body !== undefined) init.body = JSON.stringify(body);
  const response = await fetch(path, init);
  let data = null;
  const type = response.headers.get("Content-Type") || "";
  if (type.includes("json")) data = await response.json();
  if (!response.ok) {
    // a credential that stopped working (an expired token, a revoked key): sign in again
    if (response.status === 401 && credential()) window.dispatchEvent(new Event("caxton:unauthenticated"));
    throw new ApiError(response.status, data);
  }
  return data;
}

/** Read an NDJSON stream (such as logs?follow=true), calling ``onLine`` per object. */
export async function stream(path, onLine, signal) {
  const response = await fetch(path, { headers: headers({ Accept: "application/x-ndjson" }), signal, credentials: "omit", cache: "no-store" });
  if (!response.ok) {
    let data = null;
    try { data = await response.json(); } catch (_) { /* not JSON */ }
    throw new ApiError(response.status, data);
  }
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, cut).trim();
      buffer = buffer.slice(cut + 1);
      if (line) onLine(JSON.parse(line));
    }
    if (buffer.length > 1_000_000) buffer = ""; // a line that never ends: drop it
  }
}

/** A WebSocket to ``path`` on this server; the credential goes as ?token= (browsers cannot
 * set headers on a WebSocket). */
export function socket(path) {
  const url = new URL(path, window.location.href);
  url.protocol = window.location.protocol === "https:" ? "wss:" : "ws:";
  const value = credential();
  if (value) url.searchParams.set("token", value);
  return new WebSocket(url.toString());
}

export function enc(part) {
  return encodeURIComponent(part);
}
