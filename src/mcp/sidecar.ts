/**
 * Long tool descriptions live next to their tool as Markdown (`tools/start_run.md`), the
 * way opencode keeps `bash.txt` beside `bash.ts`: the text a model reads is easier to
 * review on its own than inside a string literal.
 */
import fs from "node:fs";

/** Read a sidecar file that sits next to `moduleUrl` (pass `import.meta.url`). */
export function sidecar(moduleUrl: string, file: string): string {
  return fs.readFileSync(new URL(file, moduleUrl), "utf8").trim();
}
