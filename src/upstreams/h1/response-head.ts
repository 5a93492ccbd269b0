/**
 * @module response-head: a strict parser for a backend's HTTP/1.1 response head and its body framing (RFC 9112).
 * Anything ambiguous is an error, never a guess: a proxy that frames a response differently from the backend can
 * be made to mix two responses (response splitting, desync).
 */

import { trimOws } from "../../core/ows.ts"

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

/** A field value holds only HTAB, SP, VCHAR and obs-text (no NUL, CR, LF or other controls, no DEL). */
const BAD_VALUE_CHAR = /[^\t\x20-\x7e\x80-\xff]/
/** tchar (RFC 9110 §5.6.2) by char code. */
const TCHAR = new Uint8Array(128)
for (const c of "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
  TCHAR[c.charCodeAt(0)] = 1
/**
 * Field names as backends spell them, by length, with their lower case: a backend sends the same few names in every
 * response, and comparing in place (startsWith) costs less than cutting the name out, hashing it and lower-casing
 * it. The lower-case names are internalized (the form V8 keys properties by). Names first seen in a response join
 * the table, up to MAX_NAMES (a backend sending ever new names stops filling it).
 */
const NAMES: [raw: string, lower: string][][] = []
let learned = 0
const MAX_NAMES = 256
const MAX_NAME_LENGTH = 40

function learn(raw: string, lower: string): void {
  // An object key is internalized: take the string back from it.
  const interned = Object.keys({ [lower]: 0 })[0]!
  const list = NAMES[raw.length]
  if (list === undefined) NAMES[raw.length] = [[raw, interned]]
  else list.push([raw, interned])
}
for (const name of [
  "Server",
  "Date",
  "Content-Type",
  "Content-Length",
  "Last-Modified",
  "Connection",
  "Keep-Alive",
  "ETag",
  "Accept-Ranges",
  "Cache-Control",
  "Expires",
  "Vary",
  "Location",
  "Set-Cookie",
  "Transfer-Encoding",
  "Content-Encoding",
]) {
  learn(name, name.toLowerCase())
  learn(name.toLowerCase(), name.toLowerCase())
}

/** nameAt: the lower case of the field name text[start, end) when it is a token; undefined when it is not. */
function nameAt(text: string, start: number, end: number): string | undefined {
  const length = end - start
  const known = NAMES[length]
  if (known !== undefined) {
    const first = text.charCodeAt(start)
    for (let i = 0; i < known.length; i++) {
      const entry = known[i]!
      if (entry[0].charCodeAt(0) === first && text.startsWith(entry[0], start)) return entry[1]
    }
  }
  if (length === 0) return undefined
  for (let i = start; i < end; i++) {
    const c = text.charCodeAt(i)
    if (c >= 128 || TCHAR[c] === 0) return undefined
  }
  const raw = text.slice(start, end)
  const lower = raw.toLowerCase()
  if (length <= MAX_NAME_LENGTH && learned < MAX_NAMES) {
    learned++
    learn(raw, lower)
  }
  return lower
}

/**
 * parseResponseHead parses the head in text (latin1, without the final empty line) for a request made with
 * method. Throws BackendProtocolError on anything llhttp in strict mode would refuse, and on conflicting framing.
 *
 * The common head (a valid status line, header lines `Name: value` with no control characters) is read by a scan
 * without a regular expression per line; anything it does not take goes to the strict parser (parseStrict), which
 * gives the same result for valid heads and the error for invalid ones.
 */
export function parseResponseHead(text: string, method: string): ResponseHead {
  return parseFast(text, method) ?? parseStrict(text, method)
}

/** parseFast: the scan; undefined for anything not plainly valid (parseStrict decides). */
function parseFast(text: string, method: string): ResponseHead | undefined {
  // An empty last line is not a head this scan reads whole.
  if (text.endsWith("\r\n")) return undefined
  // "HTTP/1.x NNN" then " reason" or nothing.
  let eol = text.indexOf("\r\n")
  if (eol === -1) eol = text.length
  if (eol < 12 || !text.startsWith("HTTP/1.") || text.charCodeAt(8) !== 32) return undefined
  const minor = text.charCodeAt(7)
  const d0 = text.charCodeAt(9) - 48
  const d1 = text.charCodeAt(10) - 48
  const d2 = text.charCodeAt(11) - 48
  if ((minor !== 48 && minor !== 49) || d0 < 1 || d0 > 9 || d1 < 0 || d1 > 9 || d2 < 0 || d2 > 9) return undefined
  let statusText = ""
  if (eol > 12) {
    if (text.charCodeAt(12) !== 32) return undefined
    statusText = text.slice(13, eol)
    if (BAD_VALUE_CHAR.test(statusText)) return undefined
  }
  const headers: Record<string, string | string[]> = {}
  let contentLength: string | undefined
  let transferEncoding: string | undefined
  let connection = ""
  let keepAliveHint: string | undefined
  let pos = eol + 2
  while (pos < text.length) {
    let end = text.indexOf("\r\n", pos)
    if (end === -1) end = text.length
    const colon = text.indexOf(":", pos)
    if (colon === -1 || colon >= end) return undefined
    const name = nameAt(text, pos, colon)
    if (name === undefined) return undefined
    let vs = colon + 1
    let ve = end
    while (vs < ve && (text.charCodeAt(vs) === 32 || text.charCodeAt(vs) === 9)) vs++
    while (ve > vs && (text.charCodeAt(ve - 1) === 32 || text.charCodeAt(ve - 1) === 9)) ve--
    const value = text.slice(vs, ve)
    if (BAD_VALUE_CHAR.test(value)) return undefined
    pos = end + 2
    addField(headers, name, value)
    if (name === "content-length") contentLength = contentLength === undefined ? value : `${contentLength},${value}`
    else if (name === "transfer-encoding")
      transferEncoding = transferEncoding === undefined ? value : `${transferEncoding},${value}`
    else if (name === "connection") connection += `,${value.toLowerCase()}`
    else if (name === "keep-alive") keepAliveHint = value
  }
  return finish(
    d0 * 100 + d1 * 10 + d2,
    minor === 48,
    statusText,
    headers,
    method,
    contentLength,
    transferEncoding,
    connection,
    keepAliveHint,
  )
}

/** parseStrict: the head line by line with regular expressions; throws BackendProtocolError on what it refuses. */
export function parseStrict(text: string, method: string): ResponseHead {
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
    addField(headers, name, value)
    if (name === "content-length") contentLength = contentLength === undefined ? value : `${contentLength},${value}`
    else if (name === "transfer-encoding")
      transferEncoding = transferEncoding === undefined ? value : `${transferEncoding},${value}`
    else if (name === "connection") connection += `,${value.toLowerCase()}`
    else if (name === "keep-alive") keepAliveHint = value
  }
  return finish(
    Number(status[2]),
    status[1] === "0",
    status[3] ?? "",
    headers,
    method,
    contentLength,
    transferEncoding,
    connection,
    keepAliveHint,
  )
}

