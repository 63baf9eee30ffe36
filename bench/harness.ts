/**
 * A tiny benchmark harness. Each module measures something against a baseline and reports
 * rows; `bench/run.ts` runs the modules, prints a table, and writes
 * `bench/results/<name>.json` and `.md` so results can be committed and compared.
 */
import fs from "node:fs";
import path from "node:path";

export interface Row {
  metric: string;
  /** The reference measurement (e.g. the first 1,000 appends). */
  baseline: number;
  /** The measurement under test (e.g. the last 1,000 appends). */
  value: number;
  /** value / baseline: ~1.0 means "does not grow". */
  ratio: number;
  unit: string;
  note?: string;
}

export interface Result {
  name: string;
  rows: Row[];
}

export interface BenchModule {
  /** File-safe name; also the results file name. */
  name: string;
  run(): Promise<Result>;
}

export function row(metric: string, baseline: number, value: number, unit: string, note?: string): Row {
  return {
    metric,
    baseline,
    value,
    ratio: baseline === 0 ? Number.NaN : value / baseline,
    unit,
    ...(note ? { note } : {}),
  };
}

/** Mean of an array of numbers. */
export const mean = (xs: readonly number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;

/** Median, which shrugs off a GC pause in a short series. */
/** The `p` quantile (0..1) of `xs`, nearest rank. */
export const pct = (xs: readonly number[], p: number) =>
  [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * p))]!;

export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/**
 * The machine's speed in one line, so results from different machines can be read side by side:
 * a fixed integer loop timed 5 times. The best shows the core's speed; the median, next to it,
 * how much of it other processes left the benchmark.
 */
export function machineSpeed(): string {
  const times: number[] = [];
  const steps = 50_000_000;
  let x = 1;
  for (let k = 0; k < 5; k++) {
    const t0 = performance.now();
    for (let i = 0; i < steps; i++) x = (Math.imul(x, 1103515245) + 12345) | 0;
    times.push(performance.now() - t0);
  }
  // Read once, so the loop's result is used and cannot be optimised away.
  const speed = `fixed CPU loop (${steps / 1e6}M LCG steps) best ${Math.min(...times).toFixed(0)} ms, median ${median(times).toFixed(0)} ms of 5 (lower is faster)`;
  return x === 0.5 ? "" : speed;
}

/** Microseconds elapsed since `start` (from process.hrtime.bigint()). */
export const usSince = (start: bigint) => Number(process.hrtime.bigint() - start) / 1000;

const fmt = (n: number) =>
  Number.isNaN(n) ? "-" : Math.abs(n) >= 100 ? n.toFixed(0) : Math.abs(n) >= 10 ? n.toFixed(1) : n.toFixed(2);

export function toMarkdown(result: Result, meta: Record<string, string>): string {
  const lines = [
    `# ${result.name}`,
    "",
    Object.entries(meta)
      .map(([k, v]) => `${k}: ${v}`)
      .join(" · "),
    "",
    "| metric | baseline | value | ratio | unit | note |",
    "|---|---:|---:|---:|---|---|",
    ...result.rows.map(
      (r) => `| ${r.metric} | ${fmt(r.baseline)} | ${fmt(r.value)} | ${fmt(r.ratio)} | ${r.unit} | ${r.note ?? ""} |`,
    ),
    "",
  ];
  return lines.join("\n");
}

export function toTable(result: Result): string {
  const head = ["metric", "baseline", "value", "ratio", "unit"];
  const body = result.rows.map((r) => [r.metric, fmt(r.baseline), fmt(r.value), fmt(r.ratio), r.unit]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const line = (cells: string[]) =>
    cells.map((c, i) => (i === 0 || i === 4 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("  ");
  return [`${result.name}`, line(head), line(widths.map((w) => "-".repeat(w))), ...body.map(line)].join("\n");
}

export function writeResult(dir: string, result: Result, meta: Record<string, string>): void {
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, `${result.name}.json`), JSON.stringify({ ...meta, ...result }, null, 2) + "\n");
  fs.writeFileSync(path.join(dir, `${result.name}.md`), toMarkdown(result, meta));
}
