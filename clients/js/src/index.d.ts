// Types of the ai-inference-stepper 1.1.0 library API, as this client serves it over stepper's HTTP API.
// Names and shapes follow the original's index.d.ts and types.d.ts so TypeScript callers compile unchanged.

export declare const STEPPER_HTTP_CONTRACT_VERSION: "1";
export declare const COMMIT_REPORT_PRESET: "commit-report";

export declare const ProviderErrorType: {
  readonly RateLimit: "RATE_LIMIT";
  readonly Auth: "AUTH";
  readonly Timeout: "TIMEOUT";
  readonly Unavailable: "UPSTREAM_UNAVAILABLE";
  readonly InvalidResponse: "INVALID_RESPONSE";
  readonly Unknown: "UNKNOWN";
};
export type ProviderErrorType = (typeof ProviderErrorType)[keyof typeof ProviderErrorType];

export declare const LEGACY_COMMIT_REPORT_API_DEPRECATION: {
  readonly announcedIn: "v1.2.0";
  readonly softDeprecationDate: "2026-05-15";
  readonly removalTarget: "v2.0.0";
  readonly replacementApis: {
    readonly enqueueReport: string;
    readonly generateReport: string;
    readonly deleteReport: string;
  };
};

export interface WebhookCallback {
  url: string;
  headers?: Record<string, string>;
  continueOnFailure?: boolean;
  retry?: { maxAttempts: number; backoffMs: number };
}

export type StepperResponseMode = "json" | "text";
export type StepperCacheControl = "default" | "no-cache" | "refresh";

export interface PromptBuilderInput<TPayload = unknown> {
  preset?: string;
  template?: string;
  instructions?: string;
  payload?: TPayload;
  variables?: Record<string, unknown>;
}
export type StepperPrompt<TPayload = unknown> = string | PromptBuilderInput<TPayload>;

export type HttpSchemaType = "string" | "number" | "boolean" | "array" | "object";
export interface HttpSchemaNode {
  type: HttpSchemaType;
  requiredKeys?: string[];
  properties?: Record<string, HttpSchemaNode>;
  items?: HttpSchemaNode;
  minItems?: number;
  maxItems?: number;
  allowAdditionalKeys?: boolean;
}
/** The original's HTTP DSL; zod schemas and parse functions cannot cross HTTP. */
export interface StepperOutputSchema<TOutput = unknown> {
  kind: "http-json";
  requiredKeys?: string[];
  properties?: Record<string, HttpSchemaNode>;
  allowAdditionalKeys?: boolean;
  /** Phantom: the output type this schema describes. */
  readonly __output?: TOutput;
}

export interface StepperRequest<TPayload = unknown, TOutput = unknown> {
  tenantId?: string;
  requestId?: string;
  cacheKey?: string;
  prompt: StepperPrompt<TPayload>;
  payload?: TPayload;
  /** The HTTP DSL, or a JSON Schema object (stepper takes both). */
  outputSchema?: StepperOutputSchema<TOutput> | Record<string, unknown>;
  responseMode?: StepperResponseMode;
  contractVersion?: string;
  cacheControl?: StepperCacheControl;
  preferredProviders?: string[];
  excludeProviders?: string[];
  callbacks?: WebhookCallback[];
  metadata?: Record<string, unknown>;
}

export interface StepperBatchItem<TPayload = unknown, TOutput = unknown> {
  id: string;
  request: StepperRequest<TPayload, TOutput>;
}
export interface StepperBatchRequest {
  tenantId?: string;
  requestId?: string;
  items: StepperBatchItem[];
  concurrency?: number;
  contractVersion?: string;
}

export interface ProviderAttemptMeta {
  provider: string;
  attemptNumber: number;
  error?: string;
  errorCode?: string;
  durationMs?: number;
  retryAfterSeconds?: number;
  skipped?: string;
}

export interface JobFailure {
  errorCode: string;
  message: string;
  retryable: boolean;
  retryAfterSeconds?: number;
  providersAttempted?: ProviderAttemptMeta[];
}

export interface StepperBatchItemResult {
  id: string;
  index: number;
  status: "completed" | "failed";
  data?: unknown;
  failure?: JobFailure;
  metadata?: {
    provider?: string;
    fallback?: boolean;
    validated?: boolean;
    timings?: { totalMs: number; providerMs?: number };
    providersAttempted?: ProviderAttemptMeta[];
  };
}
export interface StepperBatchResult {
  items: StepperBatchItemResult[];
  total: number;
  completed: number;
  failed: number;
}

export interface PromptInput {
  userId: string;
  commitSha: string;
  repo: string;
  message: string;
  files: string[];
  components: string[];
  diffSummary: string;
  template?: string;
  callbackUrl?: string;
  callbacks?: WebhookCallback[];
}
export type CommitReportInput = PromptInput;

export interface ReportOutput {
  title: string;
  summary: string;
  changes: string[];
  rationale: string;
  impact_and_tests: string;
  next_steps: string[];
  tags: string;
}
export type CommitReportOutput = ReportOutput;

export interface StepperProviderResult<TOutput = unknown> {
  result: TOutput;
  usedProvider: string;
  providersAttempted: ProviderAttemptMeta[];
  fallback: boolean;
  validated: boolean;
  timings: { totalMs: number; providerMs?: number };
}
export type ProviderResult = StepperProviderResult<ReportOutput>;

