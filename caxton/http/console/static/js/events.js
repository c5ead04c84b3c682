// One /ws/events connection for the whole console; pages subscribe to it. Reconnects with
// back-off when the server closes it (restart, or a subscriber that fell behind).
import { socket } from "./api.js";

const listeners = new Set();
let ws = null;
let retry = 500;
let stopped = true;
let timer = null;

function setLive(on) {
  const badge = document.getElementById("live-state");
  if (!badge) return;
  badge.textContent = on ? "live" : "offline";
  badge.className = `live ${on ? "on" : "off"}`;
}

function connect() {
  if (stopped) return;
  ws = socket("/ws/events");
  ws.addEventListener("open", () => { retry = 500; setLive(true); });
  ws.addEventListener("message", (frame) => {
    let event;
    try { event = JSON.parse(frame.data); } catch (_) { return; }
    for (const listener of listeners) listener(event);
  });
  ws.addEventListener("close", () => {
    setLive(false);
    ws = null;
    if (!stopped) {
      timer = setTimeout(connect, retry);
      retry = Math.min(retry * 2, 15000);
    }
  });
}

export function startEvents() {
  if (!stopped) return;
  stopped = false;
  connect();
}

export function stopEvents() {
  stopped = true;
  clearTimeout(timer);
  if (ws) ws.close(1000, "signed out");
  setLive(false);
}

/** Call ``listener(event)`` for every event until the returned function is called. */
export function onEvent(listener) {
  listeners.add(listener);
  return () => listeners.delete(listener);
}
