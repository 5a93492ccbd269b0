/**
 * @module request-head: a strict parser for a client's HTTP/1.1 request head (RFC 9112 §2-§6), as strict as llhttp
 * in node:http's default (non-lenient) mode, and in a few places stricter (one SP between the request-line parts,
 * versions 1.0 and 1.1 only). Anything ambiguous is refused, never guessed at: a proxy that frames a request
 * differently from its backend can be made to smuggle one (test/hostile/h1-smuggling.test.ts).
 */
import { METHODS } from "node:http"
import { ClientError } from "../../../core/errors.ts"
import { trimOws } from "../../../core/ows.ts"

/** RequestParseError: the client's bytes are not a request we can frame; code as llhttp's (HPE_*), mapped by failure.ts. */
export class RequestParseError extends ClientError {}

/** The methods llhttp accepts in a request line (node:http's METHODS; PRI is the HTTP/2 preface, refused). */
const KNOWN_METHODS: ReadonlySet<string> = new Set(METHODS.filter((m) => m !== "PRI"))

/** tchar (RFC 9110 §5.6.2) by char code. */
const TCHAR = new Uint8Array(256)
for (const c of "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
  TCHAR[c.charCodeAt(0)] = 1
/** A field value holds HTAB, SP, VCHAR and obs-text only (RFC 9110 §5.5): no NUL, CR, LF, other controls or DEL. */
const VALUE_CHAR = new Uint8Array(256)
VALUE_CHAR[9] = 1
for (let c = 0x20; c < 0x7f; c++) VALUE_CHAR[c] = 1
for (let c = 0x80; c < 0x100; c++) VALUE_CHAR[c] = 1
const DIGITS = /^\d{1,15}$/
/** llhttp's absolute form: a scheme of letters only (RFC 3986 would also take digits, "+", "-" and "."), then "://". */
const ABSOLUTE = /^[A-Za-z]+:\/\//
/** Characters llhttp refuses in a target's authority (before its first "/" or "?"), besides "@@". */
const NOT_IN_AUTHORITY = new Uint8Array(128)
for (const c of '"#<>\\^`{|}') NOT_IN_AUTHORITY[c.charCodeAt(0)] = 1

/** RequestHead: what one request head says. `raw` is [name, value, ...] as sent (Node's rawHeaders). */
export interface RequestHead {
  method: string
  url: string
  /** 0: HTTP/1.0, 1: HTTP/1.1. */
  minor: number
  raw: string[]
  /** The body's length; -1 when it is chunked or there is none. */
  contentLength: number
  chunked: boolean
  /** The client lets the connection carry another request after this one (RFC 9112 §9.3). */
  keepAlive: boolean
  /** An Upgrade request (Upgrade and Connection: upgrade), or CONNECT: the connection leaves HTTP after it. */
  upgrade: boolean
  /** The Expect field, as sent (several joined); undefined when absent. */
  expect: string | undefined
  /** Host fields seen. */
  hosts: number
}

function fail(message: string, code: string): never {
  throw new RequestParseError(code, `request head: ${message}`)
}

/**
 * The authority of an absolute-form or CONNECT target, from `from` up to its first "/" or "?", holds none of the
 * characters llhttp refuses there and no "@@": a backend on node:http would refuse what we let through, and two
 * readings of one request are where smuggling starts.
 */
function checkAuthority(url: string, from: number): void {
  for (let i = from; i < url.length; i++) {
    const c = url.charCodeAt(i)
    if (c === 47 || c === 63) return
    if (NOT_IN_AUTHORITY[c] === 1 || (c === 64 && url.charCodeAt(i + 1) === 64)) {
      fail("invalid character in the target's authority", "HPE_INVALID_URL")
    }
  }
}

/**
 * parseRequestHead parses text (latin1: the request line and field lines, CRLF-separated, without the empty line that
 * ends the head; leading empty lines skipped, as RFC 9112 §2.2 allows). Throws RequestParseError with llhttp's code.
 */
export function parseRequestHead(text: string): RequestHead {
  let pos = 0
  // RFC 9112 §2.2: a server SHOULD ignore at least one empty line (CRLF) received prior to the request-line.
  while (text.charCodeAt(pos) === 13 && text.charCodeAt(pos + 1) === 10) pos += 2
  let eol = text.indexOf("\r\n", pos)
  if (eol === -1) eol = text.length
  // request-line = method SP request-target SP HTTP-version (RFC 9112 §3)
  const sp1 = text.indexOf(" ", pos)
  if (sp1 <= pos || sp1 >= eol) fail("invalid method", "HPE_INVALID_METHOD")
  const method = text.slice(pos, sp1)
  if (!KNOWN_METHODS.has(method)) {
    fail("invalid method", method === "PRI" ? "HPE_PAUSED_H2_UPGRADE" : "HPE_INVALID_METHOD")
  }
  let i = sp1 + 1
  const targetStart = i
  for (; i < eol; i++) {
    const c = text.charCodeAt(i)
    if (c === 32) break
    // llhttp strict: the target is visible ASCII only (no controls, DEL, obs-text or a second space).
    if (c < 0x21 || c > 0x7e) fail("invalid character in the target", "HPE_INVALID_URL")
  }
  if (i === targetStart || i >= eol) fail("invalid request target", "HPE_INVALID_URL")
  const url = text.slice(targetStart, i)
  // RFC 9112 §3.2: origin form (/...), asterisk form (*), absolute form (scheme://...); authority form only for
  // CONNECT. llhttp refuses any other start; authority.ts then narrows what may reach a backend.
  if (url.charCodeAt(0) !== 47 && url !== "*") {
    if (method === "CONNECT") checkAuthority(url, 0)
    else if (ABSOLUTE.test(url)) checkAuthority(url, url.indexOf(":") + 3)
    else fail("invalid request target", "HPE_INVALID_URL")
  }
  // "HTTP/1.0" or "HTTP/1.1", then the line ends.
  if (eol - i !== 9 || !text.startsWith(" HTTP/1.", i)) fail("invalid HTTP version", "HPE_INVALID_VERSION")
  const minorChar = text.charCodeAt(i + 8)
  if (minorChar !== 48 && minorChar !== 49) fail("invalid HTTP version", "HPE_INVALID_VERSION")
  const minor = minorChar - 48

  const raw: string[] = []
  let contentLength = -1
  let sawLength = false
  let codings: string | undefined
  let connection: string | undefined
  let upgradeField = false
  let expect: string | undefined
  let hosts = 0
  pos = eol + 2
  while (pos < text.length) {
    let end = text.indexOf("\r\n", pos)
    if (end === -1) end = text.length
    // field-line = field-name ":" OWS field-value OWS; no obs-fold (a line starting with SP or HTAB), no space
    // before the colon (RFC 9112 §5.1, §5.2).
    let colon = pos
    for (; colon < end; colon++) {
      const c = text.charCodeAt(colon)
      if (c === 58) break
      if (TCHAR[c] !== 1) fail("invalid header name", "HPE_INVALID_HEADER_TOKEN")
    }
    if (colon === pos || colon === end) fail("invalid header line", "HPE_INVALID_HEADER_TOKEN")
    let vs = colon + 1
    let ve = end
    for (let j = vs; j < ve; j++) {
      if (VALUE_CHAR[text.charCodeAt(j)] !== 1) fail("invalid header value", "HPE_INVALID_HEADER_TOKEN")
    }
    while (vs < ve && (text.charCodeAt(vs) === 32 || text.charCodeAt(vs) === 9)) vs++
    while (ve > vs && (text.charCodeAt(ve - 1) === 32 || text.charCodeAt(ve - 1) === 9)) ve--
    const name = text.slice(pos, colon)
    const value = text.slice(vs, ve)
    raw.push(name, value)
    pos = end + 2
    switch (name.length) {
      case 4:
        if (sameName(name, "host")) hosts++
        break
      case 6:
        if (sameName(name, "expect")) expect = expect === undefined ? value : `${expect}, ${value}`
        break
      case 7:
        if (sameName(name, "upgrade")) upgradeField = true
        break
      case 10:
        if (sameName(name, "connection")) connection = connection === undefined ? value : `${connection},${value}`
        break
      case 14:
        if (sameName(name, "content-length")) {
          // llhttp refuses a second Content-Length even when equal (RFC 9110 §8.6 lets a recipient refuse).
          if (sawLength) fail("more than one Content-Length", "HPE_UNEXPECTED_CONTENT_LENGTH")
          sawLength = true
          if (!DIGITS.test(value)) fail("invalid Content-Length", "HPE_INVALID_CONTENT_LENGTH")
          contentLength = Number(value)
        }
        break
      case 17:
        if (sameName(name, "transfer-encoding")) {
          // llhttp takes no HTAB after the first coding ("chunked\t" is refused, "chunked " is not): a backend on
          // llhttp would refuse what we framed as chunked, so refuse it here too (the field's OWS trimmed above
          // would hide it from finalChunked).
          const tab = text.indexOf("\t", vs)
          if (tab !== -1 && tab < end) fail("invalid Transfer-Encoding", "HPE_INVALID_TRANSFER_ENCODING")
          codings = codings === undefined ? value : `${codings},${value}`
        }
        break
    }
  }
  let chunked = false
  if (codings !== undefined) {
    // RFC 9112 §6.1: chunked must be the final coding, applied once; any other final coding leaves the length
    // unknown, which a request cannot have (§6.3). With Content-Length too: refused (§6.3 item 3, llhttp strict).
    chunked = finalChunked(codings)
    if (!chunked || sawLength) fail("invalid Transfer-Encoding", "HPE_INVALID_TRANSFER_ENCODING")
    contentLength = -1
  }
  let keepAlive = minor === 1
  let upgradeToken = false
  if (connection !== undefined) {
    for (const part of connection.split(",")) {
      const token = trimOws(part).toLowerCase()
      if (token === "close") keepAlive = false
      else if (token === "keep-alive" && minor === 0) keepAlive = true
      else if (token === "upgrade") upgradeToken = true
    }
    // close wins over keep-alive whatever their order.
    if (keepAlive && minor === 0 && hasToken(connection, "close")) keepAlive = false
  }
  return {
    method,
    url,
    minor,
    raw,
    contentLength,
    chunked,
    keepAlive,
    upgrade: method === "CONNECT" || (upgradeField && upgradeToken),
    expect,
    hosts,
  }
}

/** sameName: name (any case) is lower, which is lower case and of the same length. */
function sameName(name: string, lower: string): boolean {
  for (let i = 0; i < lower.length; i++) {
    if ((name.charCodeAt(i) | 0x20) !== lower.charCodeAt(i)) return false
  }
  return true
}

/** finalChunked: the coding list is well formed, ends with chunked, and names chunked only there. */
function finalChunked(codings: string): boolean {
  const parts = codings.split(",")
  for (let i = 0; i < parts.length; i++) {
    const coding = trimOws(parts[i]!).toLowerCase()
    // A coding is a token, maybe with parameters; chunked takes none.
    const semi = coding.indexOf(";")
    const name = semi === -1 ? coding : trimOws(coding.slice(0, semi))
    if (name.length === 0) return false
    for (let j = 0; j < name.length; j++) if (TCHAR[name.charCodeAt(j)] !== 1) return false
    if (name === "chunked") {
      if (i !== parts.length - 1 || semi !== -1) return false
    } else if (i === parts.length - 1) return false
  }
  return true
}

function hasToken(list: string, token: string): boolean {
  for (const part of list.split(",")) if (trimOws(part).toLowerCase() === token) return true
  return false
}
