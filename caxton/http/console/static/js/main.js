// The console's frame: sign-in, the session (who is signed in, what the role may do), the
// navigation and the hash router (#/page/argument). Each page module exports
// ``render(view, context, argument)`` and may return a function that stops it.
import { api, ApiError, credential, setCredential } from "./api.js";
import { clear, h } from "./dom.js";
import { startEvents, stopEvents } from "./events.js";
import * as agents from "./pages/agents.js";
import * as agent from "./pages/agent.js";
import * as chat from "./pages/chat.js";
import * as conversations from "./pages/conversations.js";
import * as memory from "./pages/memory.js";
import * as health from "./pages/health.js";
import * as cluster from "./pages/cluster.js";
import * as usage from "./pages/usage.js";

const PAGES = { agents, agent, chat, conversations, memory, health, cluster, usage };
const TITLES = { agents: "Agents", agent: "Agent", chat: "Chat", conversations: "Conversations", memory: "Memory", health: "Health", cluster: "Cluster", usage: "Usage" };

const context = { session: null };
let stopPage = null;

function showSignin(message) {
  stopEvents();
  if (stopPage) { stopPage(); stopPage = null; }
  clear(document.getElementById("view"));
  document.getElementById("nav").hidden = true;
  document.getElementById("who").hidden = true;
  document.getElementById("signin").hidden = false;
  document.getElementById("signin-error").textContent = message || "";
  document.title = "Sign in · Caxton console";
  document.getElementById("credential").focus();
}

async function loadSession() {
  const had = Boolean(credential());
  try {
    context.session = await api("/api/v1/session");
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) {
      setCredential("");
      showSignin(had ? `Not signed in: ${error.message}` : "");
      return false;
    }
    showSignin(`The server did not answer: ${error.message}`);
    return false;
  }
  const session = context.session;
  document.getElementById("signin").hidden = true;
  document.getElementById("nav").hidden = false;
  document.getElementById("who").hidden = false;
  document.getElementById("who-name").textContent = session.authentication ? session.name : "authentication off";
  document.getElementById("who-role").textContent = session.role;
  document.getElementById("signout").hidden = !session.authentication;
  startEvents();
  return true;
}

function route() {
  if (!context.session) return;
  const [page, ...rest] = (window.location.hash.replace(/^#\/?/, "") || "agents").split("/");
  const name = PAGES[page] ? page : "agents";
  const argument = rest.length ? decodeURIComponent(rest.join("/")) : "";
  for (const link of document.querySelectorAll("#nav a")) {
    const current = link.dataset.page === (name === "agent" ? "agents" : name);
    if (current) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  if (stopPage) { stopPage(); stopPage = null; }
  const view = clear(document.getElementById("view"));
  document.title = `${TITLES[name]}${argument ? ` ${argument}` : ""} · Caxton console`;
  try {
    stopPage = PAGES[name].render(view, context, argument) || null;
  } catch (error) {
    view.append(h("p", { class: "error", role: "alert" }, `This page failed: ${error.message}`));
  }
  document.getElementById("main").focus({ preventScroll: true });
}

async function start() {
  document.getElementById("signin-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const input = document.getElementById("credential");
    const value = input.value.trim();
    if (!value) return;
    setCredential(value);
    input.value = "";
    if (await loadSession()) route();
  });
  document.getElementById("signout").addEventListener("click", () => {
    setCredential("");
    context.session = null;
    showSignin("Signed out.");
  });
  window.addEventListener("hashchange", route);
  if (await loadSession()) route();
}

// Any page may ask for the sign-in again when a call answers 401 (an expired token).
window.addEventListener("caxton:unauthenticated", () => {
  if (!context.session) return; // the sign-in itself reports its own refusal
  setCredential("");
  context.session = null;
  showSignin("Your credential was refused; sign in again.");
});

start();
