// The ai-inference-stepper 1.1.0 library API over stepper's HTTP API. A caller that imported the
// original in library mode (`import { enqueueReport, getJob } from "ai-inference-stepper"`) installs this
// package under the old name (`npm i ai-inference-stepper@npm:stepper-inference-client`), sets
// STEPPER_URL and STEPPER_API_KEY (or calls `initStepper({ baseUrl, apiKey })`) and keeps its code.
// No runtime dependencies: Node's own fetch (Node 18+).

/** The HTTP contract version this client speaks (the original's `STEPPER_HTTP_CONTRACT_VERSION`). */
export const STEPPER_HTTP_CONTRACT_VERSION = "1";

/** The commit-report preset's name, as the original spells it. */
export const COMMIT_REPORT_PRESET = "commit-report";

/** The original's provider error codes (`ProviderErrorType`), as they appear in `providersAttempted`. */
export const ProviderErrorType = Object.freeze({
  RateLimit: "RATE_LIMIT",
  Auth: "AUTH",
  Timeout: "TIMEOUT",
  Unavailable: "UPSTREAM_UNAVAILABLE",
  InvalidResponse: "INVALID_RESPONSE",
  Unknown: "UNKNOWN",
});

/** The original's deprecation plan for the commit-report entry points, unchanged. */
export const LEGACY_COMMIT_REPORT_API_DEPRECATION = Object.freeze({
  announcedIn: "v1.2.0",
  softDeprecationDate: "2026-05-15",
  removalTarget: "v2.0.0",
  replacementApis: Object.freeze({
    enqueueReport: "enqueueRequest(createCommitReportRequest(input))",
    generateReport: "generateRequest(createCommitReportRequest(input))",
    deleteReport: "delete by preset cache key helper + generic cache lifecycle",
  }),
});

const DEFAULTS = Object.freeze({
  apiKeyHeader: "x-api-key",
  requestTimeoutMs: 30_000,
  generateTimeoutMs: 120_000,
  pollIntervalMs: 500,
});

/** Stepper answered with a non-2xx status. `body` is its JSON error body (`{error, code?, message?, …}`). */
export class StepperError extends Error {
  constructor(message, status, body, retryAfterSeconds) {
    super(message);
    this.name = "StepperError";
    this.status = status;
    this.body = body;
    this.code = body && typeof body === "object" ? (body.code ?? body.errorCode) : undefined;
    this.retryAfterSeconds = retryAfterSeconds;
  }

  /** Worth sending again later (throttled, or the service briefly unavailable). */
  get retryable() {
    return [429, 502, 503, 504].includes(this.status);
  }
}

/** The client has no stepper URL (neither `initStepper({ baseUrl })` nor `STEPPER_URL`). */
export class StepperConfigurationError extends Error {
  constructor(message) {
    super(message);
    this.name = "StepperConfigurationError";
  }
}

/** A job or immediate generation that ended `failed`; `failure` is the poll's failure object when given. */
export class StepperJobFailedError extends Error {
  constructor(jobId, message, failure) {
    super(message);
    this.name = "StepperJobFailedError";
    this.jobId = jobId;
    this.failure = failure;
  }
}

// ---------------------------------------------------------------------------------------------------
// Configuration

let settings = null;
/** The effective client configuration (the original exports its live config under this name). */
export let config = null;

function env(name) {
  const value = typeof process !== "undefined" ? process.env[name] : undefined;
  return value === undefined || value.trim() === "" ? undefined : value.trim();
}

const warned = new Set();
function warnOnce(key, message) {
  if (warned.has(key)) return;
  warned.add(key);
  if (typeof process !== "undefined" && typeof process.emitWarning === "function") {
    process.emitWarning(message, { code: "STEPPER_CLIENT" });
  }
}

/**
 * Points the client at a stepper: `baseUrl` (else `STEPPER_URL`), `apiKey` (else `STEPPER_API_KEY`),
 * `apiKeyHeader` (else `STEPPER_API_KEY_HEADER`, default `x-api-key`). The original's `config` and
 * `providers` options configure a server, which this client is not: they are ignored with a warning
 * (providers live in stepper's providers file). Returns the effective configuration (never the key).
 */
