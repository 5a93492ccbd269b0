/**
 * @module authority: the one authority (host[:port]) a request names, used both to route it and as the Host the
 * backend receives, so that Portcullis and the backend can never disagree on the host or the path (issue 14,
 * finding 3).
 */
import type { H1Request } from "./h1/h1-request.ts"
import type { H2Request } from "./h2-stream.ts"

/** Refusal: why a request's target or authority is refused with 400 (a preallocated constant per reason). */
export class Refusal {
  readonly reason: string
  constructor(reason: string) {
    this.reason = reason
  }
}

const MULTIPLE_HOST = new Refusal("more than one Host header")
const INVALID_HOST = new Refusal("invalid Host header")
const INVALID_TARGET = new Refusal("invalid request target")
const AUTHORITY_MISMATCH = new Refusal(":authority and host disagree")

/**
 * RFC 3986 §3.2.2-3.2.3 authority without userinfo (deprecated, RFC 9110 §4.2.4): IP-literal, IPv4 or reg-name
 * (unreserved, pct-encoded, sub-delims), then an optional port. Anything else ("a b", "a/b", "a@b") is invalid.
 */
const AUTHORITY = /^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]*)(?::[0-9]*)?$/
/** An absolute-form target (RFC 9112 §3.2.2) of the two schemes this proxy serves. */
const ABSOLUTE = /^https?:\/\//i

/**
 * h1Authority returns the authority of an HTTP/1.x request (undefined: an HTTP/1.0 request without Host), or a
 * Refusal. RFC 9112 §3.2: more than one Host, or an invalid one, is a 400. RFC 9112 §3.2.2: an absolute-form target
 * wins over Host; it is rewritten here to origin form (req.url), so that routing (path_prefix), the access log and
 * the backend all see the same path, and the backend gets the target's authority as Host. Any other target that
 * does not start with `/` is refused, `*` too unless the method is OPTIONS (RFC 9112 §3.2.4): a WebSocket upgrade
 * (a GET) with `GET * ` never reaches a backend. The engine runs it for ordinary requests and upgrades alike.
 */
export function h1Authority(req: H1Request): string | undefined | Refusal {
  const raw = req.rawHeaders
  let host: string | undefined
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!
    if (name.length === 4 && name.toLowerCase() === "host") {
      if (host !== undefined) return MULTIPLE_HOST
      host = raw[i + 1]!
    }
  }
  const url = req.url ?? "/"
  if (url.charCodeAt(0) !== 47 /* / */ && !(url === "*" && req.method === "OPTIONS")) {
    if (!ABSOLUTE.test(url)) return INVALID_TARGET
    const start = url.indexOf("//") + 2
    let end = start
    while (end < url.length) {
      const c = url.charCodeAt(end)
      if (c === 47 /* / */ || c === 63 /* ? */ || c === 35 /* # */) break
      end++
    }
    const authority = url.slice(start, end)
    if (authority.length === 0 || !AUTHORITY.test(authority)) return INVALID_TARGET
    const rest = url.slice(end)
    req.url = rest.charCodeAt(0) === 47 /* / */ ? rest : `/${rest}`
    return authority
  }
  if (host !== undefined && !AUTHORITY.test(host)) return INVALID_HOST
  return host
}

/**
 * h2Authority returns the authority of an HTTP/2 request: `:authority`, else the `host` field (RFC 9113 §8.3.1),
 * or a Refusal: both present and different (RFC 9113 §8.3.1 lets a server treat that as malformed; answered 400,
 * as HAProxy does), more than one `host`, or an invalid value; or a `:path` that breaks the rule h1Authority
 * applies (origin form, or `*` for OPTIONS; RFC 9113 §8.3.1). nghttp2 already resets most such streams (it checks
 * :path for requests and, in the Node 24 build, for RFC 8441 extended CONNECT); this is the same rule for any
 * that it lets through, so an extended CONNECT's :path reaches the router and the backend only in origin form.
 */
export function h2Authority(req: H2Request): string | undefined | Refusal {
  const raw = req.rawHeaders
  let authority: string | undefined
  let host: string | undefined
  let method: string | undefined
  let path: string | undefined
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!
    if (name === ":authority") authority = raw[i + 1]!
    else if (name === ":path") path = raw[i + 1]!
    else if (name === ":method") method = raw[i + 1]!
    else if (name === "host") {
      if (host !== undefined) return MULTIPLE_HOST
      host = raw[i + 1]!
    }
  }
  if (path !== undefined && path.charCodeAt(0) !== 47 /* / */ && !(path === "*" && method === "OPTIONS")) {
    return INVALID_TARGET
  }
  if (authority !== undefined && host !== undefined && authority.toLowerCase() !== host.toLowerCase()) {
    return AUTHORITY_MISMATCH
  }
  const value = authority ?? host
  if (value !== undefined && !AUTHORITY.test(value)) return INVALID_HOST
  return value
}
