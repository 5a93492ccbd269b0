/** @module trusted: matches peer addresses against trusted CIDR blocks (PROXY headers, X-Forwarded-*), compiled once. */
import { isIP } from "node:net"
import { PortcullisError } from "../../core/errors.ts"
import { parseIPv4, parseIPv6 } from "../../protocols/proxy-protocol/ip.ts"

/**
 * Addresses are compared as 128-bit IPv6 values held in four 32-bit words: an IPv4 address a.b.c.d is the
 * IPv4-mapped ::ffff:a.b.c.d (RFC 4291 §2.5.5.2), so "127.0.0.1", "::ffff:127.0.0.1" and the rules
 * "127.0.0.0/8" and "::ffff:127.0.0.0/104" all match each other.
 */
interface Rule {
  /** The network's four words, already masked. */
  net: Uint32Array
  /** The mask's four words. */
  mask: Uint32Array
}

/** compileCidrs turns addresses and CIDR blocks ("10.0.0.0/8", "::1", "fd00::/8") into a fast matcher; throws on a bad entry. */
export function compileCidrs(cidrs: readonly string[]): (address: string) => boolean {
  const rules: Rule[] = []
  for (const cidr of cidrs) rules.push(compileRule(cidr))
  if (rules.length === 0) return never
  const words = new Uint32Array(4)
  return (address: string): boolean => {
    if (!parseAddress(address, words)) return false
    for (let i = 0; i < rules.length; i++) {
      const { net, mask } = rules[i]!
      if (
        (words[0]! & mask[0]!) >>> 0 === net[0] &&
        (words[1]! & mask[1]!) >>> 0 === net[1] &&
        (words[2]! & mask[2]!) >>> 0 === net[2] &&
        (words[3]! & mask[3]!) >>> 0 === net[3]
      ) {
        return true
      }
    }
    return false
  }
}

/** isTrustedPeer says whether address (IPv4, IPv6 or IPv4-mapped IPv6) is in one of cidrs; compile once with compileCidrs on hot paths. */
export function isTrustedPeer(address: string, cidrs: readonly string[]): boolean {
  return compileCidrs(cidrs)(address)
}

function never(): boolean {
  return false
}

function compileRule(cidr: string): Rule {
  const slash = cidr.indexOf("/")
  const addr = slash === -1 ? cidr : cidr.slice(0, slash)
  const family = isIP(addr)
  const net = new Uint32Array(4)
  if (family === 0 || addr.includes("%") || !parseAddress(addr, net)) throw badCidr(cidr)
  const max = family === 4 ? 32 : 128
  let bits = max
  if (slash !== -1) {
    const text = cidr.slice(slash + 1)
    if (!/^(0|[1-9][0-9]{0,2})$/.test(text)) throw badCidr(cidr)
    bits = Number(text)
    if (bits > max) throw badCidr(cidr)
  }
  if (family === 4) bits += 96
  const mask = new Uint32Array(4)
  for (let i = 0; i < 4; i++) {
    const take = Math.min(32, Math.max(0, bits - i * 32))
    mask[i] = take === 0 ? 0 : (0xffffffff << (32 - take)) >>> 0
    net[i] = (net[i]! & mask[i]!) >>> 0
  }
  return { net, mask }
}

function badCidr(cidr: string): PortcullisError {
  return new PortcullisError(
    "PC_CONFIG_INVALID",
    `trusted proxies: expected an address or CIDR block, got ${JSON.stringify(cidr)}`,
    {
      source: "config",
    },
  )
}

/** parseAddress writes address as four IPv6 words into out; false when it is not an IP address. */
function parseAddress(address: string, out: Uint32Array): boolean {
  if (address.indexOf(":") === -1) {
    const v4 = parseIPv4(address)
    if (v4 < 0) return false
    out[0] = 0
    out[1] = 0
    out[2] = 0xffff
    out[3] = v4
    return true
  }
  const groups = parseIPv6(address)
  if (!groups) return false
  for (let i = 0; i < 4; i++) out[i] = ((groups[2 * i]! << 16) | groups[2 * i + 1]!) >>> 0
  return true
}