export interface StepperCallbacks {
  /** Never called (as in the original). */
  onEnqueue?: (jobId: string, meta: { input: PromptInput | StepperRequest<unknown, unknown>; cacheKey: string }) => void | Promise<void>;
  onStart?: (jobId: string, input: PromptInput | StepperRequest<unknown, unknown>) => void | Promise<void>;
  onProviderAttempt?: (jobId: string, providerName: string, attemptNumber: number, meta: ProviderAttemptMeta) => void | Promise<void>;
  onSuccess?: (jobId: string, providerName: string, result: unknown, meta: { timings: { totalMs: number; providerMs?: number } }) => void | Promise<void>;
  onFallback?: (jobId: string, result: unknown, meta: { providersAttempted: ProviderAttemptMeta[] }) => void | Promise<void>;
  onFailure?: (jobId: string, errors: ProviderAttemptMeta[], meta: { lastError?: string }) => void | Promise<void>;
}

export interface StepperCallbackMetadata {
  jobId: string;
  requestId?: string;
  tenantId?: string;
  provider?: string | null;
  generationTimeMs?: number;
  /** ISO-8601. */
  timestamp: string;
  requestMetadata?: Record<string, unknown>;
  userId?: string;
  commitSha?: string;
  repo?: string;
}
export interface StepperCallbackPayload<TOutput = unknown> {
  success: boolean;
  result?: TOutput;
  error?: string;
  metadata: StepperCallbackMetadata;
}

export interface InitOptions {
  /** Stepper's URL; default `STEPPER_URL`. */
  baseUrl?: string;
  /** Default `STEPPER_API_KEY`. */
  apiKey?: string;
  /** Default `STEPPER_API_KEY_HEADER`, else `x-api-key`. */
  apiKeyHeader?: string;
  fetch?: typeof fetch;
  /** One HTTP call's timeout (default 30000). */
  requestTimeoutMs?: number;
  /** How long `generateRequest` waits in all, polling included (default 120000). */
  generateTimeoutMs?: number;
  /** First pause between polls while `generateRequest` waits on a job (default 500, doubling to 5000). */
  pollIntervalMs?: number;
  /** The original's server options: ignored with a warning (stepper is configured on the service). */
  config?: unknown;
  providers?: unknown[];
}

export interface StepperClientConfig {
  readonly baseUrl: string;
  readonly apiKeyHeader: string;
  readonly apiKeySet: boolean;
  readonly contractVersion: "1";
  readonly requestTimeoutMs: number;
  readonly generateTimeoutMs: number;
  readonly pollIntervalMs: number;
}

export declare class StepperError extends Error {
  readonly status: number;
  readonly body: { error?: string; code?: string; errorCode?: string; message?: string; [key: string]: unknown } | undefined;
  readonly code: string | undefined;
  readonly retryAfterSeconds: number | undefined;
  readonly retryable: boolean;
}
export declare class StepperConfigurationError extends Error {}
export declare class StepperJobFailedError extends Error {
  readonly jobId: string;
  readonly failure: JobFailure | undefined;
}

/** The effective client configuration; null until the first call or `initStepper`. */
export declare let config: StepperClientConfig | null;

export declare function initStepper(options?: InitOptions): StepperClientConfig;
export declare function registerCallbacks(callbacks: StepperCallbacks): void;
export declare function dispatchCallback(payload: StepperCallbackPayload): Promise<void>;

type EnqueueResult<TOutput> =
  | {
      status: 200;
      data: TOutput;
      cached: true;
      stale?: boolean;
      usedProvider: string;
      fallback: boolean;
      validated: boolean;
      timings: { totalMs: number; providerMs?: number };
    }
  | { status: 202; jobId: string; cached: false };

export declare function enqueueRequest<TPayload = unknown, TOutput = unknown>(request: StepperRequest<TPayload, TOutput>): Promise<EnqueueResult<TOutput>>;
export declare function enqueueRequest(input: PromptInput): Promise<EnqueueResult<ReportOutput>>;
export declare function enqueueBatch(batch: StepperBatchRequest): Promise<{ status: 202; jobId: string; itemCount: number; concurrency: number }>;
/** @deprecated Use `enqueueRequest(createCommitReportRequest(input))`. */
export declare function enqueueReport(input: PromptInput): Promise<EnqueueResult<ReportOutput>>;
export declare function generateRequest<TPayload = unknown, TOutput = unknown>(request: StepperRequest<TPayload, TOutput>): Promise<StepperProviderResult<TOutput>>;
export declare function generateRequest(input: PromptInput): Promise<ProviderResult>;
/** @deprecated Use `generateRequest(createCommitReportRequest(input))`. */
export declare function generateReport(input: PromptInput): Promise<ProviderResult>;
export declare function getJob(jobId: string): Promise<{
  id: string;
  state: string;
  progress?: unknown;
  result?: unknown;
  failedReason?: string;
  data?: unknown;
} | null>;
/** @deprecated as in the original. */
export declare function deleteReport(userId: string, commitSha: string, template?: string): Promise<void>;
export declare function deleteJob(jobId: string): Promise<boolean>;
export declare function healthcheck(): Promise<{
  status: "healthy" | "degraded" | "unhealthy";
  providers: Array<{
    name: string;
    healthy: boolean;
    circuitOpen: boolean;
    retryAfterSeconds: number;
    lastChecked: string;
    inferredFrom: "circuit_breaker";
    supportsBatch: false;
    maxTokens: number | null;
  }>;
  timestamp: string;
}>;

export declare function validateCommitReportInput(input: unknown): { valid: true; input: PromptInput } | { valid: false; error: string };
export declare function createCommitReportRequest(input: PromptInput): StepperRequest<PromptInput, ReportOutput>;
export declare function isCommitReportRequest(request: unknown): request is StepperRequest<PromptInput, ReportOutput>;
export declare function toCommitReportInput(request: unknown): PromptInput | null;
