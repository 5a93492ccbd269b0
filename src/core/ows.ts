/**
 * @module ows: trim a field value's optional whitespace, SP and HTAB only (RFC 9110 §5.6.3). String.prototype.trim
 * also takes CR, LF, NBSP (0xA0) and other Unicode spaces: a value of "\xa0chunked" would read as chunked to us and
 * as an unknown coding to llhttp, and "y\r" would hide a bare CR. Two readings of one message are how smuggling starts.
 */

/** trimOws: s without leading and trailing SP and HTAB. */
export function trimOws(s: string): string {
  let start = 0
  let end = s.length
  while (start < end && isOws(s.charCodeAt(start))) start++
  while (end > start && isOws(s.charCodeAt(end - 1))) end--
  return start === 0 && end === s.length ? s : s.slice(start, end)
}

function isOws(c: number): boolean {
  return c === 32 || c === 9
}
