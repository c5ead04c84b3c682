// Chat: talk to an agent over /ws/agents/{name}; the reply streams in chunk by chunk; the
// agent's conversations are listed beside it (pick one to read it and go on in it).
import { api, enc, socket } from "../api.js";
import { clear, h, when } from "../dom.js";

const MAX_INPUT = 100_000;

function bubble(kind, who, text) {
  const body = h("span", { class: "text" }, text);
  return { node: h("div", { class: `msg ${kind}` }, h("span", { class: "who" }, who), body), body };
}

function textOf(content) {
  return typeof content === "string" ? content : JSON.stringify(content, null, 2);
}

export function render(view, context, initial) {
  const controller = new AbortController();
  let ws = null;
  let wsAgent = null;
  let conversationId = null;
  let current = null; // the reply bubble being streamed into
  const select = h("select", { id: "chat-agent", name: "agent" });
  const transcript = h("div", { class: "transcript", id: "chat-log", role: "log", "aria-live": "polite", "aria-label": "Conversation" });
  const input = h("textarea", { id: "chat-input", name: "content", rows: "3", maxlength: String(MAX_INPUT), placeholder: "Write a message; Enter sends, Shift+Enter adds a line" });
  const send = h("button", { type: "submit", id: "chat-send" }, "Send");
  const state = h("p", { class: "muted", id: "chat-state" });
  const history = h("ul", { class: "history", id: "chat-history", "aria-label": "Conversations with this agent" });
  const allowed = context.session.can.chat;
  const form = h("form", { id: "chat-form" },
    h("label", { for: "chat-input" }, "Message"), input, h("div", { class: "row" }, send,
      h("button", { type: "button", class: "quiet", id: "chat-new", onclick: () => { conversationId = null; clear(transcript); state.textContent = "New conversation"; loadHistory(); } }, "New conversation")));
  view.append(h("h1", {}, "Chat"), h("div", { class: "chat" },
    h("section", { class: "card", "aria-labelledby": "chat-h" }, h("h2", { id: "chat-h", class: "visually-hidden" }, "Talk to an agent"),
      h("div", { class: "row" }, h("div", {}, h("label", { for: "chat-agent" }, "Agent"), select)), state, transcript,
      allowed ? form : h("p", { class: "muted", id: "chat-refused" }, `Your role (${context.session.role}) may read conversations but not talk to agents.`)),
    h("section", { class: "card", "aria-labelledby": "history-h" }, h("h2", { id: "history-h" }, "History"), history)));

  function connect() {
    if (ws && wsAgent === select.value && ws.readyState <= 1) return ws;
    if (ws) ws.close(1000);
    wsAgent = select.value;
    ws = socket(`/ws/agents/${enc(wsAgent)}`);
    ws.addEventListener("message", (frame) => {
      let data;
      try { data = JSON.parse(frame.data); } catch (_) { return; }
      if (!current) current = bubble("agent", wsAgent, "");
      if (!current.node.isConnected) transcript.append(current.node);
      if (data.type === "chunk") {
        current.body.textContent += data.text;
      } else if (data.type === "done") {
        const message = data.message || {};
        if (!current.body.textContent) current.body.textContent = textOf(message.content);
        if (message.performative === "failure") current.node.classList.add("failure");
        current.node.dataset.done = "true";
        conversationId = message.conversation_id || conversationId;
        state.textContent = `Conversation ${conversationId}`;
        current = null;
        send.disabled = false;
        loadHistory();
      } else if (data.type === "error") {
        const error = data.error || data;
        current.node.classList.add("failure");
        current.body.textContent = `${error.code || "ERROR"}: ${error.message || "the agent failed"}`;
        current.node.dataset.done = "true";
        current = null;
        send.disabled = false;
      }
      transcript.scrollTop = transcript.scrollHeight;
    });
    ws.addEventListener("close", (event) => {
      if (current) {
        current.node.classList.add("failure");
        current.body.textContent += `\n[connection closed: ${event.reason || event.code}]`;
        current = null;
      }
      send.disabled = false;
    });
    return ws;
  }

  function submit(event) {
    event.preventDefault();
    const text = input.value.trim();
    if (!text || !select.value || current) return;
    const target = connect();
    const frame = JSON.stringify(conversationId ? { content: text, conversation_id: conversationId } : { content: text });
    const go = () => target.send(frame);
    if (target.readyState === WebSocket.OPEN) go(); else target.addEventListener("open", go, { once: true });
    transcript.append(bubble("you", "you", text).node);
    current = bubble("agent", select.value, "");
    transcript.append(current.node);
    input.value = "";
    send.disabled = true;
  }
  form.addEventListener("submit", submit);
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) submit(event);
  });

  async function open(id) {
    try {
      const data = await api(`/api/v1/conversations/${enc(id)}?limit=200`, { signal: controller.signal });
      conversationId = id;
      clear(transcript);
      for (const m of data.messages) {
        const mine = !(m.sender === select.value);
        const b = bubble(mine ? "you" : "agent", m.sender, textOf(m.content));
        if (m.performative === "failure") b.node.classList.add("failure");
        transcript.append(b.node);
      }
      state.textContent = `Conversation ${id} (${data.status})`;
      loadHistory();
    } catch (error) {
      state.textContent = error.message;
    }
  }

  async function loadHistory() {
    if (!select.value) return;
    try {
      const data = await api(`/api/v1/conversations?agent=${enc(select.value)}&limit=30`, { signal: controller.signal });
      clear(history);
      for (const c of data.conversations) {
        history.append(h("li", {}, h("button", { type: "button", "aria-pressed": String(c.conversation_id === conversationId), onclick: () => open(c.conversation_id) },
          h("span", { class: "mono" }, c.conversation_id.slice(0, 12)), " ", h("span", { class: "muted" }, `${c.message_count ?? ""} messages · ${when(c.last_activity)}`))));
      }
      if (!data.conversations.length) history.append(h("li", { class: "muted" }, "No conversation yet."));
    } catch (_) { /* the chat works without its history */ }
  }

  select.addEventListener("change", () => { conversationId = null; clear(transcript); state.textContent = ""; loadHistory(); });
  api("/api/v1/agents?limit=1000", { signal: controller.signal }).then((data) => {
    for (const a of data.agents.filter((x) => x.status === "running")) {
      select.append(h("option", { value: a.name, selected: a.name === initial }, a.name));
    }
    loadHistory();
  }).catch((error) => { state.textContent = error.message; });
  return () => { controller.abort(); if (ws) ws.close(1000); };
}
