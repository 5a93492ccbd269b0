/** @module respond-error: the one place that turns an error into a response status (or a closed connection). */
import { errorCode } from "../core/errors.ts"

/** ErrorResponse: the status and the short plain body a client gets. */
export interface ErrorResponse {
  status: number
  body: string
  /** Logged reason, e.g. "backend refused the connection". */
  reason: string
}

const TIMEOUTS = new Set(["UND_ERR_HEADERS_TIMEOUT", "UND_ERR_CONNECT_TIMEOUT", "ETIMEDOUT", "PC_BACKEND_TIMEOUT"])

/** errorResponse maps an error to a status: backend timeout 504, other backend failure 502, queue full 503, client 400. */
export function errorResponse(err: unknown): ErrorResponse {
  const code = errorCode(err)
  if (TIMEOUTS.has(code)) return { status: 504, body: "Gateway Timeout\n", reason: `backend timeout (${code})` }
  if (code === "PC_NO_BACKEND") return { status: 503, body: "Service Unavailable\n", reason: "no backend available" }
  if (code === "PC_BACKEND_QUEUE_FULL" || code === "PC_BACKEND_QUEUE_TIMEOUT") {
    return { status: 503, body: "Service Unavailable\n", reason: code }
  }
  if (code === "PC_CLIENT_BODY_TIMEOUT") {
    return { status: 408, body: "Request Timeout\n", reason: "client body timeout" }
  }
  if (code.startsWith("PC_CLIENT_")) return { status: 400, body: "Bad Request\n", reason: code }
  // Refused, reset, TLS failure toward the backend, malformed backend response: all are the backend's.
  return { status: 502, body: "Bad Gateway\n", reason: `backend error (${code})` }
}
