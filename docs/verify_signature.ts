/**
 * Verifies the signature of a trailwatch webhook request. Runs on Deno, Node 20+, Bun,
 * Cloudflare Workers and browsers (Web Crypto only). Pass the raw body text exactly as
 * received, before any JSON parsing.
 */
export async function verifyTrailwatchSignature(
  secret: string,
  timestamp: string | null, // X-Trailwatch-Timestamp
  signature: string | null, // X-Trailwatch-Signature
  rawBody: string,
  toleranceSeconds = 300,
): Promise<boolean> {
  if (!timestamp || !/^\d+$/.test(timestamp)) return false;
  if (!signature || !/^sha256=[0-9a-f]{64}$/.test(signature)) return false;
  // Reject old (replayed) and far-future timestamps.
  if (Math.abs(Date.now() / 1000 - Number(timestamp)) > toleranceSeconds) return false;
  const encoder = new TextEncoder();
  const key = await crypto.subtle.importKey(
    "raw",
    encoder.encode(secret),
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["verify"],
  );
  const mac = new Uint8Array(signature.slice(7).match(/../g)!.map((h) => parseInt(h, 16)));
  // crypto.subtle.verify recomputes HMAC-SHA256(`${timestamp}.${rawBody}`) and compares it
  // with the received one in constant time.
  return await crypto.subtle.verify("HMAC", key, mac, encoder.encode(`${timestamp}.${rawBody}`));
}
