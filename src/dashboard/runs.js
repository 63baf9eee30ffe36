// The runs list: status, repository, model, turns, age, tokens and cost, PR link; filtered
// by status; refreshed every few seconds while shown.
import { client } from "./api.js";
import { age, fill, h, statusBadge, usageText } from "./dom.js";

const FILTERS = ["all", "active", "queued", "running", "idle", "completed", "failed", "cancelled"];
const ACTIVE = new Set(["queued", "running", "idle"]);
const REFRESH_MS = 3000;

export function runsView(main) {
  let filter = sessionStorage.getItem("patchbay.filter") ?? "all";
  if (!FILTERS.includes(filter)) filter = "all";
  const select = h("select", { id: "status-filter" }, ...FILTERS.map((f) => h("option", { value: f }, f)));
  select.value = filter;
  const body = h("div", { class: "runs", "aria-live": "polite" }, h("p", { class: "muted" }, "Loading runs…"));
  const updated = h("span", { class: "muted small" });
  let runs = [];

  const render = () => {
    const shown = runs.filter(
      (r) => filter === "all" || r.status === filter || (filter === "active" && ACTIVE.has(r.status)),
    );
    if (!shown.length)
      return fill(body, h("p", { class: "muted" }, runs.length ? "No run matches this filter." : "No runs yet."));
    fill(
      body,
      h(
        "table",
        { class: "runs-table" },
        h("caption", { class: "visually-hidden" }, "Runs, newest first"),
        h(
          "thead",
          {},
          h(
            "tr",
            {},
            ["Run", "Status", "Repository", "Model", "Turns", "Age", "Usage", "Pull request"].map((c) =>
              h("th", { scope: "col" }, c),
            ),
          ),
        ),
        h("tbody", {}, shown.map(row)),
      ),
    );
  };

  select.addEventListener("change", () => {
    filter = select.value;
    sessionStorage.setItem("patchbay.filter", filter);
    render();
  });

  let timer;
  let stopped = false;
  const load = async () => {
    try {
      runs = (await client.listRuns({ limit: 100 })).runs;
      updated.textContent = `Updated ${new Date().toLocaleTimeString()}`;
      render();
    } catch (e) {
      updated.textContent = `Could not refresh: ${e.message}`;
    }
    if (!stopped) timer = setTimeout(load, REFRESH_MS);
  };

  fill(
    main,
    h(
      "section",
      { "aria-labelledby": "runs-title" },
      h(
        "div",
        { class: "bar" },
        h("h1", { id: "runs-title" }, "Runs"),
        h("label", { for: "status-filter" }, "Status"),
        select,
        updated,
        h("a", { class: "button", href: "#/new" }, "New run"),
      ),
      body,
    ),
  );
  void load();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

function row(r) {
  const pr = r.draftPullRequest;
  return h(
    "tr",
    { "data-run": r.id },
    h("td", { "data-label": "Run" }, h("a", { href: `#/runs/${r.id}` }, r.id)),
    h("td", { "data-label": "Status" }, statusBadge(r.status)),
    h("td", { "data-label": "Repository" }, r.repository?.fullName ?? ""),
    h("td", { "data-label": "Model" }, r.modelId),
    h("td", { "data-label": "Turns" }, String(r.turnCount)),
    h("td", { "data-label": "Age" }, h("time", { datetime: r.createdAt, title: r.createdAt }, age(r.createdAt))),
    h("td", { "data-label": "Usage" }, usageText(r.usage)),
    h(
      "td",
      { "data-label": "Pull request" },
      pr ? h("a", { href: pr.url, rel: "noreferrer noopener", target: "_blank" }, `#${pr.number}`) : "—",
    ),
  );
}
