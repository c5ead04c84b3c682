// Agents: every agent with type, status, serving version, canary, capabilities, last reload
// and, for a failed file, its error; refreshed from /ws/events as agents come and go.
import { api, enc } from "../api.js";
import { clear, h, statusCell, when } from "../dom.js";
import { onEvent } from "../events.js";

const AGENT_EVENTS = new Set(["agent_deployed", "agent_updated", "agent_status_changed", "agent_deleted", "agent_reload_failed"]);

export function errorLine(agent) {
  const reload = agent.last_reload || {};
  const problems = agent.pending_errors || [];
  if (reload.ok !== false && !problems.length) return null;
  const first = problems[0];
  const where = first && first.line ? `line ${first.line}${first.column ? `:${first.column}` : ""}: ` : "";
  const text = first ? `${where}${first.message}` : (reload.error || "failed");
  return h("div", { class: "reload-error", "data-error-line": first && first.line ? String(first.line) : "" }, text,
    problems.length > 1 ? h("span", { class: "muted" }, ` (+${problems.length - 1} more)`) : null);
}

function row(agent, fresh) {
  const canary = agent.canary ? `${agent.canary.version} at ${agent.canary.traffic_percentage}%` : "—";
  const reload = agent.last_reload || {};
  return h("tr", { "data-agent": agent.name, class: fresh ? "flash" : "" },
    h("th", { scope: "row" }, h("a", { href: `#/agent/${enc(agent.name)}` }, agent.name)),
    h("td", { "data-label": "Type" }, agent.type),
    h("td", { "data-label": "Status" }, statusCell(agent.status)),
    h("td", { "data-label": "Version" }, agent.version || "—"),
    h("td", { "data-label": "Canary" }, canary),
    h("td", { "data-label": "Capabilities" }, h("div", { class: "chips" }, (agent.capabilities || []).map((c) => h("span", { class: "chip" }, c)))),
    h("td", { "data-label": "Last reload" }, reload.at ? when(reload.at) : "", errorLine(agent)),
  );
}

export function render(view, context) {
  const count = h("p", { class: "muted", id: "agents-count" });
  const body = h("tbody");
  const table = h("table", { id: "agents-table", class: "stack" },
    h("caption", { class: "visually-hidden" }, "Agents, with status, versions and the last reload"),
    h("thead", {}, h("tr", {}, ["Name", "Type", "Status", "Version", "Canary", "Capabilities", "Last reload"].map((t) =>
      h("th", { scope: "col" }, t)))),
    body);
  const failure = h("p", { class: "error", role: "alert" });
  view.append(h("h1", {}, "Agents"), h("section", { class: "card", "aria-labelledby": "agents-h" },
    h("h2", { id: "agents-h", class: "visually-hidden" }, "Agent list"), count, failure, h("div", { class: "table-wrap" }, table)));
  if (context.session.can.deploy) {
    view.append(h("p", { class: "muted" }, "Drop a .toml file into the server's agents_dir (or deploy one with caxton agents deploy): it appears here as it loads."));
  }
  let known = null;
  let pending = null;
  let stopped = false;
  const controller = new AbortController();

  async function refresh() {
    pending = null;
    try {
      const data = await api("/api/v1/agents?limit=1000", { signal: controller.signal });
      if (stopped) return;
      const before = known;
      known = new Map(data.agents.map((a) => [a.name, JSON.stringify(a)]));
      clear(body);
      for (const agent of data.agents) {
        body.append(row(agent, before !== null && before.get(agent.name) !== JSON.stringify(agent)));
      }
      count.textContent = `${data.total} agent${data.total === 1 ? "" : "s"}`;
      failure.textContent = "";
    } catch (error) {
      if (!stopped) failure.textContent = `Could not list agents: ${error.message}`;
    }
  }
  refresh();
  const unsubscribe = onEvent((event) => {
    if (!AGENT_EVENTS.has(event.type) || pending) return;
    pending = setTimeout(refresh, 100); // a burst of events is one refresh
  });
  const poll = setInterval(refresh, 15000); // also when events were missed while offline
  return () => { stopped = true; controller.abort(); unsubscribe(); clearTimeout(pending); clearInterval(poll); };
}
