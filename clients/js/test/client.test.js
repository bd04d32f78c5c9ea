// Caller-style tests of the drop-in client against a real stepper-local (started by
// local/tests/js_client.rs, which passes its URL and a key in the environment) and a fake
// OpenAI-compatible provider that answers every prompt with a valid commit report.
//
//   STEPPER_URL=http://127.0.0.1:PORT STEPPER_API_KEY=alice-key node --test clients/js/test/
//
// Routes this stepper does not serve yet (read from its /openapi.json) skip with the reason printed.
import { test } from "node:test";
import assert from "node:assert/strict";

import * as stepper from "../src/index.js";

const BASE = process.env.STEPPER_URL;
if (BASE === undefined) {
  throw new Error("STEPPER_URL is not set: run these tests through `cargo test -p stepper-local --test js_client`");
}

const openapi = await (await fetch(`${BASE}/openapi.json`)).json();
const served = (method, path) => Boolean(openapi.paths?.[path]?.[method]);
const unless = (method, path) =>
  served(method, path) ? false : `stepper at ${BASE} does not serve ${method.toUpperCase()} ${path} yet (not in its /openapi.json)`;

let counter = 0;
const unique = (prefix) => `${prefix}-${process.pid}-${Date.now()}-${++counter}`;

function commit(sha) {
  return {
    userId: "user-1",
    commitSha: sha,
    repo: "acme/diary",
    message: "Add token refresh to the auth client",
    files: ["src/auth.ts", "src/client.ts"],
    components: ["auth"],
    diffSummary: "diff --git a/src/auth.ts b/src/auth.ts\n+export function refresh() {}\n",
  };
}

