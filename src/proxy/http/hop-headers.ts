/** @module hop-headers: which header fields are hop-by-hop and never forwarded (RFC 9110 §7.6.1). */

import { trimOws } from "../../core/ows.ts"

/** HOP_BY_HOP: the fixed set, plus any field the Connection header names (see connectionTokens). */
export const HOP_BY_HOP: ReadonlySet<string> = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "te",
  "transfer-encoding",
  "upgrade",
  "http2-settings",
  // Not hop-by-hop in RFC 9110, but an expectation this proxy meets itself (§10.1.1): it answers 100 Continue when
  // it is ready to take the body, so the backend never waits on a client that waits on it.
  "expect",
])

/** connectionTokens lists the field names a Connection header value nominates as hop-by-hop. */
export function connectionTokens(value: string | string[] | undefined): Set<string> | undefined {
  // What backends and clients send nearly always: nominates nothing (and no split, no Set).
  if (value === undefined || value === "keep-alive" || value === "close") return undefined
  const text = Array.isArray(value) ? value.join(",") : value
  let tokens: Set<string> | undefined
  for (const raw of text.split(",")) {
    const token = trimOws(raw).toLowerCase()
    if (token === "" || token === "close" || token === "keep-alive") continue
    tokens ??= new Set()
    tokens.add(token)
  }
  return tokens
}

/** responseHeadersForClient copies a backend's response headers minus hop-by-hop fields (same object shape). */
export function responseHeadersForClient(
  headers: Record<string, string | string[] | undefined>,
): Record<string, string | string[]> {
  const nominated = connectionTokens(headers["connection"])
  const out: Record<string, string | string[]> = {}
  for (const name in headers) {
    const value = headers[name]
    if (value === undefined || HOP_BY_HOP.has(name) || nominated?.has(name)) continue
    out[name] = value
  }
  return out
}
