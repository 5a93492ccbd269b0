/** The HTTP/2 fuzzer's cases (fuzz-h2.test.ts, and npm run soak in the background): one random frame sequence each. */
import { connectRawH2, FLAG, FRAME, frame, headerBlock, requestHeaders, u32 } from "../helpers/h2-frames.ts"
import type { Rng } from "./fuzz.ts"

const TYPES = [
  FRAME.HEADERS,
  FRAME.HEADERS,
  FRAME.DATA,
  FRAME.DATA,
  FRAME.RST_STREAM,
  FRAME.WINDOW_UPDATE,
  FRAME.PRIORITY,
  FRAME.SETTINGS,
  FRAME.GOAWAY,
  FRAME.CONTINUATION,
  FRAME.PING,
  0x0a, // unknown types are to be ignored (RFC 9113 §4.1)
]
const PATHS = ["/", "/echo", "/bytes?n=70000", "/slow?ms=20", "/upload", "/status/503", "/reset", "/half?n=100"]

function streamId(rng: Rng, last: number): number {
  return rng.pick([0, 1, 3, 5, last, last + 2, last - 2, rng.int(64) * 2 + 1, rng.int(64) * 2, 0x7fffffff])
}

function headers(rng: Rng): Buffer {
  const method = rng.pick(["GET", "POST", "HEAD", "PUT", "CONNECT", "OPTIONS", "get", ""])
  const extra: Array<[string, string]> = []
  if (rng.chance(0.3)) extra.push(["content-length", rng.pick(["0", "5", "100000", "-1", "x"])])
  if (rng.chance(0.1)) extra.push(["host", rng.pick(["localhost", "other", "a b"])])
  if (rng.chance(0.1)) extra.push(["connection", "close"])
  if (rng.chance(0.1)) extra.push(["te", rng.pick(["trailers", "gzip"])])
  if (rng.chance(0.1)) extra.push([rng.pick(["X-Upper", ":bogus", "a\0b", ""]), "v"])
  let fields = requestHeaders(method, rng.pick(PATHS), rng.pick(["localhost", "LOCALHOST:443", ""]), extra)
  if (rng.chance(0.15)) fields = fields.filter(() => rng.chance(0.7))
  if (rng.chance(0.1)) fields = [...fields].reverse()
  return headerBlock(fields)
}

function payload(rng: Rng, type: number, id: number): Buffer {
  switch (type) {
    case FRAME.HEADERS:
    case FRAME.CONTINUATION: {
      const block = headers(rng)
      return rng.chance(0.2) ? block.subarray(0, rng.int(block.length + 1)) : block
    }
    case FRAME.DATA:
      return rng.bytes(rng.pick([0, 1, 5, 100, 1000, 16_384]))
    case FRAME.RST_STREAM:
      return u32(rng.pick([0, 1, 2, 5, 8, 0xb, rng.int(2 ** 32)]))
    case FRAME.WINDOW_UPDATE:
      return u32(rng.pick([0, 1, 65_535, 2 ** 31 - 1, 2 ** 31, rng.int(2 ** 32)]))
    case FRAME.PRIORITY:
      return Buffer.concat([u32(rng.pick([0, id, id + 2, rng.int(2 ** 32)])), Buffer.from([rng.int(256)])])
    case FRAME.SETTINGS: {
      const parts: Buffer[] = []
      for (let i = rng.int(4); i > 0; i--) {
        const b = Buffer.alloc(6)
        b.writeUInt16BE(rng.pick([1, 2, 3, 4, 5, 6, 8, 9, rng.int(65_536)]))
        b.writeUInt32BE(rng.pick([0, 1, 100, 16_384, 65_535, 2 ** 24, 2 ** 31 - 1, 2 ** 31, rng.int(2 ** 32)]) >>> 0, 2)
        parts.push(b)
      }
      return Buffer.concat(parts)
    }
    case FRAME.GOAWAY:
      return Buffer.concat([u32(rng.int(100)), u32(rng.pick([0, 1, 2, 0xb]))])
    case FRAME.PING:
      return rng.bytes(8)
    default:
      return rng.bytes(rng.int(20))
  }
}

/** fuzzFrame makes one frame; sometimes with a declared length that lies about the payload. */
function fuzzFrame(rng: Rng, last: number): { bytes: Buffer; id: number; type: number } {
  const type = rng.pick(TYPES)
  const id = streamId(rng, last)
  let flags = rng.chance(0.6)
    ? rng.pick([0, FLAG.END_STREAM, FLAG.END_HEADERS, FLAG.END_STREAM | FLAG.END_HEADERS, FLAG.ACK])
    : rng.int(256)
  let body = payload(rng, type, id)
  if (flags & FLAG.PADDED && (type === FRAME.DATA || type === FRAME.HEADERS) && rng.chance(0.5)) {
    body = Buffer.concat([Buffer.from([rng.int(body.length + 2)]), body])
  } else if (rng.chance(0.8)) flags &= ~FLAG.PADDED
  if (rng.chance(0.8)) flags &= ~FLAG.PRIORITY
  const bytes = frame(type, flags, id, body)
  if (rng.chance(0.05)) bytes.writeUIntBE(rng.int(2 ** 24), 0, 3) // a length that lies
  return { bytes, id, type }
}

/** h2Case sends one random frame sequence on a new HTTP/2 connection, then a PING whose ACK marks the end. */
export async function h2Case(rng: Rng, port: number): Promise<void> {
  const h2 = await connectRawH2(port)
  h2.socket.setNoDelay(true)
  try {
    let last = 1
    const frames: Buffer[] = []
    for (let n = 1 + rng.int(12); n > 0; n--) {
      // Mostly a well-formed request to build on, then noise.
      const f =
        frames.length === 0 && rng.chance(0.7)
          ? {
              bytes: frame(FRAME.HEADERS, FLAG.END_HEADERS | (rng.chance(0.5) ? FLAG.END_STREAM : 0), 1, headers(rng)),
              id: 1,
              type: 1,
            }
          : fuzzFrame(rng, last)
      if (f.type === FRAME.HEADERS && f.id > last) last = f.id
      frames.push(f.bytes)
    }
    // Sent in one write or in pieces.
    if (rng.chance(0.5)) h2.send(...frames)
    else for (const f of frames) h2.send(f)
    // The server answers a PING after everything before it: its ACK (or the connection's end) marks the case done.
    const probe = Buffer.from("fuzzdone")
    h2.send(frame(FRAME.PING, 0, 0, probe))
    await h2.waitFor((f) => f.type === FRAME.PING && !!(f.flags & FLAG.ACK) && f.payload.equals(probe), 2_000)
  } finally {
    h2.close()
  }
}
