/** @module respond-error: the one place that turns a classified failure into a response status (or a closed connection). */
import { STATUS_CODES } from "node:http"
import type { Failure } from "../core/failure.ts"

/** ErrorResponse: the status and the short plain body a client gets. */
export interface ErrorResponse {
  /** The status sent, or (close) the one the access log records: 0 when the client is simply gone. */
  status: number
  body: string
  /** Logged reason, e.g. "backend error (ECONNREFUSED)". */
  reason: string
  /**
   * Send nothing and close the stream or connection: the client left, or its request is malformed mid-body
   * (RFC 9113 §8.1.1: a stream error of type PROTOCOL_ERROR).
   */
  close: boolean
}

function answer(status: number, reason: string): ErrorResponse {
  return { status, body: `${STATUS_CODES[status]}\n`, reason, close: false }
}

/**
 * errorResponse maps a failure to what the client gets. Backend: timeout 504, no backend / queue 503, anything else
 * (refused, reset, TLS, a malformed response) 502. Client: no route 404, rate limited 429, head too large 431, too
 * slow 408, a body short of its length or a client gone: closed, anything else 400. Internal: 500.
 */
export function errorResponse(failure: Failure): ErrorResponse {
  const { code, kind } = failure
  switch (failure.source) {
    case "backend":
      if (kind === "timeout") return answer(504, `backend timeout (${code})`)
      if (kind === "unavailable") return answer(503, code === "PC_NO_BACKEND" ? "no backend available" : code)
      return answer(502, `backend error (${code})`)
    case "client":
      if (kind === "no_route") return answer(404, "no route")
      if (kind === "rate_limited") return answer(429, "rate limited")
      if (kind === "too_large") return answer(431, `request head too large (${code})`)
      if (kind === "timeout" && failure.phase === "request") return answer(408, `request timeout (${code})`)
      if (kind === "truncated")
        return { status: 400, body: "", reason: `client body length mismatch (${code})`, close: true }
      if (kind === "aborted" || kind === "reset" || kind === "timeout") {
        return { status: 0, body: "", reason: `client went away (${code})`, close: true }
      }
      return answer(400, code)
    case "internal":
      return answer(500, "internal")
  }
}

/** rawResponse renders an error answer for a raw socket (a refused upgrade, a request the HTTP/1.1 parser refused). */
export function rawResponse(status: number, body: string): string {
  return `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? "Error"}\r\nconnection: close\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`
}
