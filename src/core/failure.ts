/**
 * @module failure: the one classification of what went wrong (kind, whose fault, may it be retried, when), from
 * undici's codes (UND_ERR_*), Node's (ECONNREFUSED, HPE_*, ERR_*) and ours (PC_*). Retries, passive health, error
 * statuses and log levels all read a Failure; no other file matches on error code strings.
 */
import { errorCode, PortcullisError } from "./errors.ts"

/** FailureKind: what happened. */
export type FailureKind =
  /** The connection never opened: refused, unreachable. */
  | "connect"
  /** Waited too long: connect, response head, body, timeouts.total; a client's slow request. */
  | "timeout"
  /** An open connection broke: reset, closed, EPIPE. */
  | "reset"
  /** The TLS handshake failed (verification, protocol version, ...). */
  | "tls"
  /** Bytes that are not valid HTTP: a malformed response, or a malformed request. */
  | "protocol"
  /** A request head over the limits (RFC 6585 §5). */
  | "too_large"
  /** A body that ended before (or ran past) its Content-Length. */
  | "truncated"
  /** The client went away, or aborted its body. */
  | "aborted"
  /** No backend could take it: none up, all at max_connections, the queue full or timed out. */
  | "unavailable"
  | "no_route"
  | "rate_limited"
  /** Our own bug. */
  | "internal"
  /** A code this table does not know: the source decides the status. */
  | "unknown"

/** FailureSource: whose fault it is. Only "backend" failures count against a backend (passive health). */
export type FailureSource = "client" | "backend" | "internal"

/**
 * FailurePhase: when it happened, as far as the code alone tells. "connect": the backend got no byte of the request
 * (so any request may go elsewhere). "route"/"queue": no backend was involved. "any": the caller knows better.
 */
export type FailurePhase = "route" | "queue" | "connect" | "request" | "response" | "any"

/** Failure is a classified error. Instances for known codes are shared constants: classify allocates nothing. */
export interface Failure {
  readonly code: string
  readonly kind: FailureKind
  readonly source: FailureSource
  /** Another backend may succeed where this one failed (canRetry then decides by method, bytes sent and time). */
  readonly retryable: boolean
  readonly phase: FailurePhase
}

/** The side of the proxy an error surfaced on: a socket-level or parser code is that side's fault. */
export type FailureSide = "client" | "backend"

/** "side": the source is the side the error surfaced on (ECONNRESET from the client is the client's). */
type Source = FailureSource | "side"

/** [kind, source, retryable (toward a backend), phase] */
type Row = readonly [FailureKind, Source, boolean, FailurePhase]

/**
 * Every code the proxy distinguishes. Retryable rows are the failures another backend may not share, before any
 * response byte: refused, unreachable, reset, closed, a connect timeout.
 */
const TABLE: Readonly<Record<string, Row>> = {
  // Node sockets: the connection never opened.
  ECONNREFUSED: ["connect", "backend", true, "connect"],
  EHOSTUNREACH: ["connect", "backend", true, "connect"],
  ENETUNREACH: ["connect", "backend", true, "connect"],
  // Node sockets: an open connection broke (either side).
  ECONNRESET: ["reset", "side", true, "any"],
  EPIPE: ["reset", "side", true, "any"],
  // The kernel gave up on an established or connecting socket: not known to be before the request.
  ETIMEDOUT: ["timeout", "side", false, "any"],
  // An HTTP/2 backend refused the stream unprocessed (REFUSED_STREAM, RFC 9113 §8.7): as if it never connected.
  PC_BACKEND_STREAM_REFUSED: ["connect", "backend", true, "connect"],
  // undici (and the lean HTTP/1.1 client, which uses its codes).
  UND_ERR_CONNECT_TIMEOUT: ["timeout", "backend", true, "connect"],
  UND_ERR_SOCKET: ["reset", "backend", true, "any"],
  UND_ERR_CLOSED: ["reset", "backend", true, "any"],
  UND_ERR_DESTROYED: ["reset", "backend", false, "any"],
  UND_ERR_HEADERS_TIMEOUT: ["timeout", "backend", false, "response"],
  UND_ERR_BODY_TIMEOUT: ["timeout", "backend", false, "response"],
  UND_ERR_HEADERS_OVERFLOW: ["protocol", "backend", false, "response"],
  UND_ERR_RES_CONTENT_LENGTH_MISMATCH: ["truncated", "backend", false, "response"],
  // undici refusing the request body we pass on: the client's body ended short of (or ran past) its length.
  UND_ERR_REQ_CONTENT_LENGTH_MISMATCH: ["truncated", "client", false, "request"],
  // The client's request body stopped for longer than limits.body_timeout (exchange.ts): 408.
  PC_CLIENT_BODY_TIMEOUT: ["timeout", "client", false, "request"],
  // undici's request was aborted: by us when the client left, or the client's body stream closed early.
  UND_ERR_ABORTED: ["aborted", "client", false, "any"],
  // Node's HTTP server: a request slower than headers_timeout / request_timeout.
  ERR_HTTP_REQUEST_TIMEOUT: ["timeout", "client", false, "request"],
  // The request head is over max_header_size (the HTTP/1.1 connection, h1/connection.ts) or max_headers (the engine counts): 431.
  HPE_HEADER_OVERFLOW: ["too_large", "side", false, "request"],
  // A backend response header the client's protocol cannot carry (writeHead refused it).
  ERR_HTTP2_INVALID_HEADER_VALUE: ["protocol", "backend", false, "response"],
  ERR_HTTP_INVALID_HEADER_VALUE: ["protocol", "backend", false, "response"],
  ERR_INVALID_CHAR: ["protocol", "backend", false, "response"],
  // Ours.
  PC_BACKEND_CONNECT: ["connect", "backend", true, "connect"],
  // The dialer: the connection closed before it was established (the backend got no request byte).
  PC_BACKEND_CLOSED: ["connect", "backend", true, "connect"],
  PC_BACKEND_CONNECT_TIMEOUT: ["timeout", "backend", true, "connect"],
  PC_BACKEND_TIMEOUT: ["timeout", "backend", false, "response"],
  PC_BACKEND_SOCKET: ["reset", "backend", false, "any"],
  PC_NO_BACKEND: ["unavailable", "backend", false, "queue"],
  PC_BACKEND_FULL: ["unavailable", "backend", false, "queue"],
  PC_BACKEND_QUEUE_FULL: ["unavailable", "backend", false, "queue"],
  PC_BACKEND_QUEUE_TIMEOUT: ["unavailable", "backend", false, "queue"],
  PC_NO_ROUTE: ["no_route", "client", false, "route"],
  PC_RATE_LIMITED: ["rate_limited", "client", false, "route"],
  PC_TCP_IDLE_TIMEOUT: ["timeout", "client", false, "any"],
  PC_INTERNAL: ["internal", "internal", false, "any"],
}

