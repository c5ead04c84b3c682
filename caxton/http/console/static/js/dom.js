// Building the page without innerHTML: every value from the server is text, never markup.
const SVG_NS = "http://www.w3.org/2000/svg";

function fill(node, attrs, children) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      node.addEventListener(key.slice(2), value);
    } else if (key === "text") {
      node.textContent = String(value);
    } else {
      node.setAttribute(key, value === true ? "" : String(value));
    }
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** h("tag", {attr: value, onclick: fn}, ...children) */
export function h(tag, attrs, ...children) {
  return fill(document.createElement(tag), attrs, children);
}

/** An SVG element. */
export function s(tag, attrs, ...children) {
  return fill(document.createElementNS(SVG_NS, tag), attrs, children);
}

export function clear(node) {
  while (node.firstChild) node.removeChild(node.firstChild);
  return node;
}

export function when(iso) {
  if (!iso) return "";
  const date = typeof iso === "number" ? new Date(iso * 1000) : new Date(iso);
  return Number.isNaN(date.getTime()) ? String(iso) : date.toLocaleString();
}

export function toast(message, bad = false) {
  const box = document.getElementById("toast");
  const line = h("p", { class: bad ? "bad" : "" }, message);
  box.append(line);
  setTimeout(() => line.remove(), bad ? 8000 : 4000);
}

export function statusCell(status) {
  return h("span", { class: `status status-${status}` }, status || "unknown");
}

export function field(labelText, control, id) {
  control.id = id;
  return h("div", {}, h("label", { for: id }, labelText), control);
}

/** Replace the children of ``node`` with ``children`` (null and false are skipped). */
export function put(node, ...children) {
  clear(node);
  return fill(node, {}, children);
}
