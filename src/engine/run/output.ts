/**
 * Structured output: a turn whose answer must be a JSON value valid against `outputSchema`.
 * The model is asked with an instruction appended to the prompt (one JSON value in a fenced
 * block), the answer is taken from its final text (the last fenced block, else the whole
 * text), checked with ajv, and an invalid answer gets one repair turn quoting the errors.
 * Why an instruction and not a tool: docs/ARCHITECTURE.md, bench/results/structured-output.md.
 */
import { Worker } from "node:worker_threads";
import { Ajv, type ErrorObject } from "ajv";
import { Ajv2020 } from "ajv/dist/2020.js";
import * as addFormatsModule from "ajv-formats";
import type { TurnOutcome } from "../agent/agent.ts";
import { EngineError } from "../errors.ts";
import type { BuilderEventData } from "../events/schema.ts";
import { MAX_OUTPUT_SCHEMA_BYTES, type OutputSchema } from "./schema.ts";

// ajv-formats is CommonJS: under NodeNext its default export arrives as `default` of the namespace.
const addFormats = addFormatsModule.default as unknown as (ajv: Ajv | Ajv2020) => unknown;

/** Messages quoted to the model and stored in `outputError` are cut at this many. */
const MAX_ERRORS = 20;
/** Longest an answer's check may take (a worker thread, ended at the deadline). */
const CHECK_TIMEOUT_MS = 10_000;
// strict off: schemas written for other tools carry keywords ajv does not know (x-*, examples).
const AJV_OPTIONS = { allErrors: true, strict: false, validateFormats: true } as const;
const CHECKER = new URL("./output-check.mjs", import.meta.url);

/** A compiled output schema: `check` answers the value or the validator's messages. */
export interface OutputValidator {
  check(value: unknown): Promise<{ ok: true } | { ok: false; errors: string[] }>;
}

/** What a turn's answer came to: the value, or null and why. */
export type OutputResult = { output: unknown; outputError: null } | { output: null; outputError: string[] };

/** Compiles output schemas: one validator instance per draft, made on first use. */
export interface OutputSchemas {
  /**
   * Compile `schema`, or throw invalid_output_schema (over 64 KB, not a schema ajv accepts,
   * an unresolvable `$ref`).
   */
  compile(schema: OutputSchema): OutputValidator;
}

/**
 * A new ajv per schema costs about 50 ms (its meta-schemas and formats compile again), so the
 * instances are kept, and each schema is removed from ajv's cache once compiled (runs bring
 * schemas of their own; the cache would grow with every one).
 */
export function createOutputSchemas(): OutputSchemas {
  const instances: { draft7?: Ajv; draft2020?: Ajv2020 } = {};
  const options = AJV_OPTIONS;
  const instance = (draft2020: boolean): Ajv | Ajv2020 => {
    if (draft2020) return (instances.draft2020 ??= withFormats(new Ajv2020(options)));
    return (instances.draft7 ??= withFormats(new Ajv(options)));
  };
  return {
    compile(schema) {
      const bytes = Buffer.byteLength(JSON.stringify(schema));
      if (bytes > MAX_OUTPUT_SCHEMA_BYTES)
        throw new EngineError(
          "invalid_output_schema",
          `outputSchema is ${bytes} bytes; at most ${MAX_OUTPUT_SCHEMA_BYTES}`,
        );
      const draft2020 = typeof schema.$schema === "string" && schema.$schema.includes("2020-12");
      const ajv = instance(draft2020);
      try {
        ajv.compile(schema);
      } catch (e) {
        throw new EngineError(
          "invalid_output_schema",
          `outputSchema is not a valid JSON Schema: ${(e as Error).message}`,
        );
      } finally {
        // By object and by its $id, so the next schema with the same $id compiles too.
        ajv.removeSchema(schema);
      }
      return { check: (value) => checkInWorker(schema, value, draft2020) };
    },
  };
}

function withFormats<A extends Ajv | Ajv2020>(ajv: A): A {
  addFormats(ajv);
  return ajv;
}

/**
 * Check `value` in a worker thread: ajv runs a schema's `pattern` keywords as JavaScript
 * regular expressions, and a catastrophic one (`^(a+)+$` on a long answer) would stall the
 * event loop of every run; the worker is ended at the deadline instead (~0.3 s a check).
 */
