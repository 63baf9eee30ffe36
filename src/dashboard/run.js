// One run: header and actions, its prompt and turns, the live event stream, the diff,
// validation, and the follow-up box. The run is re-read whenever its status changes.
import { ApiError, client } from "./api.js";
import { renderDiff } from "./diff.js";
import { age, fill, h, statusBadge, toast, usageText } from "./dom.js";
import { followEvents } from "./events.js";

const TERMINAL = new Set(["completed", "failed", "cancelled"]);

export function runView(main, runId) {
  const header = h("div", { class: "run-header" });
  const actions = h("div", { class: "actions" });
  const turns = h("ol", { class: "turns" });
  const events = h("ol", { class: "events", "aria-label": "Events", tabindex: "0" });
  const diff = h("div", { class: "diff" });
  const validation = h("div", { class: "validation" });
  const followUp = followUpForm(runId);
  const section = (id, title, ...content) =>
    h("section", { "aria-labelledby": id }, h("h2", { id }, title), ...content);

  fill(
    main,
    h("p", {}, h("a", { href: "#/" }, "← All runs")),
    header,
    actions,
    h(
      "div",
      { class: "run-grid" },
      h(
        "div",
        {},
        section("turns-title", "Prompt and turns", turns),
        section("follow-title", "Follow-up", followUp.el),
      ),
      section("events-title", "Live events", events),
    ),
    section("diff-title", "Patch", diff),
    section("validation-title", "Validation", validation),
  );

  let stopped = false;
  let lastPatch;
  let loading = Promise.resolve();
  const load = () =>
    (loading = loading.then(async () => {
      if (stopped) return;
      try {
        const run = await client.getRun(runId, { patch: true, turns: true });
        if (stopped) return;
        renderHeader(header, run);
        renderActions(actions, run, load);
        renderTurns(turns, run.turns ?? []);
        renderValidation(validation, run.validation);
        followUp.update(run);
        if (run.patch !== lastPatch) {
          lastPatch = run.patch;
          renderDiff(diff, run.patch, run.id);
        }
      } catch (e) {
        if (e instanceof ApiError && e.status === 404)
          fill(main, h("p", { class: "error", role: "alert" }, `No run ${runId}.`));
        else toast(`Could not load the run: ${e.message}`);
      }
    }));
  void load();
  const close = followEvents(runId, events, () => void load());
  return () => {
    stopped = true;
    close();
  };
}

function renderHeader(el, run) {
  const pr = run.draftPullRequest;
  fill(
    el,
    h("h1", {}, `Run ${run.id}`),
    h(
      "dl",
      { class: "facts" },
      fact(
        "Status",
        statusBadge(run.status),
        run.sessionActive ? h("span", { class: "muted" }, " session warm") : null,
      ),
      fact("Repository", run.repository.fullName),
      fact("Model", run.modelId),
      fact("Kind", run.taskKind),
      fact("Ref", run.baseRef ?? "default branch"),
      fact("Turns", String(run.turnCount)),
      fact("Started", h("time", { datetime: run.createdAt, title: run.createdAt }, age(run.createdAt))),
      fact("Usage", usageText(run.usage)),
      fact(
        "Changes",
        run.diffStats
          ? `${run.diffStats.files} files, +${run.diffStats.additions} −${run.diffStats.deletions}`
          : "none",
      ),
      fact(
        "Pull request",
        pr
          ? h("a", { href: pr.url, rel: "noreferrer noopener", target: "_blank" }, `#${pr.number} (${pr.branch})`)
          : run.publish.mode === "draft_pr"
            ? (run.publish.status ?? "pending")
            : "not published",
      ),
      run.chainedFrom ? fact("Continues", h("a", { href: `#/runs/${run.chainedFrom}` }, run.chainedFrom)) : null,
      run.error ? fact("Error", h("span", { class: "error" }, `${run.error.code}: ${run.error.message}`)) : null,
    ),
  );
}

const fact = (name, ...value) => h("div", {}, h("dt", {}, name), h("dd", {}, ...value));

function renderActions(el, run, reload) {
  const act = (label, call, confirmText) => {
    const b = h("button", { type: "button" }, label);
    b.addEventListener("click", async () => {
      if (confirmText && !window.confirm(confirmText)) return;
      b.disabled = true;
      try {
        await call(run.id);
        toast(`${label}: done`);
      } catch (e) {
        toast(`${label} failed: ${e.message}`);
      }
      reload();
    });
    return b;
  };
  fill(
    el,
    run.status === "idle" ? act("End session", client.endSession) : null,
    TERMINAL.has(run.status)
      ? null
      : act("Cancel run", client.cancel, "Cancel this run? The agent stops and the run keeps its patch so far."),
  );
}

function renderTurns(el, turns) {
  fill(
    el,
    turns.map((t) =>
      h(
        "li",
        { class: "turn" },
        h("div", { class: "turn-head" }, `Turn ${t.n} · ${t.taskKind} · ${t.status}`),
        h("pre", { class: "prompt" }, t.prompt),
        t.summary
          ? h("details", {}, h("summary", {}, "Agent's answer"), h("p", { class: "agent-text" }, t.summary))
          : null,
        t.error ? h("p", { class: "error" }, `${t.error.code}: ${t.error.message}`) : null,
      ),
    ),
  );
}

function renderValidation(el, v) {
  if (!v) return fill(el, h("p", { class: "muted" }, "Not run yet."));
  fill(
    el,
    h("p", {}, `${v.mode}: `, h("span", { class: `badge validation-${v.status}` }, v.status)),
    v.commands.map((c) =>
      h(
        "details",
        { class: "command" },
        h("summary", {}, h("code", {}, c.command), ` exit ${c.exitCode ?? "—"} · ${Math.round(c.durationMs)} ms`),
        h("pre", {}, c.outputTail),
      ),
    ),
  );
}

/** The follow-up box: continues an idle run, or (ended runs) starts a chained one. */
function followUpForm(runId) {
  const text = h("textarea", { id: "follow-up", name: "prompt", rows: "3", required: true });
  const button = h("button", { type: "submit" }, "Send");
  const hint = h("p", { class: "muted small" });
  const el = h(
    "form",
    { class: "follow-up" },
    h("label", { for: "follow-up" }, "Message to the agent"),
    text,
    button,
    hint,
  );
  el.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    button.disabled = true;
    try {
      const { run } = await client.sendMessage(runId, { prompt: text.value });
      text.value = "";
      if (run.id !== runId) location.hash = `#/runs/${run.id}`;
    } catch (e) {
      toast(`Not sent: ${e.message}`);
      button.disabled = false;
    }
  });
  return {
    el,
    update(run) {
      const busy = run.status === "queued" || run.status === "running";
      button.disabled = busy;
      hint.textContent = busy
        ? "The agent is working; send when the turn is over."
        : TERMINAL.has(run.status) || !run.sessionActive
          ? "This run's session has ended: a message starts a new run that continues it."
          : "Continues the same session.";
    },
  };
}
