/** Decodes a PROXY v2 header (and its TLVs, SSL sub-TLVs included) into a plain object for assertions; uses src's parser. */
import { type ProxyHeader, parseV2 } from "../../src/protocols/proxy-protocol/parse.ts"

export type { ProxyHeader } from "../../src/protocols/proxy-protocol/parse.ts"

/** DecodedProxyV2 is the header plus the bytes that followed it. */
export interface DecodedProxyV2 {
  header: ProxyHeader
  length: number
  rest: Buffer
}

/** decodeProxyV2 decodes a complete v2 header at the start of buf; throws if it is incomplete or invalid. */
export function decodeProxyV2(buf: Buffer): DecodedProxyV2 {
  const parsed = parseV2(buf, 16 + 0xffff)
  if (!parsed) throw new Error(`decodeProxyV2: incomplete header (${buf.length} bytes)`)
  return { header: parsed.header, length: parsed.length, rest: buf.subarray(parsed.length) }
}