function checkInWorker(
  schema: OutputSchema,
  value: unknown,
  draft2020: boolean,
): Promise<{ ok: true } | { ok: false; errors: string[] }> {
  return new Promise((resolve) => {
    const worker = new Worker(CHECKER, { workerData: { schema, value, draft2020, options: AJV_OPTIONS } });
    const done = (r: { ok: true } | { ok: false; errors: string[] }) => {
      clearTimeout(timer);
      void worker.terminate();
      resolve(r);
    };
    const timer = setTimeout(
      () =>
        done({
          ok: false,
          errors: [`checking the answer took over ${CHECK_TIMEOUT_MS} ms (a pattern that backtracks?)`],
        }),
      CHECK_TIMEOUT_MS,
    );
    worker.once("message", (m: { ok: boolean; errors: ErrorObject[] }) =>
      done(m.ok ? { ok: true } : { ok: false, errors: describeErrors(m.errors) }),
    );
    worker.once("error", (e) => done({ ok: false, errors: [`the answer could not be checked: ${e.message}`] }));
    worker.once("exit", () => done({ ok: false, errors: ["the answer could not be checked"] }));
  });
}

function describeErrors(errors: ErrorObject[]): string[] {
  const lines = errors.slice(0, MAX_ERRORS).map((e) => {
    const extra = e.keyword === "additionalProperties" ? ` (${String(e.params.additionalProperty)})` : "";
    return `${e.instancePath || "/"} ${e.message ?? e.keyword}${extra}`;
  });
  if (errors.length > MAX_ERRORS) lines.push(`… and ${errors.length - MAX_ERRORS} more`);
  return lines;
}

/** The text appended to a turn's prompt when the turn has an output schema. */
export function outputInstruction(schema: OutputSchema): string {
  return [
    "When you are done, end your final message with your answer as a single JSON value in one fenced ```json block, valid against this JSON Schema:",
    "```json",
    JSON.stringify(schema),
    "```",
  ].join("\n");
}

/** The follow-up prompt of the one repair turn: what the validator said. */
export function repairPrompt(problem: string[]): string {
  return [
    "Your answer is not valid against the JSON Schema you were given:",
    ...problem.map((p) => `- ${p}`),
    "Answer again with only the corrected JSON value in one fenced ```json block.",
  ].join("\n");
}

const FENCE = /```[ \t]*(?:json[c5]?)?[ \t]*\r?\n([\s\S]*?)\r?\n?```/gi;

/**
 * The JSON value in a final answer: the last fenced block (```json or plain ```), else the
 * whole text; a problem when neither parses.
 */
export function extractJson(text: string): { ok: true; value: unknown } | { ok: false; errors: string[] } {
  const blocks = [...text.matchAll(FENCE)].map((m) => m[1]!);
  const candidate = blocks.at(-1) ?? text;
  if (!candidate.trim()) return { ok: false, errors: ["the answer holds no JSON value"] };
  try {
    return { ok: true, value: JSON.parse(candidate) };
  } catch (e) {
    const where = blocks.length ? "the last fenced block" : "the answer";
    return { ok: false, errors: [`${where} is not valid JSON: ${(e as Error).message}`] };
  }
}

/** Check a final answer against a compiled schema. */
export async function readOutput(validator: OutputValidator, text: string): Promise<OutputResult> {
  const parsed = extractJson(text);
  if (!parsed.ok) return { output: null, outputError: parsed.errors };
  const checked = await validator.check(parsed.value);
  return checked.ok ? { output: parsed.value, outputError: null } : { output: null, outputError: checked.errors };
}

/**
 * A turn's structured answer: the first answer checked, and when it is invalid one repair turn
 * (`repair`, in the same session) checked again. Returns the last outcome and what it came to.
 */
export async function settleOutput(
  validator: OutputValidator,
  first: TurnOutcome,
  repair: (prompt: string) => Promise<TurnOutcome>,
  note: (data: BuilderEventData) => void,
): Promise<{ outcome: TurnOutcome; result: OutputResult }> {
  const failed = (o: TurnOutcome): OutputResult => ({
    output: null,
    outputError: [`the turn ended with ${o.error!.code} before a valid answer`],
  });
  if (first.error) return { outcome: first, result: failed(first) };
  const result = await readOutput(validator, first.summary);
  if (result.outputError === null) return { outcome: first, result };
  note({
    kind: "log",
    message: `the answer does not match outputSchema; one repair turn: ${result.outputError.join("; ")}`,
  });
  const again = await repair(repairPrompt(result.outputError));
  if (again.error) return { outcome: again, result: failed(again) };
  const second = await readOutput(validator, again.summary);
  note({
    kind: "log",
    message:
      second.outputError === null
        ? "the repaired answer matches outputSchema"
        : `the answer is still invalid: ${second.outputError.join("; ")}`,
  });
  return { outcome: again, result: second };
}
