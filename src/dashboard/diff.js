// The patch as a diff: diff2html (its browser bundle, served by Patchbay) renders it per file,
// each collapsible, side by side or unified. diff2html escapes file names and lines.
import { fill, h } from "./dom.js";

/** Render `patch` into `target` (an empty patch says so). */
export function renderDiff(target, patch, runId) {
  if (!patch) return fill(target, h("p", { class: "muted" }, "No changes yet."));
  // Side by side where there is room for it; unified on a phone, unless the user chose.
  const saved = localStorage.getItem("patchbay.diffFormat");
  let format =
    saved === "line-by-line" || saved === "side-by-side"
      ? saved
      : matchMedia("(max-width: 760px)").matches
        ? "line-by-line"
        : "side-by-side";
  const view = h("div", { class: "diff-view" });
  const draw = () => {
    // Diff2HtmlUI comes from the classic script in index.html; it writes its own escaped markup.
    const ui = new window.Diff2HtmlUI(view, patch, {
      outputFormat: format,
      drawFileList: true,
      fileListToggle: false,
      fileContentToggle: true,
      matching: "lines",
      highlight: false,
      synchronisedScroll: true,
    });
    ui.draw();
  };
  const choice = (value, label) => {
    const input = h("input", { type: "radio", name: "diff-format", value, id: `fmt-${value}` });
    input.checked = value === format;
    input.addEventListener("change", () => {
      format = value;
      localStorage.setItem("patchbay.diffFormat", value);
      draw();
    });
    return [input, h("label", { for: `fmt-${value}` }, label)];
  };
  const download = h("button", { type: "button" }, "Download patch");
  download.addEventListener("click", () => {
    const url = URL.createObjectURL(new Blob([patch], { type: "text/x-diff" }));
    const a = h("a", { href: "#", download: `${runId}.patch` });
    a.href = url;
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10_000);
  });
  fill(
    target,
    h(
      "div",
      { class: "bar" },
      h(
        "fieldset",
        { class: "inline" },
        h("legend", {}, "Layout"),
        choice("side-by-side", "Side by side"),
        choice("line-by-line", "Unified"),
      ),
      download,
    ),
    view,
  );
  draw();
}