/** The caller's poll loop: getJob until completed or failed. */
async function pollToEnd(jobId, withinMs = 20_000) {
  const deadline = Date.now() + withinMs;
  for (;;) {
    const job = await stepper.getJob(jobId);
    assert.notEqual(job, null, `job ${jobId} vanished while polling`);
    if (job.state === "completed" || job.state === "failed") return job;
    assert.ok(["waiting", "active", "delayed", "prioritized"].includes(job.state), `unexpected state ${job.state}`);
    assert.ok(Date.now() < deadline, `job ${jobId} not finished in ${withinMs} ms: ${JSON.stringify(job)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

test("calls before initStepper read STEPPER_URL and STEPPER_API_KEY, like the original reads its env", async () => {
  const health = await stepper.healthcheck();
  assert.ok(["healthy", "degraded", "unhealthy"].includes(health.status));
  assert.ok(stepper.config !== null, "the first call initialised the client");
  assert.equal(stepper.config.baseUrl, BASE.replace(/\/+$/, ""));
  assert.equal(stepper.config.apiKeySet, true);
  assert.equal(JSON.stringify(stepper.config).includes(process.env.STEPPER_API_KEY), false, "config never shows the key");
});

test("initStepper validates its options and never needs the server's provider options", () => {
  assert.throws(() => stepper.initStepper({ baseUrl: "ftp://x" }), stepper.StepperConfigurationError);
  assert.throws(() => stepper.initStepper({ baseUrl: "not a url" }), /not a URL/);
  assert.throws(() => stepper.initStepper({ baseUrl: BASE, generateTimeoutMs: -1 }), /positive/);
  const effective = stepper.initStepper({ baseUrl: `${BASE}/`, apiKey: process.env.STEPPER_API_KEY, providers: [] });
  assert.equal(effective.baseUrl, BASE.replace(/\/+$/, ""));
  assert.equal(effective.contractVersion, stepper.STEPPER_HTTP_CONTRACT_VERSION);
});

test("enqueueReport, then getJob until completed, as the CommitDiary caller does; deleteReport forgets it", async () => {
  stepper.initStepper({ baseUrl: BASE, apiKey: process.env.STEPPER_API_KEY });
  const input = commit(unique("sha"));
  const queued = await stepper.enqueueReport(input);
  assert.equal(queued.status, 202);
  assert.equal(queued.cached, false);
  assert.equal(typeof queued.jobId, "string");

  const job = await pollToEnd(queued.jobId);
  assert.equal(job.state, "completed", JSON.stringify(job));
  assert.equal(job.id, queued.jobId);
  assert.equal(job.progress, 100);
  assert.equal(job.failedReason, undefined);
  // BullMQ's returnvalue shape: the original's worker result.
  assert.equal(job.result.usedProvider, "alpha");
  assert.equal(job.result.fallback, false);
  assert.equal(job.result.validated, true);
  assert.equal(job.result.result.title, "Add token refresh to the auth client");
  assert.ok(Array.isArray(job.result.providersAttempted) && job.result.providersAttempted[0].provider === "alpha");
  assert.equal(typeof job.result.timings.totalMs, "number");

  // An identical submit now answers from the finished job: 200 cached, the original's enqueue shape.
  const cached = await stepper.enqueueRequest(input);
  assert.equal(cached.status, 200);
  assert.equal(cached.cached, true);
  assert.equal(cached.usedProvider, "alpha");
  assert.equal(cached.data.title, "Add token refresh to the auth client");

  // Saved on the caller's side: forget it. The next identical submit queues a new job.
  await stepper.deleteReport(input.userId, input.commitSha);
  const again = await stepper.enqueueReport(input);
  assert.equal(again.status, 202, JSON.stringify(again));
  assert.equal((await pollToEnd(again.jobId)).state, "completed");
});

test("enqueueRequest(createCommitReportRequest(input)), the original's replacement API, takes the report route", async () => {
  const request = stepper.createCommitReportRequest(commit(unique("sha")));
  assert.ok(stepper.isCommitReportRequest(request));
  assert.equal(request.requestId.startsWith("user-1:"), true);
  const queued = await stepper.enqueueRequest(request);
  assert.equal(queued.status, 202);
  const job = await pollToEnd(queued.jobId);
  assert.equal(job.result.result.tags, "auth, client");
});

test("outputSchema crosses HTTP as the DSL or a JSON Schema, and the job honours it", async () => {
  const dsl = await stepper.enqueueRequest({
    prompt: `Describe ${unique("schema")} as JSON`,
    outputSchema: { kind: "http-json", requiredKeys: ["title"], properties: { title: { type: "string" } } },
  });
  assert.equal(dsl.status, 202);
  const done = await pollToEnd(dsl.jobId);
  assert.equal(done.state, "completed", JSON.stringify(done));
  assert.equal(typeof done.result.result.title, "string");
  const jsonSchema = await stepper.enqueueRequest({
    prompt: `Describe ${unique("schema")} as JSON`,
    outputSchema: { type: "object", required: ["summary"], properties: { summary: { type: "string" } } },
  });
  assert.equal((await pollToEnd(jsonSchema.jobId)).state, "completed");
});

test("a generic request: enqueue, poll, purge by id", async () => {
  const queued = await stepper.enqueueRequest({
    prompt: { template: "Summarise {{payload.topic}} as JSON", instructions: "Be brief." },
    payload: { topic: unique("topic") },
    responseMode: "json",
  });
  assert.equal(queued.status, 202);
  const job = await pollToEnd(queued.jobId);
  assert.equal(job.state, "completed");
  assert.equal(typeof job.result.result, "object");
  assert.equal(await stepper.deleteJob(queued.jobId), true);
  assert.equal(await stepper.getJob(queued.jobId), null, "a purged job is gone: null, as the original answers");
  assert.equal(await stepper.deleteJob(queued.jobId), false);
});

test("bad input throws with stepper's 400 text; unknown ids give null", async () => {
  await assert.rejects(
    stepper.enqueueReport({ ...commit(unique("sha")), userId: "" }),
    (error) => error instanceof stepper.StepperError && error.status === 400 && /^Invalid commit report input: userId/.test(error.message),
  );
  await assert.rejects(
    stepper.enqueueRequest({ payload: {} }),
    (error) => error instanceof stepper.StepperError && error.status === 400 && /prompt/.test(error.message),
  );
  assert.throws(() => stepper.createCommitReportRequest({ ...commit("x"), repo: 7 }), /Invalid commit report input: repo/);
  await assert.rejects(stepper.enqueueRequest({ prompt: "x", outputSchema: { kind: "zod" } }), /http-json/);
  await assert.rejects(stepper.enqueueRequest({ prompt: "x", outputSchema: { kind: "custom", parse: (v) => v } }), /parse function/);
  assert.equal(await stepper.getJob("no-such-job-0000"), null);
});

test("a wrong key is an error, not a missing job", async () => {
  stepper.initStepper({ baseUrl: BASE, apiKey: "not-a-key" });
  try {
    await assert.rejects(stepper.getJob("anything"), (e) => e instanceof stepper.StepperError && e.status === 401);
  } finally {
    stepper.initStepper({ baseUrl: BASE, apiKey: process.env.STEPPER_API_KEY });
  }
});

test("healthcheck has the original's provider fields", async () => {
  const health = await stepper.healthcheck();
  assert.equal(health.status, "healthy");
  const alpha = health.providers.find((p) => p.name === "alpha");
  assert.ok(alpha, JSON.stringify(health));
  assert.equal(alpha.healthy, true);
  assert.equal(alpha.circuitOpen, false);
  assert.equal(alpha.retryAfterSeconds, 0);
  assert.equal(alpha.inferredFrom, "circuit_breaker");
  assert.equal(alpha.supportsBatch, false);
  assert.ok(!Number.isNaN(Date.parse(alpha.lastChecked)));
});

test("registered hooks hear a job the client sees finish, once; dispatchCallback feeds webhook bodies to them", async () => {
  const heard = [];
  stepper.registerCallbacks({
    onSuccess: (jobId, provider) => heard.push(["success", jobId, provider]),
    onFallback: (jobId) => heard.push(["fallback", jobId]),
    onFailure: (jobId, _errors, meta) => heard.push(["failure", jobId, meta.lastError]),
  });
  try {
    const queued = await stepper.enqueueReport(commit(unique("sha")));
    await pollToEnd(queued.jobId);
    await stepper.getJob(queued.jobId);
    assert.deepEqual(heard, [["success", queued.jobId, "alpha"]]);
    await stepper.dispatchCallback({ success: false, error: "no provider", metadata: { jobId: "j1", provider: null, timestamp: new Date().toISOString() } });
    assert.deepEqual(heard.at(-1), ["failure", "j1", "no provider"]);
  } finally {
    stepper.registerCallbacks({ onSuccess: undefined, onFallback: undefined, onFailure: undefined });
  }
});

test("enqueueBatch: one job, per-item results in input order", { skip: unless("post", "/v1/generate/batch") }, async () => {
  const tag = unique("batch");
  const batch = await stepper.enqueueBatch({
    requestId: tag,
    concurrency: 2,
    items: ["a", "b", "c"].map((id) => ({ id, request: { prompt: `Describe ${id} for ${tag} as JSON`, responseMode: "json" } })),
  });
  assert.equal(batch.status, 202);
  assert.equal(batch.itemCount, 3);
  assert.equal(batch.concurrency, 2);
  const job = await pollToEnd(batch.jobId, 30_000);
  assert.equal(job.state, "completed", JSON.stringify(job));
  assert.deepEqual(job.result.items.map((i) => [i.id, i.index]), [["a", 0], ["b", 1], ["c", 2]]);
  assert.equal(job.result.total, 3);
  assert.equal(job.result.completed + job.result.failed, 3);
  await assert.rejects(stepper.enqueueBatch({ items: [] }), /items: must be a non-empty array/);
});

test("generateRequest: synchronous generation", { skip: unless("post", "/v1/generate/immediate") }, async () => {
  const out = await stepper.generateRequest({ prompt: `Describe ${unique("thing")} as JSON`, responseMode: "json" });
  assert.equal(out.usedProvider, "alpha");
  assert.equal(out.fallback, false);
  assert.equal(out.validated, true);
  assert.equal(typeof out.result, "object");
  assert.ok(out.providersAttempted.length >= 1);
  assert.equal(typeof out.timings.totalMs, "number");
});

test("generateReport: a commit report, synchronously", { skip: unless("post", "/v1/reports/immediate") }, async () => {
  const out = await stepper.generateReport(commit(unique("sha")));
  assert.equal(out.usedProvider, "alpha");
  assert.equal(out.result.title, "Add token refresh to the auth client");
});
