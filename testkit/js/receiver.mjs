// A webhook receiver that verifies exactly as stepper's real caller does, plus Standard Webhooks.
// Env: SECRET (required), STATUSES (comma-separated answers, the last repeats; default 200), PORT (default 0).
// Prints its port on the first line of stdout. GET /_deliveries lists what it received.
import { createServer } from "node:http";
import { createHmac, timingSafeEqual } from "node:crypto";

const secret = process.env.SECRET ?? "";
const statuses = (process.env.STATUSES ?? "200").split(",").map(Number);
const deliveries = [];

const same = (a, b) => a.length === b.length && timingSafeEqual(Buffer.from(a), Buffer.from(b));

function legacy(raw, headers, reasons) {
  let parsed;
  try { parsed = JSON.parse(raw); } catch { reasons.push("legacy: body is not JSON"); return { ok: false }; }
  // The caller hashes its own re-serialisation, not the raw bytes.
  const expected = createHmac("sha256", secret).update(JSON.stringify(parsed)).digest("hex");
  const signature = headers["x-webhook-signature"] ?? "";
  const ts = Number(headers["x-webhook-timestamp"]);
  let ok = true;
  if (!same(signature, expected)) { reasons.push("legacy: signature mismatch"); ok = false; }
  if (!Number.isFinite(ts) || Math.abs(Date.now() - ts) > 5 * 60 * 1000) { reasons.push("legacy: timestamp outside ±5 min (ms)"); ok = false; }
  if (JSON.stringify(parsed) !== raw) { reasons.push("legacy: body is not its own JSON.stringify"); ok = false; }
  return { ok, parsed };
}

function standard(raw, headers, reasons) {
  const id = headers["webhook-id"], ts = Number(headers["webhook-timestamp"]), sigs = headers["webhook-signature"] ?? "";
  const key = secret.startsWith("whsec_") ? Buffer.from(secret.slice(6), "base64") : Buffer.from(secret);
  const expected = createHmac("sha256", key).update(`${id}.${headers["webhook-timestamp"]}.${raw}`).digest("base64");
  let ok = true;
  if (!id) { reasons.push("standard: no webhook-id"); ok = false; }
  if (!Number.isFinite(ts) || Math.abs(Date.now() / 1000 - ts) > 300) { reasons.push("standard: timestamp outside ±5 min (s)"); ok = false; }
  if (!sigs.split(" ").some((s) => s.startsWith("v1,") && same(s.slice(3), expected))) { reasons.push("standard: no matching v1 signature"); ok = false; }
  return ok;
}

const server = createServer((req, res) => {
  if (req.method === "GET" && req.url === "/_deliveries") {
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify(deliveries));
    return;
  }
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", () => {
    const raw = Buffer.concat(chunks).toString("utf8");
    const reasons = [];
    const { ok: legacyOk, parsed } = legacy(raw, req.headers, reasons);
    const standardOk = standard(raw, req.headers, reasons);
    const status = statuses[Math.min(deliveries.length, statuses.length - 1)];
    // The original's legacy header, which the caller accepts instead of the HMAC: the secret itself.
    const authorization = req.headers["authorization"];
    deliveries.push({ path: req.url, legacy_ok: legacyOk, standard_ok: standardOk, reasons, body: parsed ?? null,
                      authorization: authorization !== undefined, bearer_ok: authorization === `Bearer ${secret}`,
                      webhook_id: req.headers["webhook-id"] ?? null, at_ms: Date.now(), answered: status });
    res.writeHead(status, { "content-type": "application/json" });
    res.end(JSON.stringify({ received: true }));
  });
});
server.listen(Number(process.env.PORT ?? 0), "127.0.0.1", () => console.log(server.address().port));
