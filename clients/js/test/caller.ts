// Caller code written against the original's library API (as the CommitDiary API writes it); type-checked
// against this package's declarations by local/tests/js_client.rs (tsc -p test/tsconfig.json, no emit).
import {
  createCommitReportRequest,
  enqueueBatch,
  enqueueReport,
  enqueueRequest,
  generateReport,
  generateRequest,
  getJob,
  deleteReport,
  healthcheck,
  initStepper,
  registerCallbacks,
  ProviderErrorType,
  STEPPER_HTTP_CONTRACT_VERSION,
  type PromptInput,
  type ReportOutput,
  type StepperBatchResult,
} from "../src/index.js";

const input: PromptInput = {
  userId: "u",
  commitSha: "abc",
  repo: "acme/diary",
  message: "m",
  files: [],
  components: [],
  diffSummary: "",
};

export async function caller(): Promise<string> {
  initStepper({ baseUrl: "http://127.0.0.1:3005", apiKey: "k" });
  registerCallbacks({ onSuccess: (jobId, provider) => void `${jobId}${provider}` });
  const queued = await enqueueReport(input);
  if (queued.status === 200) {
    const report: ReportOutput = queued.data;
    return report.title;
  }
  const job = await getJob(queued.jobId);
  if (job === null) return "gone";
  if (job.state === "failed") return job.failedReason ?? "failed";
  const generic = await enqueueRequest<{ topic: string }, { answer: string }>({
    prompt: { template: "{{payload.topic}}" },
    payload: { topic: "t" },
    cacheControl: "no-cache",
    preferredProviders: ["openai"],
    contractVersion: STEPPER_HTTP_CONTRACT_VERSION,
  });
  if (generic.status === 200) return generic.data.answer;
  const viaPreset = await enqueueRequest(createCommitReportRequest(input));
  const batch = await enqueueBatch({ items: [{ id: "a", request: { prompt: "p" } }], concurrency: 1 });
  const batchJob = await getJob(batch.jobId);
  const items = (batchJob?.result as StepperBatchResult | undefined)?.items ?? [];
  const now = await generateRequest<unknown, { answer: string }>({ prompt: "p" });
  const report = await generateReport(input);
  await deleteReport("u", "abc");
  const health = await healthcheck();
  const code: string = ProviderErrorType.RateLimit;
  return `${viaPreset.status}${items.length}${now.result.answer}${report.result.title}${health.status}${code}`;
}
