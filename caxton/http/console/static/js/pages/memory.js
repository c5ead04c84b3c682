// Memory: semantic search with similarity scores, an entity with its observations, and its
// neighbourhood drawn as a graph (depth 1 or 2).
import { api, enc } from "../api.js";
import { clear, h, when, put } from "../dom.js";
import { neighbourhood } from "../svg.js";

export function render(view, context, initial) {
  const controller = new AbortController();
  const q = h("input", { id: "memory-q", name: "q", type: "search", required: true, maxlength: "2000", placeholder: "What to look for, in words" });
  const limit = h("input", { id: "memory-limit", name: "limit", type: "number", min: "1", max: "100", value: "10" });
  const results = h("ul", { class: "results", id: "memory-results", "aria-label": "Search results" });
  const found = h("p", { class: "muted", role: "status" });
  const entity = h("div", { id: "memory-entity" }, h("p", { class: "muted" }, "Pick an entity to see it."));
  const depth = h("select", { id: "memory-depth" }, h("option", { value: "1" }, "1"), h("option", { value: "2", selected: true }, "2"));
  const graph = h("div", { id: "memory-graph" });
  const stats = h("p", { class: "muted", id: "memory-stats" });
  let shown = initial || "";

  const form = h("form", { id: "memory-form", role: "search" },
    h("label", { for: "memory-q" }, "Search memory"), q,
    h("div", { class: "row" }, h("div", {}, h("label", { for: "memory-limit" }, "Results"), limit), h("button", { type: "submit", id: "memory-search" }, "Search")));
  view.append(h("h1", {}, "Memory"), stats, h("div", { class: "split" },
    h("section", { class: "card", "aria-labelledby": "search-h" }, h("h2", { id: "search-h", class: "visually-hidden" }, "Search"), form, found, results),
    h("section", { class: "card", "aria-labelledby": "entity-h" }, h("h2", { id: "entity-h" }, "Entity"), entity)),
    h("section", { class: "card", "aria-labelledby": "graph-h" }, h("h2", { id: "graph-h" }, "Neighbourhood"),
      h("div", { class: "row" }, h("div", {}, h("label", { for: "memory-depth" }, "Depth"), depth)), graph));

  async function search(event) {
    if (event) event.preventDefault();
    if (!q.value.trim()) return;
    try {
      const data = await api(`/api/v1/memory/search?q=${enc(q.value.trim())}&limit=${enc(limit.value || "10")}`, { signal: controller.signal });
      clear(results);
      found.textContent = `${data.results.length} result${data.results.length === 1 ? "" : "s"}`;
      for (const r of data.results) {
        const score = Number(r.similarity ?? r.score ?? 0);
        results.append(h("li", { "data-entity": r.name },
          h("span", { class: "score", "aria-label": `similarity ${score.toFixed(3)}` }, score.toFixed(3)),
          h("span", { class: "bar", style: null, "data-w": String(Math.round(Math.max(0, score) * 100)) }),
          h("button", { type: "button", onclick: () => pick(r.name) }, r.name), " ", h("span", { class: "chip" }, r.entity_type || ""),
          r.observations && r.observations.length ? h("div", { class: "muted" }, String(r.observations[0]).slice(0, 200)) : null));
      }
      // widths set through the CSSOM: the policy forbids inline style attributes
      for (const bar of results.querySelectorAll(".bar")) bar.style.width = `${bar.dataset.w}px`;
    } catch (error) {
      found.textContent = "";
      put(results, h("li", { class: "error", role: "alert" }, error.message));
    }
  }

  async function pick(name) {
    shown = name;
    try {
      const data = await api(`/api/v1/memory/entities/${enc(name)}`, { signal: controller.signal });
      put(entity, h("h3", {}, data.name, " ", h("span", { class: "chip" }, data.entity_type)),
        h("p", { class: "muted" }, `${data.scope || ""}${data.agent ? ` · agent ${data.agent}` : ""} · updated ${when(data.updated_at)}`),
        h("h4", {}, "Observations"),
        h("ul", { id: "memory-observations" }, (data.observations || []).map((o) => h("li", {}, String(o)))));
    } catch (error) {
      put(entity, h("p", { class: "error", role: "alert" }, error.message));
    }
    drawGraph();
  }

  async function drawGraph() {
    if (!shown) return;
    try {
      const data = await api(`/api/v1/memory/graph/${enc(shown)}?max_depth=${depth.value}`, { signal: controller.signal });
      put(graph, neighbourhood(data, pick),
        data.edges.length ? null : h("p", { class: "muted" }, "No relations: the entity stands alone."));
    } catch (error) {
      put(graph, h("p", { class: "error" }, error.message));
    }
  }

  form.addEventListener("submit", search);
  depth.addEventListener("change", drawGraph);
  api("/api/v1/memory/stats", { signal: controller.signal }).then((data) => {
    const entities = data.entity_count ?? data.entities ?? (data.memory && data.memory.entities);
    const relations = data.relation_count ?? data.relations;
    stats.textContent = `${entities ?? "?"} entities · ${relations ?? "?"} relations`;
  }).catch(() => {});
  if (initial) pick(initial);
  return () => controller.abort();
}
