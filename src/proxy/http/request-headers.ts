/** @module request-headers: the header list a backend receives: client headers minus hop-by-hop, plus X-Forwarded-*. */
import type { ConnectionInfo } from "../../core/connection-info.ts"
import { forwardedElement } from "./forwarded.ts"
import { connectionTokens, HOP_BY_HOP } from "./hop-headers.ts"
import { IDENTITY_HEADERS, identityHeaders } from "./identity-headers.ts"

/** Headers describing earlier hops: kept (and appended to) only when the client is a trusted proxy. */
const FORWARDING_HEADERS: ReadonlySet<string> = new Set([
  "x-forwarded-for",
  "x-forwarded-proto",
  "x-forwarded-host",
  "forwarded",
])

/**
 * buildRequestHeaders turns Node's rawHeaders ([name, value, ...], HTTP/1.1 or HTTP/2) into the flat list for the
 * backend: hop-by-hop and pseudo headers removed (RFC 9110 §7.6.1), HTTP/2 cookies joined (RFC 9113 §8.2.3),
 * Host set to `host` (the authority the request was routed on, authority.ts), X-Forwarded-For/-Proto/-Host and
 * Forwarded (RFC 7239) set, the client's own copies kept only when info.trusted (trusted_proxies); `te: trailers`
 * passed on when `trailers` (the backend's trailers reach the client).
 */
export function buildRequestHeaders(
  raw: readonly string[],
  info: ConnectionInfo,
  host: string | undefined,
  trailers = false,
): string[] {
  const out: string[] = []
  let nominated: Set<string> | undefined
  for (let i = 0; i < raw.length; i += 2) {
    if (raw[i]!.length === 10 && raw[i]!.toLowerCase() === "connection") {
      nominated = connectionTokens(raw[i + 1])
      break
    }
  }
  let xff: string | undefined
  let forwarded: string | undefined
  let proto: string | undefined
  let forwardedHost: string | undefined
  let cookie: string | undefined
  let sawHost = false
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!
    const value = raw[i + 1]!
    if (name.charCodeAt(0) === 58 /* : */) continue
    const lower = name.toLowerCase()
    if (HOP_BY_HOP.has(lower) || nominated?.has(lower)) {
      // TE is hop-by-hop, but "trailers" says the client takes trailer fields; toward a backend whose trailers we
      // pass on (`trailers`: HTTP/2 ones) it is ours to send too (RFC 9113 §8.2.2 allows only that value; gRPC
      // requires it).
      if (trailers && lower === "te" && acceptsTrailers(value)) out.push("te", "trailers")
      continue
    }
    // Headers about the client that only Portcullis may set, in every format: a client's own copies always go.
    if (IDENTITY_HEADERS.has(lower)) continue
    if (FORWARDING_HEADERS.has(lower)) {
      if (!info.trusted) continue
      if (lower === "x-forwarded-for") xff = xff === undefined ? value : `${xff}, ${value}`
      else if (lower === "forwarded") forwarded = forwarded === undefined ? value : `${forwarded}, ${value}`
      else if (lower === "x-forwarded-proto") proto ??= value
      else forwardedHost ??= value
      continue
    }
    if (lower === "cookie") {
      cookie = cookie === undefined ? value : `${cookie}; ${value}`
      continue
    }
    if (lower === "host") {
      // The authority the request was routed on (authority.ts): one value for routing and for the backend.
      sawHost = true
      out.push(name, host ?? value)
      continue
    }
    out.push(name, value)
  }
  if (!sawHost && host) out.push("host", host)
  if (cookie !== undefined) out.push("cookie", cookie)
  const client = info.clientAddress
  out.push("x-forwarded-for", xff === undefined ? client : `${xff}, ${client}`)
  out.push("x-forwarded-proto", proto ?? "https")
  if (forwardedHost ?? host) out.push("x-forwarded-host", (forwardedHost ?? host)!)
  const element = forwardedElementFor(info, host)
  out.push("forwarded", forwarded === undefined ? element : `${forwarded}, ${element}`)
  // The client's identity (mTLS) in the listener's client_auth.forward_format (identity-headers.ts).
  if (info.clientAuth) {
    const identity = identityHeaders(info)
    for (let i = 0; i < identity.length; i++) out.push(identity[i]!)
  }
  return out
}

/**
 * forwardedElementFor is forwardedElement for this connection's client: the requests of one connection name the
 * same host, so the element is made once per connection (again when the host changes), not once per request, and
 * kept in the info's own slot for it (ConnectionInfo.forwardedElement: no WeakMap entry per connection).
 */
function forwardedElementFor(info: ConnectionInfo, host: string | undefined): string {
  const last = info.forwardedElement
  if (last !== undefined && info.forwardedHost === host) return last
  const element = forwardedElement(info.clientAddress, host, "https")
  info.forwardedElement = element
  info.forwardedHost = host
  return element
}

/** acceptsTrailers: a TE value names the "trailers" token (RFC 9110 §10.1.4). */
function acceptsTrailers(value: string): boolean {
  for (const part of value.split(",")) if (part.trim().toLowerCase().split(";")[0] === "trailers") return true
  return false
}
