// One agent: versions as a timeline; canary share, promote and rollback (roles that may);
// a live log tail; the performance figures; the definition as loaded.
import { api, enc, stream } from "../api.js";
import { clear, h, statusCell, toast, when, put } from "../dom.js";
import { onEvent } from "../events.js";
import { errorLine } from "./agents.js";

const MAX_LOG_LINES = 500;

function versionItem(v, agent) {
  const canary = agent.canary && agent.canary.version === v.version && !v.active;
  const cls = v.active ? "active" : canary ? "canary" : v.status === "failed" ? "failed" : "";
  const role = v.active ? "serving" : canary ? `canary ${v.traffic_percentage}%` : v.status;
  return h("li", { class: cls, "data-version": v.version },
    h("strong", {}, v.version), " ", h("span", { class: "muted" }, `revision ${v.revision ?? "?"}`), " — ", role,
    v.traffic_percentage !== undefined && v.active ? h("span", { class: "muted" }, ` (${v.traffic_percentage}% of traffic)`) : null);
}

function controls(name, agent, versions, refresh) {
  const others = versions.filter((v) => !v.active && v.status !== "failed");
  const select = h("select", { id: "canary-version", name: "version" },
    others.map((v) => h("option", { value: v.version, selected: agent.canary && agent.canary.version === v.version }, v.version)));
  const share = h("input", { id: "canary-share", name: "traffic_percentage", type: "number", min: "1", max: "100", step: "1", required: true,
    value: agent.canary ? String(agent.canary.traffic_percentage) : "10" });
  const busy = (fn) => async (event) => {
    if (event) event.preventDefault();
    const buttons = panel.querySelectorAll("button");
    buttons.forEach((b) => { b.disabled = true; });
    try { await fn(); await refresh(); } catch (error) { toast(error.message, true); } finally { buttons.forEach((b) => { b.disabled = false; }); }
  };
  const form = h("form", { id: "canary-form", onsubmit: busy(async () => {
    await api(`/api/v1/agents/${enc(name)}/canary`, { method: "POST", body: { version: select.value, traffic_percentage: Number(share.value) } });
    toast(`${name}: ${select.value} now takes ${share.value}% of new conversations`);
  }) },
    h("div", { class: "row" },
      h("div", {}, h("label", { for: "canary-version" }, "Canary version"), select),
      h("div", {}, h("label", { for: "canary-share" }, "Share of new conversations (%)"), share),
      h("button", { type: "submit", id: "canary-set", disabled: others.length === 0 }, "Set canary share")));
  const promote = h("button", { type: "button", id: "promote", disabled: !agent.canary, onclick: busy(async () => {
    await api(`/api/v1/agents/${enc(name)}/promote`, { method: "POST" });
    toast(`${name}: canary promoted`);
  }) }, "Promote canary");
  const rollback = h("button", { type: "button", id: "rollback", class: "danger", disabled: versions.length < 2 && !agent.canary, onclick: busy(async () => {
    if (!window.confirm(agent.canary ? `End the canary of ${name}?` : `Roll ${name} back to its previous version?`)) return;
    await api(`/api/v1/agents/${enc(name)}/rollback`, { method: "POST", body: {} });
    toast(`${name}: rolled back`);
  }) }, agent.canary ? "Roll back (end canary)" : "Roll back");
  const restart = h("button", { type: "button", id: "restart", class: "quiet", onclick: busy(async () => {
    await api(`/api/v1/agents/${enc(name)}/restart`, { method: "POST" });
    toast(`${name}: restarted`);
  }) }, "Restart");
  const panel = h("section", { class: "card", id: "deploy-controls", "aria-labelledby": "deploy-h" },
    h("h2", { id: "deploy-h" }, "Deployment"),
    others.length ? form : h("p", { class: "muted" }, "No other kept version to send traffic to: deploy a new version first."),
    h("div", { class: "row" }, promote, rollback, restart));
  return panel;
}

function logLine(line) {
  const level = line.level || "info";
  const at = typeof line.timestamp === "number" ? new Date(line.timestamp * 1000).toISOString().slice(11, 23) : String(line.timestamp || "");
  return h("div", { class: `l-${level}` }, `${at} ${level.toUpperCase().padEnd(5)} ${line.message || JSON.stringify(line)}`);
}

