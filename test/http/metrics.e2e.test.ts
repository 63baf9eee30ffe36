/**
 * `/metrics`: the Prometheus text after a real run (real OpenCode, the scripted model) counts
 * it; the route wants an admin key (401 without one, 403 with another scope); the listener
 * PATCHBAY_METRICS_ADDR asks for serves the same text without a key; and each Patchbay has a
 * registry of its own.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createMetrics } from "../../src/engine/metrics/metrics.ts";
import { metricsListener } from "../../src/http/metrics.ts";
import { LOADED } from "../support/harness.ts";
import { API, listen, serveHarness, type HttpHarness } from "../support/http.ts";

const MODEL = "test/metrics";
let h: HttpHarness;
let base: string;

beforeAll(async () => {
  h = await serveHarness();
  h.model.script(MODEL, [
    [
      {
        toolCalls: [{ name: "write", args: { filePath: "m.txt", content: "m\n" } }],
        usage: { prompt_tokens: 1200, completion_tokens: 34, cost: 0.0021 },
      },
      { text: "Metered.", usage: { prompt_tokens: 1300, completion_tokens: 5, cost: 0.001 } },
    ],
  ]);
  base = await h.extraApp({}, { metrics: h.pb.metrics });
}, LOADED.hookMs);

afterAll(async () => {
  await h?.close();
}, LOADED.hookMs);

/** The value of one sample line (`name{labels} value`), or undefined. */
function sample(text: string, line: RegExp): number | undefined {
  const m = new RegExp(`^${line.source} (\\S+)$`, "m").exec(text);
  return m ? Number(m[1]) : undefined;
}

describe("/metrics", { timeout: LOADED.testMs }, () => {
  it("counts a run, its turn, its tokens and cost by model, and its SSE subscriber", async () => {
    const created = await h.api("POST", `${base}${API}/runs`, {
      body: { repository: "acme/web", prompt: "Write m.txt", modelId: MODEL },
    });
    expect(created.status).toBe(201);
    const id = created.json.id;
    // A stream open while the turn runs is one subscriber.
    const stream = h.sse(`${API}/runs/${id}/stream`, {
      until: (frames) => frames.some((f) => f.event === "run.status" && /"status":"idle"/.test(f.data ?? "")),
    });
    await h.turnOver(id);
    await stream;
    await h.api("POST", `${base}${API}/runs/${id}/messages`, { body: { endSession: true } });

    const res = await h.api("GET", `${base}/metrics`, { key: h.keys.admin });
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toMatch(/^text\/plain; version=0\.0\.4/);
    const text = res.text;
    expect(sample(text, /patchbay_run_status_changes_total\{status="idle"\}/)).toBeGreaterThanOrEqual(1);
    expect(sample(text, /patchbay_run_status_changes_total\{status="completed"\}/)).toBeGreaterThanOrEqual(1);
    expect(sample(text, /patchbay_turn_duration_seconds_count\{outcome="idle"\}/)).toBeGreaterThanOrEqual(1);
    expect(sample(text, /patchbay_turn_startup_seconds_count/)).toBeGreaterThanOrEqual(1);
    expect(sample(text, /patchbay_model_tokens_total\{model="test\/metrics",direction="input"\}/)).toBe(2500);
    expect(sample(text, /patchbay_model_tokens_total\{model="test\/metrics",direction="output"\}/)).toBe(39);
    expect(sample(text, /patchbay_model_cost_usd_total\{model="test\/metrics"\}/)).toBeCloseTo(0.0031, 6);
    expect(sample(text, /patchbay_runs\{status="idle"\}/)).toBe(0);
    expect(sample(text, /patchbay_sse_subscribers/)).toBe(0);
    // Seams that read what exists here: no hibernation yet, a cold harness without a pool.
    expect(sample(text, /patchbay_sessions_hibernated/)).toBe(0);
    expect(sample(text, /patchbay_warm_pool_size/)).toBe(0);
    expect(text).toContain("# TYPE patchbay_gateway_upstream_errors_total counter");
    expect(text).toContain("# TYPE patchbay_webhook_deliveries_total counter");
    expect(text).toContain("# TYPE patchbay_sessions_active gauge");
  });

  it("answers 401 without a key and 403 without the admin scope", async () => {
    expect((await h.api("GET", `${base}/metrics`, { key: null })).status).toBe(401);
    const forbidden = await h.api("GET", `${base}/metrics`, { key: h.keys.rw });
    expect(forbidden.status).toBe(403);
    expect(forbidden.json.error.code).toBeTruthy();
    // The app without metrics has no such route.
    expect((await h.api("GET", `${h.base}/metrics`, { key: h.keys.admin })).status).toBe(404);
  });

  it("serves the same text without a key on the PATCHBAY_METRICS_ADDR listener, and nothing else", async () => {
    const server = await listen(metricsListener(h.pb.metrics));
    try {
      const res = await fetch(`${server.base}/metrics`);
      expect(res.status).toBe(200);
      expect(await res.text()).toContain("patchbay_run_status_changes_total");
      expect((await fetch(`${server.base}/api/v1/coding-agent/runs`)).status).toBe(404);
    } finally {
      await server.close();
    }
  });

  it("keeps each instance's counts in a registry of its own", async () => {
    const a = createMetrics();
    const b = createMetrics();
    a.statusChanged("idle");
    expect(await a.render()).toMatch(/^patchbay_run_status_changes_total\{status="idle"\} 1$/m);
    expect(await b.render()).not.toMatch(/status_changes_total\{status="idle"\}/);
  });
});
