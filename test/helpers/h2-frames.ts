/**
 * A raw HTTP/2 frame writer for tests that must send what no well-behaved client library sends: frames in any order,
 * with any flags, lengths and stream ids (RFC 9113 §4.1). Header blocks use HPACK literals without indexing and
 * without Huffman coding (RFC 7541 §6.2.2), so every block is self-contained.
 */
import tls from "node:tls"

export const FRAME = {
  DATA: 0x0,
  HEADERS: 0x1,
  PRIORITY: 0x2,
  RST_STREAM: 0x3,
  SETTINGS: 0x4,
  PUSH_PROMISE: 0x5,
  PING: 0x6,
  GOAWAY: 0x7,
  WINDOW_UPDATE: 0x8,
  CONTINUATION: 0x9,
} as const

export const FLAG = { END_STREAM: 0x1, ACK: 0x1, END_HEADERS: 0x4, PADDED: 0x8, PRIORITY: 0x20 } as const

export const PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "latin1")

/** frame encodes one frame: 9-byte header, then the payload. */
export function frame(type: number, flags: number, streamId: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const out = Buffer.alloc(9 + payload.length)
  out.writeUIntBE(payload.length, 0, 3)
  out[3] = type
  out[4] = flags
  out.writeUInt32BE(streamId >>> 0, 5)
  payload.copy(out, 9)
  return out
}

/** hpackInt encodes an HPACK integer with an N-bit prefix (RFC 7541 §5.1). */
function hpackInt(value: number, prefixBits: number, first: number): number[] {
  const max = (1 << prefixBits) - 1
  if (value < max) return [first | value]
  const out = [first | max]
  let rest = value - max
  while (rest >= 128) {
    out.push((rest % 128) + 128)
    rest = Math.floor(rest / 128)
  }
  out.push(rest)
  return out
}

/** headerBlock encodes [name, value] pairs as HPACK literals without indexing (new names, no Huffman). */
export function headerBlock(headers: ReadonlyArray<readonly [string, string]>): Buffer {
  const parts: Buffer[] = []
  for (const [name, value] of headers) {
    const n = Buffer.from(name, "latin1")
    const v = Buffer.from(value, "latin1")
    parts.push(Buffer.from([0x00]), Buffer.from(hpackInt(n.length, 7, 0)), n, Buffer.from(hpackInt(v.length, 7, 0)), v)
  }
  return Buffer.concat(parts)
}

/** requestHeaders is a request's pseudo-headers plus extra fields, in the order HTTP/2 wants. */
export function requestHeaders(
  method: string,
  path: string,
  authority: string,
  extra: ReadonlyArray<readonly [string, string]> = [],
): Array<readonly [string, string]> {
  return [[":method", method], [":scheme", "https"], [":path", path], [":authority", authority], ...extra]
}

export function u32(value: number): Buffer {
  const b = Buffer.alloc(4)
  b.writeUInt32BE(value >>> 0)
  return b
}

/** RawH2: one TLS connection (ALPN h2) that writes raw bytes and parses the frames the server sends back. */
export interface RawH2 {
  socket: tls.TLSSocket
  /** Frames received so far (type, flags, stream id, payload). */
  frames: Array<{ type: number; flags: number; streamId: number; payload: Buffer }>
  send: (...chunks: Buffer[]) => void
  /** closed resolves when the server closes the connection. */
  closed: Promise<void>
  /** waitFor resolves with the first frame matching, or undefined after timeoutMs. */
  waitFor: (
    match: (f: { type: number; flags: number; streamId: number; payload: Buffer }) => boolean,
    timeoutMs?: number,
  ) => Promise<{ type: number; flags: number; streamId: number; payload: Buffer } | undefined>
  close: () => void
}

/** connectRawH2 opens TLS with ALPN h2 and sends the client preface and an empty SETTINGS frame. */
export function connectRawH2(port: number, options: tls.ConnectionOptions = {}): Promise<RawH2> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({
      host: "127.0.0.1",
      port,
      servername: "localhost",
      ALPNProtocols: ["h2"],
      rejectUnauthorized: false,
      ...options,
    })
    const frames: RawH2["frames"] = []
    const waiters = new Set<() => void>()
    let pending = Buffer.alloc(0)
    socket.on("data", (chunk: Buffer) => {
      pending = Buffer.concat([pending, chunk])
      while (pending.length >= 9) {
        const length = pending.readUIntBE(0, 3)
        if (pending.length < 9 + length) break
        frames.push({
          type: pending[3]!,
          flags: pending[4]!,
          streamId: pending.readUInt32BE(5) & 0x7fffffff,
          payload: pending.subarray(9, 9 + length),
        })
        pending = pending.subarray(9 + length)
      }
      for (const w of waiters) w()
    })
    const closed = new Promise<void>((r) => socket.once("close", () => r()))
    socket.on("error", () => {})
    socket.once("secureConnect", () => {
      socket.write(Buffer.concat([PREFACE, frame(FRAME.SETTINGS, 0, 0)]))
      resolve({
        socket,
        frames,
        send: (...chunks) => {
          if (!socket.destroyed) socket.write(Buffer.concat(chunks))
        },
        closed,
        waitFor: (match, timeoutMs = 2_000) =>
          new Promise((resolveWait) => {
            const check = () => {
              const found = frames.find(match)
              if (found) done(found)
            }
            const done = (found: RawH2["frames"][number] | undefined) => {
              waiters.delete(check)
              clearTimeout(timer)
              resolveWait(found)
            }
            const timer = setTimeout(() => done(undefined), timeoutMs)
            socket.once("close", () => done(frames.find(match)))
            waiters.add(check)
            check()
          }),
        close: () => socket.destroy(),
      })
    })
    socket.once("error", reject)
  })
}

/** HPACK static table entries 8-14 (RFC 7541 Appendix A): the :status values a response head can index. */
const STATIC_STATUS: Record<number, number> = { 8: 200, 9: 204, 10: 206, 11: 304, 12: 400, 13: 404, 14: 500 }

/**
 * responseStatus reads :status from a response header block when it is the first field, as nghttp2 writes it:
 * an indexed static entry, or a literal (any indexing mode) with name index 8-14 and a raw (non-Huffman) value.
 * Undefined when the block starts otherwise.
 */
export function responseStatus(block: Buffer): number | undefined {
  const first = block[0]
  if (first === undefined) return undefined
  if (first & 0x80) return STATIC_STATUS[first & 0x7f]
  const nameIndex = first & 0x40 ? first & 0x3f : first & 0x0f
  if (nameIndex < 8 || nameIndex > 14) return undefined
  const length = block[1]
  if (length === undefined || length & 0x80) return undefined
  return Number(block.subarray(2, 2 + length).toString("latin1"))
}

/** GOAWAY payload: last stream id and error code (RFC 9113 §6.8). */
export function goawayOf(payload: Buffer): { lastStreamId: number; code: number } {
  return { lastStreamId: payload.readUInt32BE(0) & 0x7fffffff, code: payload.readUInt32BE(4) }
}

/** RFC 9113 §7 error codes. */
export const ERROR = {
  NO_ERROR: 0x0,
  PROTOCOL_ERROR: 0x1,
  INTERNAL_ERROR: 0x2,
  FLOW_CONTROL_ERROR: 0x3,
  SETTINGS_TIMEOUT: 0x4,
  STREAM_CLOSED: 0x5,
  FRAME_SIZE_ERROR: 0x6,
  REFUSED_STREAM: 0x7,
  CANCEL: 0x8,
  COMPRESSION_ERROR: 0x9,
  ENHANCE_YOUR_CALM: 0xb,
} as const
