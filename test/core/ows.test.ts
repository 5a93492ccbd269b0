import assert from "node:assert/strict"
import { test } from "node:test"
import { trimOws } from "../../src/core/ows.ts"

test("trimOws takes SP and HTAB from both ends, and nothing else", () => {
  assert.equal(trimOws(" \tchunked\t "), "chunked")
  assert.equal(trimOws("a b"), "a b")
  assert.equal(trimOws(""), "")
  assert.equal(trimOws(" \t "), "")
  // What String.prototype.trim takes and OWS is not (RFC 9110 §5.6.3): CR, LF, NBSP, VT, FF, U+2028.
  for (const c of ["\r", "\n", "\xa0", "\v", "\f", "\u2028"]) {
    assert.equal(trimOws(`${c}x${c}`), `${c}x${c}`, JSON.stringify(c))
  }
})
