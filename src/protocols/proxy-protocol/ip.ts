/** @module ip: allocation-light parsers for IPv4 and IPv6 text, used by the CIDR matcher and the PROXY header encoder. */

/** parseIPv4 reads a dotted quad (no leading zeros) as an unsigned 32-bit number, or -1. */
export function parseIPv4(s: string): number {
  let value = 0
  let part = 0
  let digits = 0
  let dots = 0
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    if (c === 46) {
      if (digits === 0 || dots === 3) return -1
      value = value * 256 + part
      part = 0
      digits = 0
      dots++
    } else if (c >= 48 && c <= 57) {
      if (digits > 0 && part === 0) return -1 // a leading zero
      part = part * 10 + (c - 48)
      if (++digits > 3 || part > 255) return -1
    } else {
      return -1
    }
  }
  if (dots !== 3 || digits === 0) return -1
  return value * 256 + part
}

/** parseIPv6 reads IPv6 text (with "::", an embedded IPv4 tail and a "%zone", which is ignored) as 8 groups, or undefined. */
export function parseIPv6(s: string): number[] | undefined {
  const zone = s.indexOf("%")
  if (zone !== -1) s = s.slice(0, zone)
  const groups: number[] = []
  let gap = -1
  const parts = s.split(":")
  let start = 0
  let end = parts.length
  // "::" at either end leaves an empty first/last part beside the empty gap part.
  if (s.startsWith("::")) start = 1
  else if (s.startsWith(":")) return undefined
  if (s.endsWith("::")) end = parts.length - 1
  else if (s.endsWith(":")) return undefined
  for (let i = start; i < end; i++) {
    const part = parts[i]!
    if (part === "") {
      if (gap !== -1) return undefined
      gap = groups.length
      continue
    }
    if (i === end - 1 && part.indexOf(".") !== -1) {
      const v4 = parseIPv4(part)
      if (v4 < 0) return undefined
      groups.push(v4 >>> 16, v4 & 0xffff)
      continue
    }
    if (part.length > 4) return undefined
    let g = 0
    for (let j = 0; j < part.length; j++) {
      const c = part.charCodeAt(j)
      const d = c >= 48 && c <= 57 ? c - 48 : c >= 97 && c <= 102 ? c - 87 : c >= 65 && c <= 70 ? c - 55 : -1
      if (d < 0) return undefined
      g = g * 16 + d
    }
    groups.push(g)
  }
  if (gap === -1 ? groups.length !== 8 : groups.length > 7) return undefined
  const full = new Array<number>(8).fill(0)
  if (gap === -1) {
    for (let i = 0; i < 8; i++) full[i] = groups[i]!
  } else {
    for (let i = 0; i < gap; i++) full[i] = groups[i]!
    const tail = groups.length - gap
    for (let i = 0; i < tail; i++) full[8 - tail + i] = groups[gap + i]!
  }
  return full
}
