// Usage and budgets: drawn from GET /api/v1/usage where the server has it.
import { api } from "../api.js";
import { clear, h, put } from "../dom.js";

export function render(view) {
  const controller = new AbortController();
  const body = h("div", { id: "usage" }, h("p", { class: "muted" }, "loading…"));
  view.append(h("h1", {}, "Usage"), h("section", { class: "card" }, body));
  api("/api/v1/usage", { signal: controller.signal }).then((data) => {
    put(body, h("pre", { tabindex: "0" }, JSON.stringify(data, null, 2)));
  }).catch((error) => {
    put(body, h("p", { class: "muted" }, error.status === 404
      ? "This server does not report usage yet (GET /api/v1/usage is not there)."
      : error.message));
  });
  return () => controller.abort();
}
