/** @module forwarded: the X-Forwarded-* and RFC 7239 Forwarded values added to each proxied request. */
import { isIPv6 } from "node:net"

/**
 * forwardedFor renders a client address as an RFC 7239 node: IPv6 quoted and bracketed. Only a string with a colon
 * can be IPv6: an IPv4 client skips isIPv6's long regular expression (≈0.5% of a W5 profile, once per connection).
 */
export function forwardedNode(address: string): string {
  return address.includes(":") && isIPv6(address) ? `"[${address}]"` : address
}

/** quoteIfNeeded makes a token or a quoted-string for a Forwarded parameter value (RFC 7239 §4). */
function quoteIfNeeded(value: string): string {
  return /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(value) ? value : `"${value.replace(/["\\]/g, "\\$&")}"`
}

/** forwardedElement builds one Forwarded element: for=client;host=...;proto=https. */
export function forwardedElement(client: string, host: string | undefined, proto: string): string {
  let element = `for=${forwardedNode(client)}`
  if (host) element += `;host=${quoteIfNeeded(host)}`
  return `${element};proto=${proto}`
}