/** Code prefixes: llhttp's parser errors (either side's bytes), TLS failures, our client errors. */
const PREFIXES: ReadonlyArray<readonly [string, Row]> = [
  ["HPE_", ["protocol", "side", false, "any"]],
  ["ERR_TLS_", ["tls", "side", false, "connect"]],
  ["ERR_SSL_", ["tls", "side", false, "connect"]],
  ["PC_CLIENT_", ["protocol", "client", false, "request"]],
]

/** OpenSSL's certificate verification results, as Node reports them on a failed handshake. */
const TLS_VERIFY = [
  "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
  "UNABLE_TO_GET_ISSUER_CERT",
  "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
  "SELF_SIGNED_CERT_IN_CHAIN",
  "DEPTH_ZERO_SELF_SIGNED_CERT",
  "CERT_HAS_EXPIRED",
  "CERT_NOT_YET_VALID",
  "CERT_UNTRUSTED",
  "CERT_REJECTED",
  "CERT_SIGNATURE_FAILURE",
  "HOSTNAME_MISMATCH",
  "EPROTO",
]

function make(code: string, row: Row, side: FailureSide): Failure {
  const [kind, source, retryable, phase] = row
  const resolved = source === "side" ? side : source
  return Object.freeze({ code, kind, source: resolved, retryable: retryable && resolved === "backend", phase })
}

/** Both sides' Failure for each known code, built once. */
const KNOWN = new Map<string, { client: Failure; backend: Failure }>()
function addKnown(code: string, row: Row): void {
  KNOWN.set(code, { client: make(code, row, "client"), backend: make(code, row, "backend") })
}
for (const code in TABLE) addKnown(code, TABLE[code]!)
for (const code of TLS_VERIFY) addKnown(code, ["tls", "side", false, "connect"])

/**
 * classify says what an error means. `side` is where it surfaced: "backend" for errors from a backend connection or
 * dispatch (the default), "client" for errors of the client's connection or Node's request parser. A code that is
 * always one party's (a client body shorter than its Content-Length, undici's refusal of it) keeps that source on
 * either side. Unknown codes take the PortcullisError's own source, else the side's.
 */
export function classify(err: unknown, side: FailureSide = "backend"): Failure {
  const code = errorCode(err)
  const known = classifyCode(code, side)
  if (known.kind !== "unknown") return known
  if (err instanceof PortcullisError && err.source !== side) {
    return unknown(code, err.source === "config" ? "internal" : err.source)
  }
  return known
}

/** classifyCode is classify for a bare code (the engine's own refusals: PC_NO_ROUTE, PC_RATE_LIMITED, ...). */
export function classifyCode(code: string, side: FailureSide = "backend"): Failure {
  const known = KNOWN.get(code)
  if (known !== undefined) return known[side]
  for (const [prefix, row] of PREFIXES) if (code.startsWith(prefix)) return make(code, row, side)
  return unknown(code, side)
}

function unknown(code: string, source: FailureSource): Failure {
  return { code, kind: source === "internal" ? "internal" : "unknown", source, retryable: false, phase: "any" }
}

/** knownCodes lists every code the table names (for the table test). */
export function knownCodes(): string[] {
  return [...KNOWN.keys()]
}
