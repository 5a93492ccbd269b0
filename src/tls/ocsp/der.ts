/**
 * @module der: the little DER (X.690) an OCSP client needs: read one TLV at a time, write SEQUENCE/OCTET STRING/OID.
 * Hand-written rather than through @peculiar/asn1-schema: OCSP needs a dozen fields, and the raw bytes of some of
 * them (the signed tbsResponseData, a certificate's issuer Name) must be kept exactly as received.
 */
import { TlsError } from "../../core/errors.ts"

/** Tlv is one DER element: its tag byte, its content, and the whole element (tag, length, content) as received. */
export interface Tlv {
  tag: number
  value: Buffer
  raw: Buffer
}

export const TAG = {
  INTEGER: 0x02,
  BIT_STRING: 0x03,
  OCTET_STRING: 0x04,
  NULL: 0x05,
  OID: 0x06,
  ENUMERATED: 0x0a,
  SEQUENCE: 0x30,
  GENERALIZED_TIME: 0x18,
} as const

/** readTlv reads the element at `offset` of `buf`; throws PC_OCSP_DER on a truncated or indefinite-length one. */
export function readTlv(buf: Buffer, offset = 0): Tlv {
  if (offset + 2 > buf.length) throw derError("truncated element")
  const tag = buf[offset]!
  if ((tag & 0x1f) === 0x1f) throw derError("multi-byte tags are not used by OCSP")
  let length = buf[offset + 1]!
  let start = offset + 2
  if (length & 0x80) {
    const n = length & 0x7f
    if (n === 0 || n > 4 || start + n > buf.length) throw derError("bad length")
    length = 0
    for (let i = 0; i < n; i++) length = length * 256 + buf[start + i]!
    start += n
  }
  if (start + length > buf.length) throw derError("element longer than its container")
  return { tag, value: buf.subarray(start, start + length), raw: buf.subarray(offset, start + length) }
}

/** children lists the elements inside a constructed element's content. */
export function children(value: Buffer): Tlv[] {
  const out: Tlv[] = []
  let offset = 0
  while (offset < value.length) {
    const tlv = readTlv(value, offset)
    out.push(tlv)
    offset += tlv.raw.length
  }
  return out
}

/** expect checks an element's tag (what names it in the error). */
export function expect(tlv: Tlv | undefined, tag: number, what: string): Tlv {
  if (!tlv || tlv.tag !== tag) {
    throw derError(`${what}: expected tag 0x${tag.toString(16)}, got ${tlv ? `0x${tlv.tag.toString(16)}` : "nothing"}`)
  }
  return tlv
}

/** encode writes one element: tag, DER length, content. */
export function encode(tag: number, ...content: Buffer[]): Buffer {
  const value = Buffer.concat(content)
  const n = value.length
  let head: Buffer
  if (n < 0x80) head = Buffer.from([tag, n])
  else if (n < 0x100) head = Buffer.from([tag, 0x81, n])
  else if (n < 0x10000) head = Buffer.from([tag, 0x82, n >> 8, n & 0xff])
  else head = Buffer.from([tag, 0x83, n >> 16, (n >> 8) & 0xff, n & 0xff])
  return Buffer.concat([head, value])
}

/** oidText renders an OBJECT IDENTIFIER's content as dotted decimal. */
export function oidText(value: Buffer): string {
  const ids: number[] = []
  let n = 0
  for (const b of value) {
    n = n * 128 + (b & 0x7f)
    if (!(b & 0x80)) {
      ids.push(n)
      n = 0
    }
  }
  if (ids.length === 0) return ""
  // X.690 §8.19.4: the first subidentifier is 40 * arc1 + arc2 (arc1 is 0, 1 or 2).
  const first = ids[0]!
  const arc1 = first < 80 ? Math.floor(first / 40) : 2
  return [arc1, first - 40 * arc1, ...ids.slice(1)].join(".")
}

/** oid encodes dotted decimal as an OBJECT IDENTIFIER element. */
export function oid(dotted: string): Buffer {
  const parts = dotted.split(".").map(Number)
  const bytes: number[] = []
  for (const part of [parts[0]! * 40 + parts[1]!, ...parts.slice(2)]) {
    const groups = [part & 0x7f]
    let rest = Math.floor(part / 128)
    while (rest > 0) {
      groups.unshift((rest & 0x7f) | 0x80)
      rest = Math.floor(rest / 128)
    }
    bytes.push(...groups)
  }
  return encode(TAG.OID, Buffer.from(bytes))
}

/** generalizedTime reads a GeneralizedTime (YYYYMMDDHHMMSS[.fff]Z) as a Date. */
export function generalizedTime(tlv: Tlv): Date {
  const text = tlv.value.toString("latin1")
  const m = /^(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(?:\.(\d+))?Z$/.exec(text)
  if (tlv.tag !== TAG.GENERALIZED_TIME || !m) throw derError(`bad GeneralizedTime "${text}"`)
  const ms = m[7] ? Number(`0.${m[7]}`) * 1000 : 0
  return new Date(Date.UTC(+m[1]!, +m[2]! - 1, +m[3]!, +m[4]!, +m[5]!, +m[6]!, Math.round(ms)))
}

function derError(detail: string): TlsError {
  return new TlsError("PC_OCSP_DER", `reading DER: ${detail}`)
}
