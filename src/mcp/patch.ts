/**
 * Cutting a unified diff down to what a tool caller asked for: only some files, at most
 * some bytes. Works on `git diff` output (sections start with `diff --git`).
 */

/** One file's section of a unified diff, with the paths it touches (old and new). */
interface FileSection {
  paths: string[];
  text: string;
}

/** Split a `git diff` into per-file sections. Text before the first section is dropped. */
export function splitPatch(patch: string): FileSection[] {
  const sections: FileSection[] = [];
  for (const chunk of patch.split(/^(?=diff --git )/m)) {
    if (!chunk.startsWith("diff --git ")) continue;
    sections.push({ paths: sectionPaths(chunk), text: chunk });
  }
  return sections;
}

function sectionPaths(section: string): string[] {
  const paths = new Set<string>();
  for (const line of section.split("\n")) {
    if (line.startsWith("@@")) break; // past the header: the rest is content
    let m = /^(?:---|\+\+\+) [ab]\/(.*)$/.exec(line);
    if (m) paths.add(m[1]!);
    m = /^rename (?:from|to) (.*)$/.exec(line);
    if (m) paths.add(m[1]!);
  }
  // Sections without ---/+++ lines (empty new files, mode changes, binaries): read the header,
  // which is unambiguous when old and new path are the same.
  if (paths.size === 0) {
    const header = section.split("\n", 1)[0]!;
    const m = /^diff --git a\/(.*) b\/(.*)$/.exec(header);
    if (m) {
      paths.add(m[1]!);
      paths.add(m[2]!);
    }
  }
  return [...paths];
}

/** True when `file` is one of `wanted`, or inside a wanted directory. */
function pathMatches(file: string, wanted: readonly string[]): boolean {
  return wanted.some((w) => {
    const dir = w.replace(/\/+$/, "");
    return file === dir || file.startsWith(dir + "/");
  });
}

export interface CutPatch {
  patch: string;
  /** Files of the returned sections (before the size cap). */
  files: string[];
  truncated: boolean;
  /** Size in bytes of the filtered patch before the cap. */
  totalBytes: number;
}

/** Keep the sections touching `paths` (all when omitted), then cap at `maxBytes` on a line boundary. */
export function cutPatch(patch: string, opts: { paths?: readonly string[]; maxBytes: number }): CutPatch {
  const sections = splitPatch(patch);
  const kept = opts.paths?.length ? sections.filter((s) => s.paths.some((p) => pathMatches(p, opts.paths!))) : sections;
  const filtered = opts.paths?.length ? kept.map((s) => s.text).join("") : patch;
  const files = [...new Set(kept.flatMap((s) => s.paths.filter((p) => p !== "/dev/null")))];
  const bytes = Buffer.from(filtered, "utf8");
  if (bytes.length <= opts.maxBytes) return { patch: filtered, files, truncated: false, totalBytes: bytes.length };
  // Cut on a line boundary so the caller never sees half a line (or half a UTF-8 character).
  const head = bytes.subarray(0, opts.maxBytes);
  const lastNewline = head.lastIndexOf(0x0a);
  const cut = lastNewline >= 0 ? head.subarray(0, lastNewline + 1) : Buffer.alloc(0);
  return { patch: cut.toString("utf8"), files, truncated: true, totalBytes: bytes.length };
}
