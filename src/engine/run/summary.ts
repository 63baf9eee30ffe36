/**
 * A turn's summary as stored: the run and turn records keep at most MAX_SUMMARY_BYTES of it,
 * so records stay small (every read of a run parses its record); the whole text of the
 * run's last summary goes to the store's summary file, served by `getRun(..., {fullSummary})`.
 */
import { boundText } from "../events/bound.ts";
import type { RunStore } from "../store/store.ts";
import type { RunRecord } from "./schema.ts";

/** Most UTF-8 bytes of a summary in store.json and in run views. */
export const MAX_SUMMARY_BYTES = 16 * 1024;

/** A summary cut to the bound. */
export const boundSummary = (text: string): string => boundText(text, MAX_SUMMARY_BYTES).text;

/** The run's fields for a new summary, the whole text stored aside when it does not fit. */
export async function storeSummary(
  store: Pick<RunStore, "putSummary">,
  runId: string,
  text: string,
): Promise<Pick<RunRecord, "summary" | "summaryTruncated">> {
  const bounded = boundText(text, MAX_SUMMARY_BYTES);
  if (bounded.cut) await store.putSummary(runId, text);
  return { summary: bounded.text, summaryTruncated: bounded.cut > 0 };
}
