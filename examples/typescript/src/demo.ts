// The client end to end against a running stepper: a commit report (submit, wait, purge) and a generic
// job whose signed webhook this script receives and verifies. Prints one JSON line per step.
//
//   STEPPER_URL=http://127.0.0.1:3005 STEPPER_API_KEY=... node dist/demo.js
//   (add WEBHOOK_SECRET and WEBHOOK_PORT, with stepper's STEPPER_WEBHOOK_SECRETS holding the same secret
//   for the key's owner and CALLBACK_ALLOWED_ORIGINS=http://127.0.0.1:<WEBHOOK_PORT>, for the webhook part)
import { createServer, type IncomingMessage } from "node:http";
import type { AddressInfo } from "node:net";

import { StepperClient, StepperError } from "./client.js";
import { verifyDelivery, verifyLegacy, verifyStandard, type WebhookBody } from "./webhooks.js";

const env = (name: string): string | undefined => process.env[name] || undefined;
const log = (step: string, detail: object): void => console.log(JSON.stringify({ step, ...detail }));

function readBody(request: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    request.on("data", (chunk: Buffer) => chunks.push(chunk));
    request.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    request.on("error", reject);
  });
}

interface Received {
  legacy: boolean;
  standard: boolean;
  body: WebhookBody | undefined;
}

/** A webhook receiver on 127.0.0.1 that verifies every delivery both ways. */
async function receiver(secret: string, port: number): Promise<{ url: string; next: () => Promise<Received>; close: () => void }> {
  const waiting: ((r: Received) => void)[] = [];
  const received: Received[] = [];
  const server = createServer(async (request, response) => {
    const raw = await readBody(request);
    const delivery: Received = {
      legacy: verifyLegacy(raw, request.headers, secret),
      standard: verifyStandard(raw, request.headers, [secret]),
      body: verifyDelivery<WebhookBody>(raw, request.headers, [secret]),
    };
    // Answer 2xx only for authentic deliveries: stepper retries the others.
    response.writeHead(delivery.body === undefined ? 401 : 204).end();
    const take = waiting.shift();
    if (take) take(delivery);
    else received.push(delivery);
  });
  await new Promise<void>((resolve) => server.listen(port, "127.0.0.1", resolve));
  const { port: bound } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${bound}/hooks/stepper`,
    next: () => {
      const ready = received.shift();
      return ready ? Promise.resolve(ready) : new Promise((resolve) => waiting.push(resolve));
    },
    close: () => server.close(),
  };
}

async function main(): Promise<void> {
  const baseUrl = env("STEPPER_URL") ?? "http://127.0.0.1:3005";
  const apiKey = env("STEPPER_API_KEY");
  const client = new StepperClient(apiKey === undefined ? { baseUrl } : { baseUrl, apiKey });
  const poll = { initialDelayMs: 200, maxDelayMs: 2_000, timeoutMs: 60_000 };

  const health = await client.health();
  const providers = await client.providers();
  log("health", { status: health.status, store: health.store, providers: providers.providers.map((p) => p.name) });

  const commit = { userId: "demo-user", commitSha: `demo-${Date.now()}`, repo: "acme/diary", template: "default" };
  const submitted = await client.submitReport({
    ...commit,
    message: "Add token refresh to the auth client",
    files: ["src/auth.ts"],
    components: ["auth"],
    diffSummary: "diff --git a/src/auth.ts b/src/auth.ts\n+export function refresh() {}\n",
  });
  const report =
    submitted.kind === "cached"
      ? submitted.job.data
      : (await client.waitForJob(submitted.job.statusUrl, poll)).data?.result;
  log("report", { submitted: submitted.kind, title: (report as { title?: string } | undefined)?.title });
  const purged = await client.purgeReport(commit.userId, commit.commitSha, commit.template);
  log("purge-report", { deleted: purged.deleted });

  const secret = env("WEBHOOK_SECRET");
  const hooks = secret === undefined ? undefined : await receiver(secret, Number(env("WEBHOOK_PORT") ?? 0));
  try {
    const generic = await client.submitGenerate({
      prompt: { template: "List three colours for {{payload.topic}} as JSON {\"colours\": [...]}", variables: {} },
      payload: { topic: "a logo" },
      responseMode: "json",
      ...(hooks === undefined ? {} : { callbackUrl: hooks.url }),
    });
    if (generic.kind === "cached") throw new Error("a fresh generic job was answered from the cache");
    const done = await client.waitForJob(generic.job.statusUrl, poll);
    log("generate", { status: done.status, provider: done.data?.usedProvider, attempts: done.attempts.length });
    if (hooks !== undefined) {
      const delivery = await Promise.race([
        hooks.next(),
        new Promise<never>((_, reject) => setTimeout(() => reject(new Error("no webhook within 20 s")), 20_000)),
      ]);
      log("webhook", { legacy: delivery.legacy, standard: delivery.standard, status: delivery.body?.status, jobId: delivery.body?.jobId });
      if (!delivery.legacy || !delivery.standard || delivery.body?.jobId !== generic.job.jobId) {
        throw new Error("the webhook did not verify");
      }
      // The receiver has answered; stepper records that answer a moment later. Wait until the poll says
      // delivered (at most 10 s), then a redelivery finds nothing to send (a dead letter would be sent again).
      for (let tries = 0; ; tries += 1) {
        const view = await client.getJob(generic.job.statusUrl);
        if ((view.deliveries ?? []).every((d) => d.status === "delivered")) break;
        if (tries >= 100) throw new Error("the delivery was not recorded as delivered within 10 s");
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      try {
        const again = await client.redeliver(generic.job.jobId);
        log("redeliver", { status: 202, redelivered: again.redelivered });
      } catch (error) {
        if (!(error instanceof StepperError) || error.status !== 409) throw error;
        log("redeliver", { status: error.status, code: error.body?.code });
      }
    }
    const gone = await client.purgeJob(generic.job.jobId);
    log("purge-job", { success: gone.success });
  } finally {
    hooks?.close();
  }
  log("done", { ok: true });
}

main().catch((error: unknown) => {
  log("error", { message: error instanceof Error ? error.message : String(error) });
  process.exitCode = 1;
});
