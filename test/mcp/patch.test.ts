/** Cutting `git diff` output for get_patch: path filters and the byte cap. */
import { describe, expect, it } from "vitest";
import { cutPatch, splitPatch } from "../../src/mcp/patch.ts";

const PATCH = [
  "diff --git a/NOTES.md b/NOTES.md\nnew file mode 100644\nindex 0000000..1111111\n--- /dev/null\n+++ b/NOTES.md\n@@ -0,0 +1,2 @@\n+first line\n+--- a/src/app.js\n",
  "diff --git a/src/app.js b/src/app.js\nindex 2222222..3333333 100644\n--- a/src/app.js\n+++ b/src/app.js\n@@ -1,3 +1,3 @@\n export function greet() {\n-  return 'hello';\n+  return 'héllo';\n }\n",
  "diff --git a/old name.txt b/docs/new name.txt\nsimilarity index 100%\nrename from old name.txt\nrename to docs/new name.txt\n",
  "diff --git a/empty.txt b/empty.txt\nnew file mode 100644\nindex 0000000..e69de29\n",
].join("");

describe("get_patch cutting", () => {
  it("splits a diff into file sections with the paths each touches, not fooled by content lines", () => {
    expect(splitPatch(PATCH).map((s) => s.paths)).toEqual([
      ["NOTES.md"],
      ["src/app.js"],
      ["old name.txt", "docs/new name.txt"],
      ["empty.txt"],
    ]);
  });

  it("keeps only the sections of the asked-for files and directories", () => {
    expect(cutPatch(PATCH, { paths: ["src/app.js"], maxBytes: 1e6 }).files).toEqual(["src/app.js"]);
    const docs = cutPatch(PATCH, { paths: ["docs/"], maxBytes: 1e6 });
    expect(docs.files).toEqual(["old name.txt", "docs/new name.txt"]);
    expect(docs.patch.startsWith("diff --git a/old name.txt")).toBe(true);
    expect(cutPatch(PATCH, { paths: ["empty.txt"], maxBytes: 1e6 }).patch).toBe(
      PATCH.slice(PATCH.indexOf("diff --git a/empty.txt")),
    );
    expect(cutPatch(PATCH, { paths: ["nothing"], maxBytes: 1e6 })).toMatchObject({
      patch: "",
      files: [],
      truncated: false,
      totalBytes: 0,
    });
    // A prefix of a name is not a directory.
    expect(cutPatch(PATCH, { paths: ["src/app"], maxBytes: 1e6 }).files).toEqual([]);
  });

  it("returns the whole patch untouched under the cap", () => {
    expect(cutPatch(PATCH, { maxBytes: 1e6 })).toEqual({
      patch: PATCH,
      files: ["NOTES.md", "src/app.js", "old name.txt", "docs/new name.txt", "empty.txt"],
      truncated: false,
      totalBytes: Buffer.byteLength(PATCH),
    });
  });

  it("caps at maxBytes on a line boundary and says so, never splitting a UTF-8 character", () => {
    const accent = PATCH.indexOf("héllo");
    const cut = cutPatch(PATCH, { maxBytes: Buffer.byteLength(PATCH.slice(0, accent + 2)) });
    expect(cut.truncated).toBe(true);
    expect(cut.totalBytes).toBe(Buffer.byteLength(PATCH));
    expect(
      cut.patch.endsWith("+++ b/src/app.js\n@@ -1,3 +1,3 @@\n export function greet() {\n-  return 'hello';\n"),
    ).toBe(true);
    expect(cutPatch(PATCH, { maxBytes: 5 }).patch).toBe("");
  });
});
