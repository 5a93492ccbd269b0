/**
 * @module bytes: write strings into a Buffer at an offset, for heads and log lines built in place. Buffer.write
 * checks its offset through a validator that allocates an argument list on every call (node:internal/errors
 * hideStackFrames); these call Buffer's own latin1Write and utf8Write (on Buffer.prototype since Node 0.x, what
 * Buffer.write calls after its checks), whose bounds are checked in C++. Callers size the buffer first.
 */

interface StringWriter {
  latin1Write(s: string, offset: number): number
  utf8Write(s: string, offset: number): number
}

/** putLatin1 writes s, one byte per character (ASCII, or a head's latin1 text), at o; returns the offset after it. */
export function putLatin1(buf: Buffer, o: number, s: string): number {
  return o + (buf as unknown as StringWriter).latin1Write(s, o)
}

/** putUtf8 writes s as UTF-8 at o; returns the offset after it. */
export function putUtf8(buf: Buffer, o: number, s: string): number {
  return o + (buf as unknown as StringWriter).utf8Write(s, o)
}

/** putField writes a head's field line, `name: value` CRLF (latin1, checked by the caller), at o; returns the offset after it. */
export function putField(buf: Buffer, o: number, name: string, value: string): number {
  o = putLatin1(buf, o, name)
  buf[o++] = 58 // :
  buf[o++] = 32
  o = putLatin1(buf, o, value)
  buf[o++] = 13
  buf[o++] = 10
  return o
}