/** finish decides the framing and keep-alive from what either parser read. */
function finish(
  code: number,
  http10: boolean,
  statusText: string,
  headers: Record<string, string | string[]>,
  method: string,
  contentLength: string | undefined,
  transferEncoding: string | undefined,
  connection: string,
  keepAliveHint: string | undefined,
): ResponseHead {
  let keepAlive = !http10 && !hasToken(connection, "close")
  let framing: Framing
  if (transferEncoding !== undefined && contentLength !== undefined) {
    throw new BackendProtocolError("both Transfer-Encoding and Content-Length", "HPE_UNEXPECTED_CONTENT_LENGTH")
  }
  if (method === "HEAD" || code < 200 || code === 204 || code === 304) {
    framing = { kind: "none" }
  } else if (transferEncoding !== undefined) {
    // Only "chunked" alone: any other coding would have to be the backend closing, which we do not guess at.
    if (trimOws(transferEncoding).toLowerCase() !== "chunked") {
      throw new BackendProtocolError("unsupported Transfer-Encoding", "HPE_INVALID_TRANSFER_ENCODING")
    }
    framing = { kind: "chunked" }
  } else if (contentLength !== undefined) {
    framing = { kind: "length", length: contentLengthOf(contentLength) }
  } else {
    framing = { kind: "close" }
    keepAlive = false
  }
  return {
    status: code,
    statusText,
    headers,
    framing,
    keepAlive,
    keepAliveTimeoutMs: keepAliveTimeout(keepAliveHint),
  }
}

/** contentLengthOf: one Content-Length, or the same one repeated (RFC 9110 §8.6); anything else is refused. */
function contentLengthOf(contentLength: string): number {
  if (DIGITS.test(contentLength)) return Number(contentLength)
  const values = contentLength.split(",").map(trimOws)
  if (!values.every((v) => DIGITS.test(v) && v === values[0])) {
    throw new BackendProtocolError("invalid or conflicting Content-Length", "HPE_INVALID_CONTENT_LENGTH")
  }
  return Number(values[0])
}

function hasToken(list: string, token: string): boolean {
  if (!list.includes(token)) return false
  for (const part of list.split(",")) if (trimOws(part) === token) return true
  return false
}

function keepAliveTimeout(hint: string | undefined): number | undefined {
  const m = hint && /(?:^|[,;\s])timeout=(\d+)/i.exec(hint)
  return m ? Number(m[1]) * 1000 : undefined
}

/**
 * addField adds one field line to a head's headers (a repeated name becomes a list). The object has Object's
 * prototype (fast property access for the common names), so a name a backend chose to match one of its members
 * (`constructor`, `toString`) is set as an own field rather than pushed onto the inherited function, and
 * `__proto__` (which an assignment cannot set as a field) is dropped: neither may fail the response.
 */
function addField(headers: Record<string, string | string[]>, name: string, value: string): void {
  const seen = headers[name]
  if (seen === undefined) headers[name] = value
  else if (typeof seen === "string") headers[name] = [seen, value]
  else if (Array.isArray(seen)) seen.push(value)
  // an inherited member (a function, or Object.prototype for __proto__): only the first case sets anything
  else headers[name] = value
}