export function render(view, context, name) {
  if (!name) { window.location.hash = "#/agents"; return null; }
  const controller = new AbortController();
  let stopped = false;
  const head = h("div");
  const side = h("div");
  const logs = h("div", { class: "logs", id: "agent-logs", role: "log", "aria-live": "off", "aria-label": `Log of ${name}`, tabindex: "0" });
  const perf = h("div", { id: "agent-performance" });
  const definition = h("pre", { id: "agent-definition", tabindex: "0", "aria-label": `Definition of ${name} as loaded` }, "loading…");
  view.append(h("p", {}, h("a", { href: "#/agents" }, "← All agents")), head,
    h("div", { class: "split" },
      h("div", {},
        h("section", { class: "card", "aria-labelledby": "logs-h" }, h("h2", { id: "logs-h" }, "Live log"), logs),
        h("section", { class: "card", "aria-labelledby": "def-h" }, h("h2", { id: "def-h" }, "Definition as loaded"), definition)),
      h("div", {}, side, h("section", { class: "card", "aria-labelledby": "perf-h" }, h("h2", { id: "perf-h" }, "Performance"), perf))));

  async function refresh() {
    try {
      const [agent, versions] = await Promise.all([
        api(`/api/v1/agents/${enc(name)}`, { signal: controller.signal }),
        api(`/api/v1/agents/${enc(name)}/versions`, { signal: controller.signal }).catch(() => ({ versions: [] })),
      ]);
      if (stopped) return;
      put(head, h("h1", {}, name, " ", statusCell(agent.status)),
        h("p", { class: "muted" }, `${agent.type} agent${agent.abi ? ` (${agent.abi})` : ""} · serving ${agent.version || "nothing"}`
          + `${agent.canary ? ` · canary ${agent.canary.version} at ${agent.canary.traffic_percentage}%` : ""} · from ${agent.source || "the API"}`),
        agent.description ? h("p", {}, agent.description) : null, errorLine(agent));
      put(side, h("section", { class: "card", "aria-labelledby": "versions-h" }, h("h2", { id: "versions-h" }, "Versions"),
        versions.versions.length ? h("ol", { class: "timeline", id: "versions" }, versions.versions.map((v) => versionItem(v, agent))) : h("p", { class: "muted" }, "No version loaded.")));
      if (context.session.can.deploy) side.append(controls(name, agent, versions.versions, refresh));
    } catch (error) {
      if (!stopped) put(head, h("h1", {}, name), h("p", { class: "error", role: "alert" }, error.message));
    }
    try {
      const data = await api("/api/v1/agents/performance", { signal: controller.signal });
      const row = data.agents.find((a) => a.name === name);
      put(perf, row ? h("dl", { class: "figures" },
        ["messages", "errors", "p50_ms", "p99_ms", "fuel", "tokens"].map((k) => [h("dt", {}, k.replace("_ms", " (ms)")), h("dd", {}, String(row[k] ?? 0))])) : h("p", { class: "muted" }, "No figures yet."));
    } catch (_) { /* the page still works without figures */ }
    try {
      const loaded = await api(`/api/v1/agents/${enc(name)}/definition`, { signal: controller.signal });
      definition.textContent = `# ${loaded.source} (revision ${loaded.revision}, ${loaded.content_hash})\n${JSON.stringify(loaded.definition, null, 2)}`;
    } catch (error) {
      definition.textContent = error.message;
    }
  }

  async function tail() {
    try {
      await stream(`/api/v1/agents/${enc(name)}/logs?tail=100&follow=true`, (line) => {
        const atEnd = logs.scrollTop + logs.clientHeight >= logs.scrollHeight - 4;
        logs.append(logLine(line));
        while (logs.childElementCount > MAX_LOG_LINES) logs.firstElementChild.remove();
        if (atEnd) logs.scrollTop = logs.scrollHeight;
      }, controller.signal);
    } catch (error) {
      if (!stopped) logs.append(h("div", { class: "l-error" }, `log stream ended: ${error.message}`));
    }
  }
  refresh();
  tail();
  let pending = null;
  const unsubscribe = onEvent((event) => {
    if (event.agent !== name || pending) return;
    pending = setTimeout(() => { pending = null; refresh(); }, 150);
  });
  return () => { stopped = true; controller.abort(); unsubscribe(); clearTimeout(pending); };
}
