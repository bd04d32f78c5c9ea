// A stepper client on Node 20's built-in fetch, with no runtime dependencies. Copy this file and
// api-types.ts (generated from stepper's /openapi.json) into your project.
import type { components } from "./api-types.js";

type Schemas = components["schemas"];
export type ReportRequest = Schemas["ReportRequest"];
export type GenerateRequest = Schemas["GenerateRequest"];
export type QueuedJob = Schemas["QueuedJob"];
export type CachedJob = Schemas["CachedJob"];
export type JobView = Schemas["JobView"];
export type Health = Schemas["Health"];
export type Liveness = Schemas["Liveness"];
export type ErrorBody = Schemas["ErrorBody"];
export type PurgedReport = Schemas["PurgedReport"];
export type PurgedJob = Schemas["PurgedJob"];
export type Redelivered = Schemas["Redelivered"];

/** A submit's answer: a job to poll (202), or an identical finished job's cached result (200). */
export type Submitted = { kind: "queued"; job: QueuedJob } | { kind: "cached"; job: CachedJob };

/** A non-2xx answer. `body` is stepper's `{error, code?, field?, message?}` when the answer was JSON. */
export class StepperError extends Error {
  constructor(
    readonly status: number,
    readonly body: ErrorBody | undefined,
    /** From `Retry-After`, when the answer had one. */
    readonly retryAfterMs: number | undefined,
  ) {
    super(`stepper answered ${status}: ${body?.error ?? "no body"}`);
    this.name = "StepperError";
  }

  /** Worth sending again later: the store or the queue was down (503), or a proxy throttled us (429). */
  get retryable(): boolean {
    return this.status === 429 || this.status === 502 || this.status === 503 || this.status === 504;
  }
}

export interface ClientOptions {
  /** `http://127.0.0.1:3005`, or the API Gateway URL. */
  baseUrl: string;
  apiKey?: string;
  /** The header that carries the key (stepper's `API_KEY_HEADER`, default `x-api-key`). */
  apiKeyHeader?: string;
  fetch?: typeof fetch;
}

export interface WaitOptions {
  /** First pause between polls; doubles (with ±20 % jitter) up to `maxDelayMs`. */
  initialDelayMs?: number;
  maxDelayMs?: number;
  /** Give up (throw) after this long. */
  timeoutMs?: number;
  signal?: AbortSignal;
  /** Sees every unfinished poll answer. */
  onPoll?: (job: JobView) => void;
}

/** `Retry-After` as milliseconds: delta-seconds or an HTTP date. */
export function parseRetryAfter(value: string | null, now: number = Date.now()): number | undefined {
  if (value === null || value.trim() === "") return undefined;
  const seconds = Number(value);
  if (Number.isFinite(seconds)) return Math.max(0, seconds * 1000);
  const at = Date.parse(value);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}

const jitter = (ms: number): number => ms * (0.8 + Math.random() * 0.4);

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

export class StepperClient {
  private readonly baseUrl: string;
  private readonly headers: Record<string, string>;
  private readonly fetch: typeof fetch;

  constructor(options: ClientOptions) {
    this.baseUrl = options.baseUrl.replace(/\/+$/, "");
    this.headers = { accept: "application/json" };
    if (options.apiKey !== undefined) this.headers[options.apiKeyHeader ?? "x-api-key"] = options.apiKey;
    this.fetch = options.fetch ?? globalThis.fetch;
  }

  /** `POST /v1/reports`: a commit report. Identical submits meet on one job. */
  async submitReport(body: ReportRequest): Promise<Submitted> {
    return this.submit("/v1/reports", body);
  }

  /** `POST /v1/generate`: a generic prompt job. */
  async submitGenerate(body: GenerateRequest): Promise<Submitted> {
    return this.submit("/v1/generate", body);
  }

  /** One poll of a submit's `statusUrl` (or `/v1/jobs/<jobId>`). */
  async getJob(statusUrl: string): Promise<JobView> {
    return (await this.request<JobView>("GET", statusUrl)).body;
  }

