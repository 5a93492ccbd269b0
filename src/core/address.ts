/** @module address: small helpers for socket addresses. */

/** unmapIPv4 turns "::ffff:127.0.0.1" into "127.0.0.1" so logs and headers show the address people expect. */
export function unmapIPv4(address: string | undefined): string {
  if (!address) return ""
  return address.startsWith("::ffff:") && address.includes(".") ? address.slice(7) : address
}
