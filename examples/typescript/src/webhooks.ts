// Verifying stepper's webhooks and callbacks. Every delivery carries two header sets; check either.
//
// - Legacy (what the original caller checks): `X-Webhook-Signature` = hex HMAC-SHA256 of the body, keyed
//   with the secret string's bytes as written (a `whsec_` secret too), and `X-Webhook-Timestamp` in epoch
//   milliseconds, within ±5 minutes. The body is exactly `JSON.stringify(JSON.parse(body))`, so hashing the
//   raw bytes or the re-serialised parse gives the same answer.
// - Standard Webhooks (standardwebhooks.com): `webhook-id`, `webhook-timestamp` (epoch seconds) and
//   `webhook-signature: v1,<base64>` entries separated by spaces (one per secret during a rotation), each an
//   HMAC-SHA256 of `${id}.${timestamp}.${body}` keyed with the base64-decoded part of a `whsec_` secret, or
//   with the secret's own bytes otherwise.
import { createHmac, timingSafeEqual } from "node:crypto";

import type { components } from "./api-types.js";

type Schemas = components["schemas"];

/** `callbackUrl` body (generated from stepper's OpenAPI document, its `webhooks` section). */
export type WebhookBody = Schemas["WebhookCompleted"] | Schemas["WebhookFailed"];

/** A `callbacks` entry's body; `metadata.timestamp` is ISO-8601, as `toISOString` writes it. */
export type CallbackBody = Schemas["CallbackBody"];

/** Incoming request headers, as Node's `IncomingMessage.headers` gives them (lower-case names). */
export type Headers = Record<string, string | string[] | undefined>;

export const TOLERANCE_MS = 5 * 60 * 1000;

function header(headers: Headers, name: string): string | undefined {
  const value = headers[name.toLowerCase()];
  return Array.isArray(value) ? value[0] : value;
}

function same(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

/** The legacy check: hex HMAC of the body and a millisecond timestamp within ±5 minutes. */
export function verifyLegacy(rawBody: string, headers: Headers, secret: string, now: number = Date.now()): boolean {
  const signature = header(headers, "x-webhook-signature");
  const timestamp = Number(header(headers, "x-webhook-timestamp"));
  if (signature === undefined || !Number.isFinite(timestamp) || Math.abs(now - timestamp) > TOLERANCE_MS) return false;
  const expected = createHmac("sha256", secret).update(rawBody).digest("hex");
  return same(signature.toLowerCase(), expected);
}

function standardKey(secret: string): Buffer {
  return secret.startsWith("whsec_") ? Buffer.from(secret.slice("whsec_".length), "base64") : Buffer.from(secret);
}

/** The Standard Webhooks check, against any of `secrets` (current and previous during a rotation). */
export function verifyStandard(rawBody: string, headers: Headers, secrets: string[], now: number = Date.now()): boolean {
  const id = header(headers, "webhook-id");
  const timestamp = header(headers, "webhook-timestamp");
  const signatures = header(headers, "webhook-signature");
  if (id === undefined || timestamp === undefined || signatures === undefined) return false;
  const seconds = Number(timestamp);
  if (!Number.isFinite(seconds) || Math.abs(now - seconds * 1000) > TOLERANCE_MS) return false;
  const offered = signatures
    .split(" ")
    .filter((entry) => entry.startsWith("v1,"))
    .map((entry) => entry.slice(3));
  return secrets.some((secret) => {
    const expected = createHmac("sha256", standardKey(secret)).update(`${id}.${timestamp}.${rawBody}`).digest("base64");
    return offered.some((signature) => same(signature, expected));
  });
}

/**
 * Verifies a delivery by whichever header set it carries (Standard Webhooks first) and returns its
 * parsed body, or `undefined` when it is not authentic. `rawBody` must be the exact bytes received.
 */
export function verifyDelivery<T = WebhookBody | CallbackBody>(
  rawBody: string,
  headers: Headers,
  secrets: string[],
  now: number = Date.now(),
): T | undefined {
  const authentic =
    header(headers, "webhook-signature") !== undefined
      ? verifyStandard(rawBody, headers, secrets, now)
      : secrets.some((secret) => verifyLegacy(rawBody, headers, secret, now));
  return authentic ? (JSON.parse(rawBody) as T) : undefined;
}
