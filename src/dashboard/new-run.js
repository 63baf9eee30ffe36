// The new run form: repository, prompt, model from the catalog, ref, task kind, validation
// mode and publishing. On success it opens the run.
import { client, unwrap } from "./api.js";
import { fill, h } from "./dom.js";

export function newRunView(main) {
  const field = (id, label, control, help) => [
    h("label", { for: id }, label),
    control,
    help ? h("p", { class: "muted small", id: `${id}-help` }, help) : null,
  ];
  const input = (id, attrs = {}) => h("input", { id, name: id, ...attrs });
  const select = (id, options, value) => {
    const s = h(
      "select",
      { id, name: id },
      options.map(([v, l]) => h("option", { value: v }, l)),
    );
    s.value = value;
    return s;
  };
  const repository = input("repository", {
    required: true,
    placeholder: "owner/name",
    pattern: "[A-Za-z0-9_.\\-]+/[A-Za-z0-9_.\\-]+",
    autocomplete: "off",
  });
  const prompt = h("textarea", { id: "prompt", name: "prompt", rows: "6", required: true, maxlength: "120000" });
  const model = input("model", { list: "model-list", autocomplete: "off", "aria-describedby": "model-help" });
  const models = h("datalist", { id: "model-list" });
  const ref = input("ref", { placeholder: "default branch", autocomplete: "off" });
  const kind = select(
    "task-kind",
    [
      ["code", "Code: change the repository"],
      ["plan", "Plan: answer with a plan only"],
    ],
    "code",
  );
  const validation = select(
    "validation",
    [
      ["basic", "Basic"],
      ["tests", "Tests"],
      ["minimal", "Minimal"],
    ],
    "basic",
  );
  const publish = select(
    "publish",
    [
      ["none", "No: keep the patch here"],
      ["draft_pr", "Open a draft pull request"],
    ],
    "none",
  );
  const error = h("p", { class: "error", role: "alert" });
  const submit = h("button", { type: "submit" }, "Start run");

  const form = h(
    "form",
    { class: "card new-run", "aria-labelledby": "new-title" },
    h("h1", { id: "new-title" }, "New run"),
    field("repository", "Repository", repository),
    field("prompt", "Prompt", prompt),
    field("model", "Model", model, "Loading the catalog…"),
    models,
    field("ref", "Ref (branch, tag or commit)", ref),
    field("task-kind", "Task kind", kind),
    field("validation", "Validation", validation),
    field("publish", "Publish", publish),
    submit,
    error,
  );
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    error.textContent = "";
    submit.disabled = true;
    const body = {
      repository: repository.value.trim(),
      prompt: prompt.value,
      taskKind: kind.value,
      validationMode: validation.value,
      publish: { mode: publish.value },
      ...(model.value.trim() ? { modelId: model.value.trim() } : {}),
      ...(ref.value.trim() ? { baseRef: ref.value.trim() } : {}),
    };
    try {
      const run = await client.startRun(body);
      location.hash = `#/runs/${run.id}`;
    } catch (e) {
      error.textContent = e.message;
      submit.disabled = false;
    }
  });
  fill(main, form);
  repository.focus();

  let stopped = false;
  unwrap(client.api.GET("/api/v1/coding-agent/models"))
    .then((catalog) => {
      if (stopped) return;
      fill(
        models,
        [...new Set([catalog.defaultModel, ...catalog.models])].map((m) => h("option", { value: m })),
      );
      if (!model.value) model.value = catalog.defaultModel;
      document.getElementById("model-help").textContent = catalog.models.length
        ? "One of the catalog's models."
        : `Any model id the provider serves; default ${catalog.defaultModel}.`;
    })
    .catch((e) => (document.getElementById("model-help").textContent = `Catalog unavailable: ${e.message}`));
  return () => {
    stopped = true;
  };
}
