/**
 * @module response-head: a strict parser for a backend's HTTP/1.1 response head and its body framing (RFC 9112).
 * Anything ambiguous is an error, never a guess: a proxy that frames a response differently from the backend can
 * be made to mix two responses (response splitting, desync).
 */

/** Framing: how the body after the head ends. */
export type Framing =
  | { kind: "none" }
  | { kind: "length"; length: number }
  | { kind: "chunked" }
  /** Read until the backend closes; the connection cannot be reused. */
  | { kind: "close" }

/** ResponseHead: what the head says, headers as undici gives them (lower-case names, repeats as arrays). */
export interface ResponseHead {
  status: number
  statusText: string
  headers: Record<string, string | string[]>
  framing: Framing
  /** The connection may carry another request after this response. */
  keepAlive: boolean
  /** The backend's Keep-Alive: timeout=N hint, in ms (undefined when absent). */
  keepAliveTimeoutMs: number | undefined
}

/** BackendProtocolError: the backend's bytes are not a response we can frame; code as undici's parser errors. */
export class BackendProtocolError extends Error {
  readonly code: string
  constructor(message: string, code = "HPE_INVALID_CONSTANT") {
    super(`backend response: ${message}`)
    this.code = code
  }
}

const STATUS_LINE = /^HTTP\/1\.([01]) ([1-9]\d\d)(?: ([\t\x20-\x7e\x80-\xff]*))?$/
/** field-name = token; the value may hold HTAB, SP, VCHAR and obs-text, nothing else (no NUL, CR, LF). */
const HEADER_LINE = /^([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[\t ]*([\t\x20-\x7e\x80-\xff]*?)[\t ]*$/
const DIGITS = /^\d{1,15}$/

/**
 * parseResponseHead parses the head in text (latin1, without the final empty line) for a request made with
 * method. Throws BackendProtocolError on anything llhttp in strict mode would refuse, and on conflicting framing.
 */
export function parseResponseHead(text: string, method: string): ResponseHead {
  if (text.includes("\n") && /(?:^|[^\r])\n/.test(text)) throw new BackendProtocolError("bare LF in the head")
  const lines = text.split("\r\n")
  const status = STATUS_LINE.exec(lines[0]!)
  if (!status) throw new BackendProtocolError("invalid status line")
  const headers: Record<string, string | string[]> = {}
  let contentLength: string | undefined
  let transferEncoding: string | undefined
  let connection = ""
  let keepAliveHint: string | undefined
  for (let i = 1; i < lines.length; i++) {
    const m = HEADER_LINE.exec(lines[i]!)
    // Also refuses obs-fold (a line starting with SP or HTAB) and a space before the colon.
    if (!m) throw new BackendProtocolError("invalid header line", "HPE_INVALID_HEADER_TOKEN")
    const name = m[1]!.toLowerCase()
    const value = m[2]!
    const seen = headers[name]
    if (seen === undefined) headers[name] = value
    else if (typeof seen === "string") headers[name] = [seen, value]
    else seen.push(value)
    if (name === "content-length") contentLength = contentLength === undefined ? value : `${contentLength},${value}`
    else if (name === "transfer-encoding")
      transferEncoding = transferEncoding === undefined ? value : `${transferEncoding},${value}`
    else if (name === "connection") connection += `,${value.toLowerCase()}`
    else if (name === "keep-alive") keepAliveHint = value
  }
  const code = Number(status[2])
  const http10 = status[1] === "0"
  let keepAlive = !http10 && !hasToken(connection, "close")
  let framing: Framing
  if (transferEncoding !== undefined && contentLength !== undefined) {
    throw new BackendProtocolError("both Transfer-Encoding and Content-Length", "HPE_UNEXPECTED_CONTENT_LENGTH")
  }
  if (method === "HEAD" || code < 200 || code === 204 || code === 304) {
    framing = { kind: "none" }
  } else if (transferEncoding !== undefined) {
    // Only "chunked" alone: any other coding would have to be the backend closing, which we do not guess at.
    if (transferEncoding.trim().toLowerCase() !== "chunked") {
      throw new BackendProtocolError("unsupported Transfer-Encoding", "HPE_INVALID_TRANSFER_ENCODING")
    }
    framing = { kind: "chunked" }
  } else if (contentLength !== undefined) {
    const values = contentLength.split(",").map((v) => v.trim())
    if (!values.every((v) => DIGITS.test(v) && v === values[0])) {
      throw new BackendProtocolError("invalid or conflicting Content-Length", "HPE_INVALID_CONTENT_LENGTH")
    }
    framing = { kind: "length", length: Number(values[0]) }
  } else {
    framing = { kind: "close" }
    keepAlive = false
  }
  return {
    status: code,
    statusText: status[3] ?? "",
    headers,
    framing,
    keepAlive,
    keepAliveTimeoutMs: keepAliveTimeout(keepAliveHint),
  }
}

function hasToken(list: string, token: string): boolean {
  for (const part of list.split(",")) if (part.trim() === token) return true
  return false
}

function keepAliveTimeout(hint: string | undefined): number | undefined {
  const m = hint && /(?:^|[,;\s])timeout=(\d+)/i.exec(hint)
  return m ? Number(m[1]) * 1000 : undefined
}
