// Small SVG drawings: a line chart of a series, a sequence diagram, a neighbourhood graph.
import { h, s } from "./dom.js";

/** A line chart of ``points`` (numbers); ``label`` names it for screen readers. */
export function lineChart(points, { label, bad = false, format = (v) => v.toFixed(2) } = {}) {
  const width = 320, height = 110, pad = 4;
  const max = Math.max(1e-9, ...points);
  const step = points.length > 1 ? (width - 2 * pad) / (points.length - 1) : 0;
  const xy = points.map((v, i) => [pad + i * step, height - pad - (v / max) * (height - 2 * pad)]);
  const path = xy.map(([x, y], i) => `${i ? "L" : "M"}${x.toFixed(1)},${y.toFixed(1)}`).join(" ");
  const last = points.length ? points[points.length - 1] : 0;
  return s("svg", { class: "chart", viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": `${label}: now ${format(last)}, peak ${format(max)}` , preserveAspectRatio: "none" },
    s("line", { class: "axis", x1: 0, y1: height - pad, x2: width, y2: height - pad }),
    points.length > 1 ? s("path", { class: "area", d: `${path} L${xy[xy.length - 1][0]},${height - pad} L${pad},${height - pad} Z` }) : null,
    points.length > 1 ? s("path", { class: `line${bad ? " bad" : ""}`, d: path }) : null);
}

/** Messages between participants as a sequence diagram (one lifeline each, time downwards). */
export function sequence(messages, describe) {
  const names = [];
  for (const m of messages) {
    for (const n of [m.sender, m.receiver || m.capability || "?"]) if (!names.includes(n)) names.push(n);
  }
  const col = 170, top = 40, row = 46;
  const width = Math.max(560, names.length * col + 40);
  const height = top + messages.length * row + 30;
  const x = (n) => 20 + names.indexOf(n) * col + col / 2;
  const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, width, height, role: "img", "aria-label": `Sequence of ${messages.length} messages between ${names.join(", ")}` },
    s("defs", {}, s("marker", { id: "arrow", viewBox: "0 0 10 10", refX: "9", refY: "5", markerWidth: "7", markerHeight: "7", orient: "auto-start-reverse" },
      s("path", { d: "M0,0 L10,5 L0,10 z", fill: "#1f4e79" }))),
    names.map((n) => [
      s("rect", { x: x(n) - 70, y: 4, width: 140, height: 26, rx: 5, fill: "#e4ebf3", stroke: "#98a4b1" }),
      s("text", { x: x(n), y: 22, "text-anchor": "middle", "font-size": 13, "font-weight": 600 }, n.length > 20 ? `${n.slice(0, 19)}…` : n),
      s("line", { x1: x(n), y1: 30, x2: x(n), y2: height - 8, stroke: "#c3ccd6", "stroke-dasharray": "4 4" }),
    ]),
    messages.map((m, i) => {
      const from = x(m.sender), to = x(m.receiver || m.capability || "?");
      const y = top + i * row + 20;
      const self = from === to;
      const colour = m.performative === "failure" ? "#b3261e" : "#1f4e79";
      return s("g", { class: "hop" },
        s("title", {}, describe(m, i)),
        self ? s("path", { d: `M${from},${y} h40 v14 h-38`, fill: "none", stroke: colour, "stroke-width": 1.6, "marker-end": "url(#arrow)" })
          : s("line", { x1: from, y1: y, x2: to + (to > from ? -3 : 3), y2: y, stroke: colour, "stroke-width": 1.6, "marker-end": "url(#arrow)" }),
        s("text", { x: (from + to) / 2 + (self ? 50 : 0), y: y - 6, "text-anchor": self ? "start" : "middle", "font-size": 12, fill: colour }, describe(m, i, true)));
    }));
  return svg;
}

/** A graph of ``nodes`` (with depth 0, 1, 2) and ``edges``, drawn as rings around the root. */
export function neighbourhood(graph, onPick) {
  const width = 900, height = 380, cx = width / 2, cy = height / 2;
  const byDepth = [[], [], []];
  for (const node of graph.nodes) byDepth[Math.min(2, node.depth || 0)].push(node);
  const where = new Map();
  const angles = new Map();
  const place = (node, depth, angle) => {
    // each depth on an ellipse around the root, wider than tall to fit the page
    angles.set(node.name, angle);
    where.set(node.name, [cx + depth * 200 * Math.cos(angle), cy + depth * 72 * Math.sin(angle)]);
  };
  for (const node of byDepth[0]) place(node, 0, 0);
  byDepth[1].forEach((node, i) => place(node, 1, (2 * Math.PI * i) / Math.max(1, byDepth[1].length) - Math.PI / 6));
  // depth 2 fans out beside the depth-1 entity it hangs from
  const children = new Map();
  for (const node of byDepth[2]) {
    const edge = graph.edges.find((e) => (e.from === node.name && angles.has(e.to)) || (e.to === node.name && angles.has(e.from)));
    const parent = edge ? (edge.from === node.name ? edge.to : edge.from) : null;
    if (!children.has(parent)) children.set(parent, []);
    children.get(parent).push(node);
  }
  for (const [parent, nodes] of children) {
    const base = parent !== null && angles.has(parent) ? angles.get(parent) : Math.PI / 2;
    nodes.forEach((node, k) => place(node, 2, base + (k - (nodes.length - 1) / 2) * 0.35));
  }
  const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, role: "group", "aria-label": `Neighbourhood of ${graph.root}: ${graph.nodes.length} entities, ${graph.edges.length} relations` },
    graph.edges.filter((e) => where.has(e.from) && where.has(e.to)).map((e) => {
      const [x1, y1] = where.get(e.from), [x2, y2] = where.get(e.to);
      return s("g", {}, s("title", {}, `${e.from} ${e.relation_type} ${e.to}`), s("line", { x1, y1, x2, y2, "stroke-width": 1 + 2 * (e.strength ?? 0.5) }),
        s("text", { x: (x1 + x2) / 2, y: (y1 + y2) / 2 - 4, "text-anchor": "middle", "font-size": 11, fill: "#56616d" }, e.relation_type));
    }),
    graph.nodes.map((node) => {
      const [x, y] = where.get(node.name);
      const g = s("g", { class: `node d${node.depth || 0}${node.name === graph.root ? " root" : ""}`, tabindex: "0", role: "button",
        "aria-label": `${node.name} (${node.entity_type}), depth ${node.depth}`, "data-entity": node.name,
        onclick: () => onPick(node.name), onkeydown: (ev) => { if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); onPick(node.name); } } },
        s("circle", { cx: x, cy: y, r: node.name === graph.root ? 24 : 18 }),
        s("text", { x, y: y + (node.name === graph.root ? 40 : 33), "text-anchor": "middle", "font-size": 12 }, node.name.length > 22 ? `${node.name.slice(0, 21)}…` : node.name));
      return g;
    }));
  return h("div", { class: "graph" }, svg);
}
