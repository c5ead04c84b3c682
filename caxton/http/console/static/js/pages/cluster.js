// Cluster: the instances sharing this server's database (GET /api/v1/cluster).
import { api } from "../api.js";
import { clear, h, when, put } from "../dom.js";

export function render(view) {
  const controller = new AbortController();
  const body = h("div", { id: "cluster" }, h("p", { class: "muted" }, "loading…"));
  view.append(h("h1", {}, "Cluster"), h("section", { class: "card" }, body));
  api("/api/v1/cluster", { signal: controller.signal }).then((data) => {
    put(body, h("p", {}, `Backend ${data.backend} · answered by ${data.instance}`),
      h("div", { class: "table-wrap" }, h("table", {}, h("thead", {}, h("tr", {}, ["Instance", "Address", "Version", "Agents", "Started", "Last heartbeat"].map((t) => h("th", { scope: "col" }, t)))),
        h("tbody", {}, data.instances.map((i) => h("tr", {}, h("th", { scope: "row" }, i.id, i.self ? " (this one)" : ""), h("td", {}, i.address), h("td", {}, i.version),
          h("td", {}, String(i.agents)), h("td", {}, when(i.started_at)), h("td", {}, when(i.last_heartbeat))))))));
  }).catch((error) => put(body, h("p", { class: "error", role: "alert" }, error.message)));
  return () => controller.abort();
}