  /**
   * Polls until the job is `completed` or `failed`. Waits as the service says: until `nextAttemptAt`
   * while a job is `delayed`, `Retry-After` when the service is briefly unavailable, and otherwise an
   * exponential back-off. Other errors (401, 404) are thrown at once.
   */
  async waitForJob(statusUrl: string, options: WaitOptions = {}): Promise<JobView> {
    const { initialDelayMs = 1_000, maxDelayMs = 30_000, timeoutMs = 15 * 60_000, signal, onPoll } = options;
    const deadline = Date.now() + timeoutMs;
    let backoff = initialDelayMs;
    for (;;) {
      let wait: number;
      try {
        const job = await this.getJob(statusUrl);
        if (job.status === "completed" || job.status === "failed") return job;
        onPoll?.(job);
        const until = job.nextAttemptAt === undefined ? NaN : Date.parse(job.nextAttemptAt) - Date.now();
        wait = job.rawStatus === "delayed" && until > 0 ? Math.min(until, maxDelayMs) : jitter(backoff);
      } catch (error) {
        if (!(error instanceof StepperError) || !error.retryable) throw error;
        wait = error.retryAfterMs ?? jitter(backoff);
      }
      backoff = Math.min(backoff * 2, maxDelayMs);
      if (Date.now() + wait > deadline) throw new Error(`job at ${statusUrl} did not finish within ${timeoutMs} ms`);
      await sleep(wait, signal);
    }
  }

  /**
   * `POST /v1/jobs/<jobId>/deliveries/redeliver`: send a finished job's dead (or still retrying) webhook
   * and callbacks again now, with the same `webhook-id` and a fresh timestamp. A `409` (nothing to
   * redeliver, or the job changed meanwhile) is thrown as a `StepperError`.
   */
  async redeliver(jobId: string): Promise<Redelivered> {
    const path = `/v1/jobs/${encodeURIComponent(jobId)}/deliveries/redeliver`;
    return (await this.request<Redelivered>("POST", path)).body;
  }

  /** `DELETE /v1/reports`: forget a commit's report once you have saved it. */
  async purgeReport(userId: string, commitSha: string, template?: string): Promise<PurgedReport> {
    const query = new URLSearchParams({ userId, commitSha });
    if (template !== undefined) query.set("template", template);
    return (await this.request<PurgedReport>("DELETE", `/v1/reports?${query}`)).body;
  }

  /** `DELETE /v1/jobs/<jobId>`: forget a job. */
  async purgeJob(jobId: string): Promise<PurgedJob> {
    return (await this.request<PurgedJob>("DELETE", `/v1/jobs/${encodeURIComponent(jobId)}`)).body;
  }

  /** `GET /health`: no key needed; up and the store reachable. An unhealthy instance answers 503 with the
   * same body, returned here. No provider detail: that is `providers()`. */
  async health(): Promise<Liveness> {
    return (await this.request<Liveness>("GET", "/health", undefined, [503])).body;
  }

  /** `GET /v1/providers`: health plus each provider's shared quota state. */
  async providers(): Promise<Health> {
    return (await this.request<Health>("GET", "/v1/providers")).body;
  }

  private async submit(path: string, body: ReportRequest | GenerateRequest): Promise<Submitted> {
    const answer = await this.request<QueuedJob | CachedJob>("POST", path, body);
    return answer.status === 202
      ? { kind: "queued", job: answer.body as QueuedJob }
      : { kind: "cached", job: answer.body as CachedJob };
  }

  private async request<T>(
    method: string,
    path: string,
    body?: unknown,
    alsoOk: number[] = [],
  ): Promise<{ status: number; body: T }> {
    const headers = body === undefined ? this.headers : { ...this.headers, "content-type": "application/json" };
    const init: RequestInit = { method, headers };
    if (body !== undefined) init.body = JSON.stringify(body);
    const response = await this.fetch(`${this.baseUrl}${path}`, init);
    const text = await response.text();
    let parsed: unknown;
    try {
      parsed = text === "" ? undefined : JSON.parse(text);
    } catch {
      parsed = undefined;
    }
    if (response.ok || alsoOk.includes(response.status)) {
      return { status: response.status, body: parsed as T };
    }
    const error = typeof parsed === "object" && parsed !== null && "error" in parsed ? (parsed as ErrorBody) : undefined;
    throw new StepperError(response.status, error, parseRetryAfter(response.headers.get("retry-after")));
  }
}
