// Conversations: the list, and one conversation's messages drawn as a sequence diagram (who
// asked whom, the performative, how long each hop took).
import { api, enc } from "../api.js";
import { clear, h, when, put } from "../dom.js";
import { sequence } from "../svg.js";

function epoch(value) {
  return typeof value === "number" ? value : Date.parse(value) / 1000;
}

function seconds(a, b) {
  const t = epoch(b) - epoch(a);
  return Number.isFinite(t) ? t : null;
}

/** How long after its request each reply came (by in_reply_to), else after the previous one. */
export function hopTimes(messages) {
  const byId = new Map(messages.map((m) => [m.message_id, m]));
  return messages.map((m, i) => {
    const asked = m.in_reply_to && byId.get(m.in_reply_to);
    if (asked) return seconds(asked.created_at, m.created_at);
    return i ? seconds(messages[i - 1].created_at, m.created_at) : null;
  });
}

function format(t) {
  if (t === null) return "";
  return t < 1 ? `${Math.round(t * 1000)} ms` : `${t.toFixed(2)} s`;
}

export function render(view, context, initial) {
  const controller = new AbortController();
  const list = h("tbody");
  const detail = h("div", { id: "conversation-detail" }, h("p", { class: "muted" }, "Pick a conversation."));
  const status = h("select", { id: "conv-status" }, ["", "active", "closed"].map((v) => h("option", { value: v }, v || "any")));
  view.append(h("h1", {}, "Conversations"),
    h("section", { class: "card", "aria-labelledby": "conv-list-h" }, h("h2", { id: "conv-list-h" }, "Recent"),
      h("div", { class: "row" }, h("div", {}, h("label", { for: "conv-status" }, "Status"), status)),
      h("div", { class: "table-wrap" }, h("table", { id: "conversations-table" },
        h("thead", {}, h("tr", {}, ["Conversation", "Participants", "Messages", "Status", "Last activity"].map((t) => h("th", { scope: "col" }, t)))), list))),
    h("section", { class: "card", "aria-labelledby": "conv-detail-h" }, h("h2", { id: "conv-detail-h" }, "Sequence"), detail));

  async function show(id) {
    try {
      const data = await api(`/api/v1/conversations/${enc(id)}?limit=300`, { signal: controller.signal });
      const times = hopTimes(data.messages);
      const describe = (m, i, short) => short
        ? `${m.performative}${times[i] !== null ? ` · ${format(times[i])}` : ""}`
        : `${m.sender} → ${m.receiver || m.capability}: ${m.performative}, ${format(times[i]) || "first"}; ${typeof m.content === "string" ? m.content.slice(0, 200) : JSON.stringify(m.content).slice(0, 200)}`;
      put(detail, 
        h("p", {}, h("span", { class: "mono" }, data.conversation_id), ` · ${data.status} · ${data.messages.length} messages`),
        data.messages.length ? h("div", { class: "seq" }, sequence(data.messages, describe)) : h("p", { class: "muted" }, "No messages."),
        h("details", {}, h("summary", {}, "Messages as a table"),
          h("table", {}, h("thead", {}, h("tr", {}, ["#", "From", "To", "Performative", "Hop time", "Hop count", "Content"].map((t) => h("th", { scope: "col" }, t)))),
            h("tbody", {}, data.messages.map((m, i) => h("tr", {}, h("td", {}, String(i + 1)), h("td", {}, m.sender), h("td", {}, m.receiver || m.capability || ""),
              h("td", {}, m.performative), h("td", {}, format(times[i])), h("td", {}, String(m.hop ?? "")),
              h("td", { class: "mono" }, (typeof m.content === "string" ? m.content : JSON.stringify(m.content)).slice(0, 300))))))));
    } catch (error) {
      put(detail, h("p", { class: "error", role: "alert" }, error.message));
    }
  }

  async function load() {
    try {
      const data = await api(`/api/v1/conversations?limit=50${status.value ? `&status=${status.value}` : ""}`, { signal: controller.signal });
      clear(list);
      for (const c of data.conversations) {
        list.append(h("tr", {}, h("th", { scope: "row" }, h("a", { href: `#/conversations/${enc(c.conversation_id)}`, class: "mono" }, c.conversation_id.slice(0, 16))),
          h("td", {}, (c.participants || []).join(", ")), h("td", {}, String(c.message_count ?? "")), h("td", {}, c.status), h("td", {}, when(c.last_activity))));
      }
      if (!data.conversations.length) list.append(h("tr", {}, h("td", { colspan: "5", class: "muted" }, "No conversations yet.")));
    } catch (error) {
      put(list, h("tr", {}, h("td", { colspan: "5", class: "error" }, error.message)));
    }
  }
  status.addEventListener("change", load);
  load();
  if (initial) show(initial);
  return () => controller.abort();
}