export function initStepper(options = {}) {
  const opts = options ?? {};
  if (opts.providers !== undefined || opts.config !== undefined) {
    warnOnce(
      "server-options",
      "initStepper: `config` and `providers` configure the server in ai-inference-stepper; stepper's " +
        "providers and limits are set on the service (its providers file and environment), so these are ignored",
    );
  }
  const baseUrl = opts.baseUrl ?? env("STEPPER_URL");
  if (baseUrl === undefined || String(baseUrl).trim() === "") {
    throw new StepperConfigurationError(
      "No stepper URL: call initStepper({ baseUrl }) or set STEPPER_URL (for example https://abc.execute-api.eu-west-1.amazonaws.com)",
    );
  }
  let parsed;
  try {
    parsed = new URL(String(baseUrl));
  } catch {
    throw new StepperConfigurationError(`The stepper URL is not a URL: ${JSON.stringify(String(baseUrl))}`);
  }
  if (parsed.protocol !== "http:" && parsed.protocol !== "https:") {
    throw new StepperConfigurationError(`The stepper URL must be http(s), got ${parsed.protocol}`);
  }
  const positive = (name, value, fallback) => {
    if (value === undefined) return fallback;
    if (!Number.isFinite(value) || value <= 0) {
      throw new StepperConfigurationError(`${name} must be a positive number of milliseconds, got ${value}`);
    }
    return value;
  };
  settings = {
    baseUrl: String(baseUrl).replace(/\/+$/, ""),
    apiKey: opts.apiKey ?? env("STEPPER_API_KEY"),
    apiKeyHeader: opts.apiKeyHeader ?? env("STEPPER_API_KEY_HEADER") ?? DEFAULTS.apiKeyHeader,
    fetch: opts.fetch ?? globalThis.fetch,
    requestTimeoutMs: positive("requestTimeoutMs", opts.requestTimeoutMs, DEFAULTS.requestTimeoutMs),
    generateTimeoutMs: positive("generateTimeoutMs", opts.generateTimeoutMs, DEFAULTS.generateTimeoutMs),
    pollIntervalMs: positive("pollIntervalMs", opts.pollIntervalMs, DEFAULTS.pollIntervalMs),
  };
  if (typeof settings.fetch !== "function") {
    throw new StepperConfigurationError("No fetch: use Node 18 or later, or pass initStepper({ fetch })");
  }
  config = Object.freeze({
    baseUrl: settings.baseUrl,
    apiKeyHeader: settings.apiKeyHeader,
    apiKeySet: settings.apiKey !== undefined,
    contractVersion: STEPPER_HTTP_CONTRACT_VERSION,
    requestTimeoutMs: settings.requestTimeoutMs,
    generateTimeoutMs: settings.generateTimeoutMs,
    pollIntervalMs: settings.pollIntervalMs,
  });
  return config;
}

function current() {
  // Like the original, the first call initialises from the environment when initStepper was not called.
  if (settings === null) initStepper();
  return settings;
}

// ---------------------------------------------------------------------------------------------------
// HTTP

function parseRetryAfter(value) {
  if (value === null || value === undefined || value.trim() === "") return undefined;
  const seconds = Number(value);
  if (Number.isFinite(seconds)) return Math.max(0, seconds);
  const at = Date.parse(value);
  return Number.isNaN(at) ? undefined : Math.max(0, Math.ceil((at - Date.now()) / 1000));
}

