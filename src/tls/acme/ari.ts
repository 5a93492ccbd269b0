/** @module ari: ACME Renewal Information (RFC 9773): a certificate's ARI id and its CA's suggested window. */
import "reflect-metadata"
import type { X509Certificate } from "node:crypto"
import * as x509 from "@peculiar/x509"
import type { RenewalWindow } from "./renewal.ts"

/** When the CA gives no Retry-After, ARI is asked again after this long (RFC 9773 §4.3: a few hours is usual). */
const DEFAULT_RETRY_AFTER_MS = 6 * 3_600_000
/** Never ask more often than this, whatever Retry-After says. */
const MIN_RETRY_AFTER_MS = 1_000

/** RenewalInfo: the CA's window and when to ask again. */
export interface RenewalInfo {
  window: RenewalWindow
  /** ms from now until ARI should be asked again (the response's Retry-After) */
  retryAfterMs: number
  explanationUrl?: string | undefined
}

/**
 * ariCertId is `base64url(AKI keyIdentifier) "." base64url(serial)` (RFC 9773 §4.1), the serial's DER INTEGER
 * content bytes (a leading zero byte where the high bit is set). Undefined without an authority key identifier.
 */
export function ariCertId(leaf: X509Certificate): string | undefined {
  const cert = new x509.X509Certificate(leaf.raw)
  const aki = cert.getExtension(x509.AuthorityKeyIdentifierExtension)
  if (!aki?.keyId) return undefined
  let serial = Buffer.from(leaf.serialNumber.length % 2 ? `0${leaf.serialNumber}` : leaf.serialNumber, "hex")
  while (serial.length > 1 && serial[0] === 0 && serial[1]! < 0x80) serial = serial.subarray(1)
  if (serial[0]! >= 0x80) serial = Buffer.concat([Buffer.from([0]), serial])
  return `${Buffer.from(aki.keyId, "hex").toString("base64url")}.${serial.toString("base64url")}`
}

/**
 * parseRenewalInfo reads a renewalInfo answer: `{ suggestedWindow: { start, end }, explanationURL? }` and its
 * Retry-After (seconds or an HTTP date). Undefined when the body is not a valid window.
 */
export function parseRenewalInfo(
  body: string,
  retryAfter: string | undefined,
  now = Date.now(),
): RenewalInfo | undefined {
  let data: { suggestedWindow?: { start?: unknown; end?: unknown }; explanationURL?: unknown }
  try {
    data = JSON.parse(body) as typeof data
  } catch {
    return undefined
  }
  const start = Date.parse(String(data.suggestedWindow?.start ?? ""))
  const end = Date.parse(String(data.suggestedWindow?.end ?? ""))
  if (!Number.isFinite(start) || !Number.isFinite(end) || end < start) return undefined
  let retryAfterMs = DEFAULT_RETRY_AFTER_MS
  if (retryAfter !== undefined) {
    const seconds = Number(retryAfter)
    const at = Date.parse(retryAfter)
    if (Number.isFinite(seconds) && retryAfter.trim() !== "") retryAfterMs = seconds * 1000
    else if (Number.isFinite(at)) retryAfterMs = at - now
  }
  return {
    window: { start, end },
    retryAfterMs: Math.max(MIN_RETRY_AFTER_MS, retryAfterMs),
    explanationUrl: typeof data.explanationURL === "string" ? data.explanationURL : undefined,
  }
}
