// Health: components, request rate and latency, reloads and errors, drawn from the server's
// own figures (/api/v1/health and /api/v1/metrics/summary), read every few seconds.
import { api } from "../api.js";
import { clear, h, statusCell, put } from "../dom.js";
import { lineChart } from "../svg.js";

const EVERY_MS = 3000;
const KEEP = 60;

export function render(view) {
  const controller = new AbortController();
  const summary = h("div", { id: "health-summary" });
  const components = h("tbody");
  const charts = h("div", { class: "grid", id: "health-charts" });
  view.append(h("h1", {}, "Health"), summary, charts,
    h("section", { class: "card", "aria-labelledby": "comp-h" }, h("h2", { id: "comp-h" }, "Components"),
      h("table", { id: "components-table" }, h("thead", {}, h("tr", {}, ["Component", "State", "Detail"].map((t) => h("th", { scope: "col" }, t)))), components)));
  const series = { rate: [], latency: [], reloads: [], failures: [], errors: [] };
  let last = null;
  let timer = null;

  function card(title, points, text, options) {
    return h("section", { class: "card", "aria-label": title }, h("h2", {}, title), h("div", { class: "figure" }, text), lineChart(points, { label: title, ...options }));
  }

  async function tick() {
    try {
      const [report, figures] = await Promise.all([api("/api/v1/health", { signal: controller.signal }), api("/api/v1/metrics/summary", { signal: controller.signal })]);
      put(summary, h("p", {}, "Status ", statusCell(report.status === "healthy" ? "running" : "failed"), ` ${report.status} · version ${report.version} · up ${Math.round(report.uptime_seconds)} s`
        + ` · ${report.agents.config} config + ${report.agents.wasm} WASM agents · ${report.memory.entities} entities (${report.memory.backend})${report.safe_mode ? " · SAFE MODE" : ""}`));
      clear(components);
      for (const c of report.components) components.append(h("tr", {}, h("th", { scope: "row" }, c.name), h("td", {}, statusCell(c.state)), h("td", { class: "muted" }, c.detail || "")));
      if (last) {
        const dt = Math.max(0.001, figures.uptime_seconds - last.uptime_seconds);
        const requests = figures.http.requests - last.http.requests;
        const push = (key, value) => { series[key].push(Math.max(0, value)); if (series[key].length > KEEP) series[key].shift(); };
        push("rate", requests / dt);
        push("latency", requests > 0 ? ((figures.http.seconds - last.http.seconds) / requests) * 1000 : 0);
        push("reloads", figures.reloads.ok - last.reloads.ok);
        push("failures", figures.reloads.failed - last.reloads.failed);
        push("errors", (figures.http.server_errors - last.http.server_errors) + (figures.messages.failed - last.messages.failed));
      }
      last = figures;
      const now = (key) => (series[key].length ? series[key][series[key].length - 1] : 0);
      put(charts, 
        card("Requests per second", series.rate, now("rate").toFixed(2)),
        card("Mean request latency (ms)", series.latency, `${now("latency").toFixed(1)} ms`, { format: (v) => `${v.toFixed(1)} ms` }),
        card("Reloads", series.reloads, `${figures.reloads.ok} ok · ${figures.reloads.failed} failed`, { format: (v) => String(v) }),
        card("Failed reloads", series.failures, String(figures.reloads.failed), { bad: true, format: (v) => String(v) }),
        card("Errors (5xx and failed messages)", series.errors, `${figures.http.server_errors} · ${figures.messages.failed}`, { bad: true, format: (v) => String(v) }),
        h("section", { class: "card", "aria-label": "Process" }, h("h2", {}, "Process"),
          h("p", {}, `Memory ${(figures.memory_bytes / 1048576).toFixed(0)} MiB · CPU ${figures.cpu_seconds.toFixed(1)} s`),
          h("p", {}, `Agent p99 ${(figures.agents.response_p99_seconds * 1000).toFixed(1)} ms · memory search p99 ${(figures.memory.search_p99_seconds * 1000).toFixed(1)} ms`),
          h("p", {}, `${figures.http.requests} requests · ${figures.http.client_errors} client errors · ${figures.messages.ok} messages routed`)));
    } catch (error) {
      put(summary, h("p", { class: "error", role: "alert" }, `Could not read the server's health: ${error.message}`));
    }
    timer = setTimeout(tick, EVERY_MS);
  }
  tick();
  return () => { controller.abort(); clearTimeout(timer); };
}