async function call(method, path, body, { ok = [], timeoutMs } = {}) {
  const s = current();
  const headers = { accept: "application/json" };
  if (s.apiKey !== undefined) headers[s.apiKeyHeader] = s.apiKey;
  const init = { method, headers, signal: AbortSignal.timeout(timeoutMs ?? s.requestTimeoutMs) };
  if (body !== undefined) {
    headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await s.fetch(`${s.baseUrl}${path}`, init);
  const text = await response.text();
  let parsed;
  try {
    parsed = text === "" ? undefined : JSON.parse(text);
  } catch {
    parsed = undefined;
  }
  if (response.ok || ok.includes(response.status)) return { status: response.status, body: parsed };
  const retryAfter = parseRetryAfter(response.headers.get("retry-after"));
  const message =
    parsed && typeof parsed === "object" && typeof parsed.error === "string"
      ? parsed.message && parsed.message !== parsed.error
        ? `${parsed.error}: ${parsed.message}`
        : parsed.error
      : `stepper answered ${response.status} to ${method} ${path}`;
  throw new StepperError(message, response.status, parsed, retryAfter);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// ---------------------------------------------------------------------------------------------------
// Commit-report preset helpers (the original's names and checks, without zod)

const MAX = { userId: 128, commitSha: 64, repo: 255, message: 10_000, template: 10_000, callbackUrl: 2_048 };

function checkString(input, field, { min = 1, max, optional = false } = {}) {
  const value = input[field];
  if (value === undefined && optional) return null;
  if (typeof value !== "string") return `${field}: Expected string, received ${value === null ? "null" : typeof value}`;
  const trimmed = ["userId", "commitSha", "repo", "message"].includes(field) ? value.trim() : value;
  if (trimmed.length < min) return `${field}: String must contain at least ${min} character(s)`;
  if (max !== undefined && trimmed.length > max) return `${field}: String must contain at most ${max} character(s)`;
  return null;
}

function checkStrings(input, field, maxItems, maxLength) {
  const value = input[field];
  if (!Array.isArray(value)) return `${field}: Expected array, received ${value === null ? "null" : typeof value}`;
  if (value.length > maxItems) return `${field}: Array must contain at most ${maxItems} element(s)`;
  for (let i = 0; i < value.length; i++) {
    if (typeof value[i] !== "string") return `${field}.${i}: Expected string, received ${typeof value[i]}`;
    if (value[i].length > maxLength) return `${field}.${i}: String must contain at most ${maxLength} character(s)`;
  }
  return null;
}

/**
 * The original's commit-report input check: `{ valid: true, input }` (strings trimmed) or
 * `{ valid: false, error: "<field>: <message>" }`. Stepper checks again on its side; this only lets a
 * caller fail early, as the original did in-process. `diffSummary` length is not capped here: stepper
 * budgets a long diff instead of refusing it.
 */
export function validateCommitReportInput(input) {
  if (input === null || typeof input !== "object" || Array.isArray(input)) {
    return { valid: false, error: "request: Expected object" };
  }
  const error =
    checkString(input, "userId", { max: MAX.userId }) ??
    checkString(input, "commitSha", { max: MAX.commitSha }) ??
    checkString(input, "repo", { max: MAX.repo }) ??
    checkString(input, "message", { max: MAX.message }) ??
    checkStrings(input, "files", 2_000, 2_048) ??
    checkStrings(input, "components", 200, 256) ??
    checkString(input, "diffSummary", { min: 0 }) ??
    checkString(input, "template", { min: 0, max: MAX.template, optional: true }) ??
    checkString(input, "callbackUrl", { max: MAX.callbackUrl, optional: true }) ??
    (input.callbacks !== undefined && (!Array.isArray(input.callbacks) || input.callbacks.length > 5)
      ? "callbacks: Array must contain at most 5 element(s)"
      : null);
  if (error !== null) return { valid: false, error };
  const trimmed = { ...input };
  for (const field of ["userId", "commitSha", "repo", "message"]) trimmed[field] = input[field].trim();
  return { valid: true, input: trimmed };
}

/** The original's generic request carrying the commit-report preset (throws on invalid input). */
export function createCommitReportRequest(input) {
  const validation = validateCommitReportInput(input);
  if (!validation.valid) throw new Error(`Invalid commit report input: ${validation.error}`);
  const v = validation.input;
  return {
    requestId: `${v.userId}:${v.commitSha}`,
    prompt: { preset: COMMIT_REPORT_PRESET, template: v.template, payload: v },
    payload: v,
    responseMode: "json",
    callbacks: v.callbacks,
    metadata: { userId: v.userId, commitSha: v.commitSha, repo: v.repo },
  };
}

/** Whether a generic request carries the commit-report preset. */
export function isCommitReportRequest(request) {
  if (!request || typeof request !== "object") return false;
  return typeof request.prompt === "object" && request.prompt !== null && request.prompt.preset === COMMIT_REPORT_PRESET;
}

/** The commit input inside a preset request, or null. */
export function toCommitReportInput(request) {
  if (!isCommitReportRequest(request) || !request.payload || typeof request.payload !== "object") return null;
  const validation = validateCommitReportInput(request.payload);
  return validation.valid ? validation.input : null;
}

/** A PromptInput (the original's report path: an object with both `userId` and `commitSha`). */
function isPromptInput(value) {
  return value !== null && typeof value === "object" && "userId" in value && "commitSha" in value && !("prompt" in value);
}

// The report body stepper takes at POST /v1/reports (the original's PromptInput fields, nothing else).
function reportBody(input) {
  const body = {};
  for (const key of ["userId", "commitSha", "repo", "message", "files", "components", "diffSummary", "template", "callbackUrl", "callbacks"]) {
    if (input[key] !== undefined) body[key] = input[key];
  }
  return body;
}

/** Where a library call goes: the report routes for commit input, the generic ones otherwise. */
function route(requestOrInput) {
  if (requestOrInput === null || typeof requestOrInput !== "object" || Array.isArray(requestOrInput)) {
    throw new TypeError("Request body must be an object");
  }
  if (isPromptInput(requestOrInput)) return { report: true, body: reportBody(requestOrInput) };
  if (isCommitReportRequest(requestOrInput)) {
    const input = toCommitReportInput(requestOrInput);
    if (input === null) {
      const validation = validateCommitReportInput(requestOrInput.payload);
      throw new Error(`Invalid commit report input: ${validation.valid ? "payload" : validation.error}`);
    }
    return { report: true, body: reportBody(input) };
  }
  const schema = requestOrInput.outputSchema;
  if (schema !== null && typeof schema === "object" && (schema.kind === "zod" || schema.kind === "custom" || typeof schema.parse === "function")) {
    // zod schemas and parse functions cannot cross HTTP (the original lost them in its queue too).
    throw new TypeError("outputSchema: send the HTTP DSL ({ kind: 'http-json', … }) or a JSON Schema, not a zod schema or parse function");
  }
  return { report: false, body: requestOrInput };
}

// ---------------------------------------------------------------------------------------------------
// Lifecycle hooks

const hooks = {};

/**
 * Merges lifecycle hooks, as the original does. Stepper runs providers in its own process, so these fire
 * from what this client observes: `generateRequest`/`generateReport` results (onStart, onProviderAttempt
 * per attempt record, then onSuccess, onFallback or onFailure), the first `getJob` that sees a job finish,
 * and the callback bodies you pass to `dispatchCallback` from your webhook endpoint (the way to hear of
 * jobs you do not poll: give the request `callbacks` or `callbackUrl`). `onEnqueue` is never called, as in
 * the original.
 */
export function registerCallbacks(callbacks) {
  if (callbacks === null || typeof callbacks !== "object") throw new TypeError("registerCallbacks expects an object of hooks");
  for (const [name, fn] of Object.entries(callbacks)) {
    if (fn !== undefined && typeof fn !== "function") throw new TypeError(`registerCallbacks: ${name} must be a function`);
    hooks[name] = fn;
  }
}

async function fire(name, ...args) {
  const hook = hooks[name];
  if (typeof hook !== "function") return;
  try {
    await hook(...args);
  } catch (error) {
    warnOnce(`hook-${name}`, `stepper callback ${name} threw: ${error instanceof Error ? error.message : String(error)}`);
  }
}

async function fireOutcome(jobId, outcome) {
  for (const attempt of outcome.providersAttempted ?? []) {
    await fire("onProviderAttempt", jobId, attempt.provider, attempt.attemptNumber, attempt);
  }
  if (outcome.fallback) await fire("onFallback", jobId, outcome.result, { providersAttempted: outcome.providersAttempted ?? [] });
  else await fire("onSuccess", jobId, outcome.usedProvider, outcome.result, { timings: outcome.timings });
}

const seenFinished = new Set();
const SEEN_LIMIT = 10_000;
function firstSight(jobId) {
  if (seenFinished.has(jobId)) return false;
  if (seenFinished.size >= SEEN_LIMIT) seenFinished.delete(seenFinished.values().next().value);
  seenFinished.add(jobId);
  return true;
}

/**
 * Fires the registered hooks for one callback body stepper POSTed to your endpoint
 * (`{success, result?, error?, metadata: {jobId, provider, …}}`). Verify its signature first.
 */
export async function dispatchCallback(payload) {
  if (payload === null || typeof payload !== "object" || typeof payload.metadata !== "object" || payload.metadata === null) {
    throw new TypeError("dispatchCallback expects a stepper callback body: {success, result?, error?, metadata}");
  }
  const { metadata } = payload;
  const jobId = String(metadata.jobId);
  if (payload.success) {
    if (metadata.provider === "fallback") await fire("onFallback", jobId, payload.result, { providersAttempted: [] });
    else await fire("onSuccess", jobId, metadata.provider, payload.result, { timings: { totalMs: metadata.generationTimeMs ?? 0 } });
  } else {
    await fire("onFailure", jobId, [], { lastError: payload.error });
  }
}

// ---------------------------------------------------------------------------------------------------
// The library API

function enqueueAnswer(answer) {
  if (answer.status === 202) return { status: 202, jobId: answer.body.jobId, cached: false };
  const body = answer.body;
  const metadata = body.metadata ?? {};
  const out = {
    status: 200,
    data: body.data,
    cached: true,
    usedProvider: metadata.provider,
    fallback: Boolean(metadata.fallback),
    validated: metadata.validated ?? !metadata.fallback,
    timings: metadata.timings ?? { totalMs: 0 },
  };
  if (body.stale === true) out.stale = true;
  return out;
}

/**
 * `POST /v1/generate` (or `POST /v1/reports` for commit input): `{status: 202, jobId, cached: false}`, or
 * `{status: 200, data, cached: true, usedProvider, fallback, validated, timings}` when an identical job
 * already finished. Throws a `StepperError` with stepper's 400 text for invalid input.
 */
export async function enqueueRequest(request) {
  const { report, body } = route(request);
  try {
    return enqueueAnswer(await call("POST", report ? "/v1/reports" : "/v1/generate", body));
  } catch (error) {
    if (report && error instanceof StepperError && error.status === 400) {
      error.message = `Invalid commit report input: ${error.message}`;
    }
    throw error;
  }
}

/** @deprecated as in the original: use `enqueueRequest(createCommitReportRequest(input))`. */
export async function enqueueReport(input) {
  if (!isPromptInput(input)) throw new Error("Invalid commit report input: userId: Required");
  return enqueueRequest(input);
}

/**
 * `POST /v1/generate/batch`: up to 100 independent items as one job to poll. Resolves to
 * `{status: 202, jobId, itemCount, concurrency}`; `getJob(jobId).result` is then
 * `{items, total, completed, failed}` with the items in input order.
 */
export async function enqueueBatch(batch) {
  if (batch === null || typeof batch !== "object" || Array.isArray(batch)) {
    throw new Error("Batch items must be a non-empty array");
  }
  const { body } = await call("POST", "/v1/generate/batch", batch);
  return { status: 202, jobId: body.jobId, itemCount: body.itemCount, concurrency: body.concurrency };
}

function immediateResult(body) {
  const metadata = body.metadata ?? {};
  return {
    result: body.data,
    usedProvider: metadata.provider,
    providersAttempted: metadata.providersAttempted ?? [],
    fallback: Boolean(metadata.fallback),
    validated: metadata.validated ?? !metadata.fallback,
    timings: metadata.timings ?? { totalMs: 0 },
  };
}

/** Polls a job until it finishes or `timeoutMs` passes; returns the finished poll answer. */
async function waitFor(jobId, timeoutMs) {
  const s = current();
  const deadline = Date.now() + timeoutMs;
  let delay = s.pollIntervalMs;
  for (;;) {
    let wait = delay;
    try {
      const { body } = await call("GET", `/v1/jobs/${encodeURIComponent(jobId)}`);
      if (body.status === "completed" || body.status === "failed") return body;
      if (body.status === "delayed" && typeof body.nextAttemptAt === "string") {
        const until = Date.parse(body.nextAttemptAt) - Date.now();
        if (until > 0) wait = Math.min(until, 5_000);
      }
    } catch (error) {
      if (!(error instanceof StepperError) || !error.retryable) throw error;
      if (error.retryAfterSeconds !== undefined) wait = error.retryAfterSeconds * 1000;
    }
    if (Date.now() + wait > deadline) {
      throw new StepperJobFailedError(jobId, `Job ${jobId} did not finish within ${timeoutMs} ms`, {
        errorCode: "TIMEOUT",
        message: `did not finish within ${timeoutMs} ms`,
        retryable: true,
      });
    }
    await sleep(wait);
    delay = Math.min(delay * 2, 5_000);
  }
}

/**
 * `POST /v1/generate/immediate` (or `/v1/reports/immediate` for commit input): generates now and
 * resolves to `{result, usedProvider, providersAttempted, fallback, validated, timings}`. When stepper
 * answers 202 instead (the generation outlived its synchronous deadline, which API Gateway caps at 30 s),
 * this polls the job it names until done, within `generateTimeoutMs`. A failed generation throws a
 * `StepperJobFailedError` carrying the failure object.
 */
export async function generateRequest(request) {
  const { report, body } = route(request);
  const syncId = `sync_${report ? `${body.userId}:${body.commitSha}` : (request.requestId ?? Date.now())}`;
  await fire("onStart", syncId, request);
  let answer;
  try {
    answer = await call("POST", report ? "/v1/reports/immediate" : "/v1/generate/immediate", body, {
      timeoutMs: current().generateTimeoutMs,
    });
  } catch (error) {
    if (report && error instanceof StepperError && error.status === 400) {
      error.message = `Invalid commit report input: ${error.message}`;
    }
    if (error instanceof StepperError && error.status !== 400) await fire("onFailure", syncId, [], { lastError: error.message });
    throw error;
  }
  let outcome;
  let jobId = syncId;
  if (answer.status === 202) {
    jobId = answer.body.jobId;
    const done = await waitFor(jobId, current().generateTimeoutMs);
    if (done.status === "failed") {
      const attempts = done.data?.providersAttempted ?? done.attempts ?? [];
      await fire("onFailure", jobId, attempts, { lastError: done.error });
      throw new StepperJobFailedError(jobId, done.error ?? "generation failed", done.failure);
    }
    outcome = { ...done.data, validated: done.data.validated ?? !done.data.fallback };
  } else {
    outcome = immediateResult(answer.body);
  }
  await fireOutcome(jobId, outcome);
  return outcome;
}

/** @deprecated as in the original: use `generateRequest(createCommitReportRequest(input))`. */
export async function generateReport(input) {
  if (!isPromptInput(input)) throw new Error("Invalid commit report input: userId: Required");
  return generateRequest(input);
}

/**
 * `GET /v1/jobs/{jobId}` in BullMQ's words: `{id, state, progress, result, failedReason, data}`, or
 * `null` when stepper does not know the job (or it belongs to another key's owner). `state` is the
 * queue's own word (`waiting`, `active`, `delayed`, `completed`, `failed`); `result` is the original's job
 * return value (`{result, usedProvider, providersAttempted, fallback, validated, timings}`, or a batch's
 * `{items, total, completed, failed}`); `data` is the poll answer itself (stepper does not hand back the
 * submitted request). Unlike the original, an unreachable service throws instead of answering `null`, so
 * an outage is never mistaken for a vanished job.
 */
export async function getJob(jobId) {
  if (typeof jobId !== "string" || jobId === "") throw new TypeError("getJob expects a job id string");
  let body;
  try {
    ({ body } = await call("GET", `/v1/jobs/${encodeURIComponent(jobId)}`));
  } catch (error) {
    if (error instanceof StepperError && (error.status === 404 || error.status === 400)) return null;
    throw error;
  }
  const state = body.rawStatus ?? body.status;
  const job = { id: body.id ?? jobId, state, progress: body.progress };
  if (body.status === "completed") {
    job.result = body.data && !("items" in body.data) ? { ...body.data, validated: body.data.validated ?? !body.data.fallback } : body.data;
  }
  if (body.status === "failed") job.failedReason = body.error ?? body.failure?.message ?? "failed";
  job.data = body;
  if ((body.status === "completed" || body.status === "failed") && firstSight(job.id)) {
    if (body.status === "failed") await fire("onFailure", job.id, body.data?.providersAttempted ?? body.attempts ?? [], { lastError: job.failedReason });
    else if (job.result && !("items" in job.result)) await fireOutcome(job.id, job.result);
  }
  return job;
}

/**
 * `DELETE /v1/reports?userId=&commitSha=&template=`: forgets a commit's report once you have saved it.
 * Resolves to nothing, as in the original; a failure is reported as a process warning, not thrown.
 */
export async function deleteReport(userId, commitSha, template) {
  const query = new URLSearchParams({ userId: String(userId), commitSha: String(commitSha) });
  if (template !== undefined) query.set("template", template);
  try {
    await call("DELETE", `/v1/reports?${query}`);
  } catch (error) {
    if (typeof process !== "undefined" && typeof process.emitWarning === "function") {
      process.emitWarning(`deleteReport(${userId}, ${commitSha}) failed: ${error instanceof Error ? error.message : String(error)}`, {
        code: "STEPPER_CLIENT",
      });
    }
  }
}

/** `DELETE /v1/jobs/{jobId}` (stepper's own): forgets one job. Resolves to true when it existed. */
export async function deleteJob(jobId) {
  try {
    await call("DELETE", `/v1/jobs/${encodeURIComponent(jobId)}`);
    return true;
  } catch (error) {
    if (error instanceof StepperError && error.status === 404) return false;
    throw error;
  }
}

/**
 * The original's health body, `{status, providers: [{name, healthy, circuitOpen, retryAfterSeconds,
 * lastChecked, inferredFrom, supportsBatch, maxTokens}], timestamp}`, from `GET /v1/providers` (stepper's
 * shared provider state: a provider cooling down after a 429 or repeated failures counts as an open
 * circuit). An unhealthy service (503) resolves with its body, like the original.
 */
export async function healthcheck() {
  const { body } = await call("GET", "/v1/providers", undefined, { ok: [503] });
  const timestamp = body.timestamp ?? new Date().toISOString();
  const providers = (body.providers ?? []).map((p) => {
    const until = p.quota?.coolingDownUntil ? Date.parse(p.quota.coolingDownUntil) : NaN;
    const retryAfterSeconds = p.retryAfterSeconds ?? (Number.isFinite(until) ? Math.max(0, Math.ceil((until - Date.now()) / 1000)) : 0);
    return {
      name: p.name,
      healthy: Boolean(p.healthy),
      circuitOpen: p.circuitOpen ?? !p.healthy,
      retryAfterSeconds,
      lastChecked: p.lastChecked ?? timestamp,
      inferredFrom: "circuit_breaker",
      supportsBatch: false,
      maxTokens: p.maxTokens ?? null,
    };
  });
  return { status: body.status, providers, timestamp };
}
