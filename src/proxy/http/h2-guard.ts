/**
 * @module h2-guard: a frame-level check between the decrypted socket and Node's HTTP/2 session, for the protocol
 * errors nghttp2 (as Node 24 uses it) leaves unanswered or answers wrongly (RFC 9113; issue 14, finding 9).
 *
 * Why here and not by options or events: none of these cases has a knob. Node exposes no per-frame receive hook
 * (the session's 'frameError' is for frames it failed to send), and its options (settings, maxSessionInvalidFrames,
 * maxSessionRejectedStreams, ...) do not change them. Measured on a bare http2.createSecureServer, Node 24.21:
 * - DATA or HEADERS on a stream the client reset or closed: ignored, nothing sent (nghttp2 forgets closed streams
 *   and deliberately ignores late HEADERS). RFC 9113 §5.1 and §6.1: STREAM_CLOSED.
 * - HEADERS with a stream id lower than one already used: ignored. RFC 9113 §5.1.1: connection error PROTOCOL_ERROR.
 * - PRIORITY on stream 0, or depending on its own stream: ignored (RFC 7540 priorities are off). RFC 9113 §6.3,
 *   §5.3.1: PROTOCOL_ERROR.
 * - an unsolicited PING ACK: Node treats it as a session error and closes the connection. It is to be ignored.
 * - WINDOW_UPDATE taking a stream's window past 2^31-1: nghttp2 ends the connection (GOAWAY FLOW_CONTROL_ERROR).
 *   RFC 9113 §6.9.1: a stream error; the connection stays.
 * So the guard reads the client's frame headers (and the few bytes of small control frames), keeps per-stream state
 * (who may still send, the send window), reads the headers of the frames the session writes (END_STREAM, RST_STREAM,
 * DATA lengths, PINGs), and answers those cases itself: Node's stream.close(code) for a stream the session knows, a
 * raw RST_STREAM between the session's frames for one it has forgotten, session.destroy(code) (GOAWAY) for a
 * connection error. Everything else goes to nghttp2 unchanged, which does the rest of RFC 9113.
 *
 * It also ends, with GOAWAY ENHANCE_YOUR_CALM, a connection that floods control frames the server must process but
 * that move no request forward: SETTINGS and PING (each wants an ACK: CVE-2019-9515, CVE-2019-9512), WINDOW_UPDATE and
 * PRIORITY. nghttp2 stops such floods only when its queue of unsent ACKs fills, i.e. from a client that does not read;
 * one that reads its ACKs (or sends WINDOW_UPDATE, which has none) kept a core busy forever (issue 14). The budget is a
 * token bucket (CONTROL_BURST, refilled at CONTROL_RATE a second) that each stream the client opens and each DATA
 * frame the server sends adds to, as Envoy scales its WINDOW_UPDATE and PRIORITY limits with streams and DATA sent
 * (max_inbound_window_update_frames_per_data_frame_sent): a client downloading fast sends WINDOW_UPDATEs in step with
 * the DATA it gets. Rapid reset, CONTINUATION and empty DATA floods nghttp2 and Node already end (nghttp2's stream
 * reset rate limit and max CONTINUATION count, Node's maxSessionInvalidFrames); test/hostile/h2-floods.test.ts has all.
 *
 * Cost: the session reads and writes through this Duplex (Node wraps it in a JSStreamSocket) instead of consuming the
 * TLS socket in C++: one JS call per TLS record each way, and a walk over the frame headers in it. Both ways skip this
 * Duplex's own stream machinery where JSStreamSocket allows it (#pass; cork, write, uncork).
 */
import type { Http2Session, ServerHttp2Stream } from "node:http2"
import { Duplex } from "node:stream"
import type { TLSSocket } from "node:tls"
import { IdTable } from "../../core/id-table.ts"

const DATA = 0x0
const HEADERS = 0x1
const PRIORITY = 0x2
const RST_STREAM = 0x3
const SETTINGS = 0x4
const PING = 0x6
const GOAWAY = 0x7
const WINDOW_UPDATE = 0x8
const CONTINUATION = 0x9
const END_STREAM = 0x1
const ACK = 0x1
const END_HEADERS = 0x4

const PROTOCOL_ERROR = 0x1
const FLOW_CONTROL_ERROR = 0x3
const STREAM_CLOSED = 0x5
const ENHANCE_YOUR_CALM = 0xb

const MAX_WINDOW = 2 ** 31 - 1
const PREFACE_LENGTH = 24
/** Control frames held whole before they are passed on (their payload decides); longer ones go to nghttp2 as is. */
const MAX_HELD = 64
/** Corked batches up to this size are joined into one buffer; larger ones (bulk DATA) are written as they are. */
const MAX_BATCH_COPY = 64 * 1024
/** Streams remembered after they close, to tell a late frame on a closed stream from one on an unused id. */
const RECENT = 64
/** Stream errors this guard answers on one connection before it ends it (a flood of them is an attack). */
const MAX_STREAM_ERRORS = 1000

/** Control frames a connection may send at once (SETTINGS, PING, WINDOW_UPDATE, PRIORITY), and the budget's cap. */
const CONTROL_BURST = 1000
/** Control frames a second the budget refills with: keep-alive PINGs and the odd SETTINGS never reach the limit. */
const CONTROL_RATE = 100
/** Added for each stream the client opens (its PRIORITY and WINDOW_UPDATEs) and each DATA frame the server sends. */
const STREAM_CREDIT = 10
const DATA_CREDIT = 4

/** How a stream closed, for the frames that may still arrive on it. */
const CLIENT_RESET = 1
const ENDED = 2
const SERVER_RESET = 3

interface StreamState {
  /** The client may still send on it (no END_STREAM or RST_STREAM from it yet). */
  remote: boolean
  /** The server may still send on it. */
  local: boolean
  /** The server's send window on it (RFC 9113 §6.9). */
  window: number
}

/** H2Guard: the Duplex an HTTP/2 session runs on, in front of the client's TLS socket. */
export class H2Guard extends Duplex {
  readonly socket: TLSSocket
  session: Http2Session | undefined
  // IdTables, not Maps: a long-lived Map whose entries churn keeps dead streams alive across GCs (id-table.ts).
  readonly #streams = new IdTable<StreamState>()
  /** Streams the session has emitted and the guard still tracks (in #streams), by id, for stream.close(code). */
  readonly #known = new IdTable<ServerHttp2Stream>()
  /** Stream errors found before the session emitted the stream ('stream' is emitted on the next tick). */
  readonly #pending = new IdTable<number>()
  readonly #recentIds = new Int32Array(RECENT)
  readonly #recentHow = new Uint8Array(RECENT)
  #recentAt = 0
  #lastStreamId = 0
  #initialWindow = 65_535
  #pingsOut = 0
  #streamErrors = 0
  #failed = false
  /** Control frames the client may still send now (the token bucket; see the module comment). */
  #controlBudget = CONTROL_BURST
  #controlAt = Date.now()
  #idle: NodeJS.Timeout | undefined
  // inbound parse state
  #preface = PREFACE_LENGTH
  #carry: Buffer | undefined
  #skip = 0
  #inHeaderBlock = false
  // outbound parse state
  #outSkip = 0
  #outHead: Buffer | undefined
  #inject: Buffer[] = []
  /** cork() calls not yet matched by uncork(). */
  #corked = 0
  /** Called once the frames injected so far are on the socket. */
  #onInjected: (() => void)[] = []

  constructor(socket: TLSSocket) {
    super({ allowHalfOpen: false })
    this.socket = socket
    // What Node's session does to a TLS socket it runs on directly.
    socket.setNoDelay(true)
    socket.disableRenegotiation?.()
    socket.on("data", (chunk: Buffer) => this.#onData(chunk))
    socket.on("end", () => this.push(null))
    socket.on("error", (err: Error) => this.destroy(err))
    socket.on("close", () => {
      clearTimeout(this.#idle)
      this.destroy()
    })
    socket.on("drain", () => this.emit("drain"))
  }

  /**
   * shutdownNotice writes RFC 9113 §6.8's first GOAWAY of a graceful shutdown (last stream id 2^31-1, NO_ERROR)
   * between the session's frames, past nghttp2, and calls onWritten once it is on the socket. Past nghttp2 because
   * nghttp2 ignores every new stream once it sent any GOAWAY it was asked for (session_allow_incoming_new_stream:
   * only its own nghttp2_submit_shutdown_notice is exempt, and Node 24 does not expose that): Node's
   * session.goaway(0, 2^31-1) promised the client its streams and then dropped the ones already on the wire, which
   * the final GOAWAY then refused. Written here, the session knows nothing of it and serves those streams.
   */
  shutdownNotice(onWritten: () => void): void {
    const frame = Buffer.alloc(17)
    frame.writeUIntBE(8, 0, 3)
    frame[3] = GOAWAY
    frame.writeUInt32BE(MAX_WINDOW, 9)
    this.#inject.push(frame)
    this.#onInjected.push(onWritten)
    this.#flushInjected()
  }

  /** setIdleTimeout calls onIdle once neither side has sent a byte for ms. */
  setIdleTimeout(ms: number, onIdle: () => void): void {
    clearTimeout(this.#idle)
    this.#idle = setTimeout(onIdle, ms)
    this.#idle.unref()
  }

  /**
   * adopt: the session emitted this stream; false (and the stream is reset) when the guard already found it in error.
   * It is known (for stream.close(code)) while the guard tracks it: #close forgets it, from the frames that end it
   * (both END_STREAMs, or a RST_STREAM either way), which is before Node's 'close'. A 'close' listener per stream
   * did the same at the cost of a listener (and node:http2's 'newListener' event) on every stream.
   */
  adopt(stream: ServerHttp2Stream): boolean {
    const id = stream.id ?? 0
    const code = this.#pending.get(id)
    if (code !== undefined) {
      this.#pending.delete(id)
      stream.close(code)
      return false
    }
    // Already ended by its frames (the 'stream' event comes a tick after its HEADERS): nothing left to reset.
    if (this.#streams.has(id)) this.#known.set(id, stream)
    return true
  }

  override _read(): void {
    if (this.socket.isPaused()) this.socket.resume()
  }

  /**
   * cork, write, uncork: the session's output as JSStreamSocket hands it over (cork, one write per buffer, uncork),
   * straight to the TLS socket. Not through this Duplex's Writable side: its buffering, the writev batch and the
   * per-chunk callbacks (each after a nextTick) did again what the TLS socket's own Writable does, for every batch of
   * frames the session writes (2% of W3 in the profile). The buffers of one batch (about 25 under W3: frame headers,
   * HEADERS blocks and DATA payloads, some 50 bytes each) are joined and written once at the last uncork, with one
   * callback for all of them, instead of one Writable write and callback each on the TLS socket (#flushBatch).
   * end() and destroy() stay the Duplex's (_final, _destroy).
   */
  override cork(): void {
    this.#corked++
  }

  override uncork(): void {
    if (this.#corked === 0) return
    this.#corked--
    if (this.#corked > 0) return
    this.#flushBatch()
    this.#flushInjected()
  }

  override write(chunk: Buffer, encoding?: unknown, callback?: unknown): boolean {
    const done = (typeof encoding === "function" ? encoding : callback) as WriteCallback | undefined
    this.#outbound(chunk)
    const socket = this.socket
    if (socket.destroyed || this.destroyed) {
      // As a write to a closed socket: the session learns of the end from 'close', not from its writes.
      if (done) process.nextTick(done)
      return false
    }
    if (this.#corked > 0) {
      this.#batch.push(chunk)
      this.#batchBytes += chunk.length
      if (done) this.#batchDone.push(done)
      return !socket.writableNeedDrain
    }
    this.#idle?.refresh()
    const ok = done ? socket.write(chunk, done) : socket.write(chunk)
    this.#flushInjected()
    return ok
  }

  /** The session's buffers written while corked, and their callbacks, for #flushBatch. */
  readonly #batch: Buffer[] = []
  #batchBytes = 0
  #batchDone: WriteCallback[] = []

  /**
   * #flushBatch writes the corked batch: joined into one buffer (a copy of about a kilobyte), or, above
   * MAX_BATCH_COPY (bulk DATA), as corked writes of their own. The callbacks run, in order, once the last byte is
   * written, as each buffer's did once its own was (the TLS socket calls them in order and fails them all alike).
   */
  #flushBatch(): void {
    const batch = this.#batch
    const n = batch.length
    if (n === 0) return
    const callbacks = this.#batchDone
    const done: WriteCallback | undefined =
      callbacks.length === 0
        ? undefined
        : callbacks.length === 1
          ? callbacks[0]
          : (err) => {
              for (let i = 0; i < callbacks.length; i++) callbacks[i]!(err)
            }
    if (callbacks.length > 0) this.#batchDone = []
    const socket = this.socket
    this.#idle?.refresh()
    if (n === 1 || this.#batchBytes > MAX_BATCH_COPY) {
      socket.cork()
      for (let i = 0; i < n - 1; i++) socket.write(batch[i]!)
      if (done) socket.write(batch[n - 1]!, done)
      else socket.write(batch[n - 1]!)
      socket.uncork()
    } else {
      const joined = Buffer.concat(batch, this.#batchBytes)
      if (done) socket.write(joined, done)
      else socket.write(joined)
    }
    batch.length = 0
    this.#batchBytes = 0
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.#idle?.refresh()
    this.#outbound(chunk)
    if (this.socket.destroyed) {
      callback()
      return
    }
    this.socket.write(chunk, callback as () => void)
    this.#flushInjected()
  }

  /** _writev: the session writes a batch of frames at once (JSStreamSocket corks); one TLS write for all of them. */
  override _writev(
    chunks: Array<{ chunk: Buffer; encoding: BufferEncoding }>,
    callback: (error?: Error | null) => void,
  ): void {
    const socket = this.socket
    this.#idle?.refresh()
    for (let i = 0; i < chunks.length; i++) this.#outbound(chunks[i]!.chunk)
    if (socket.destroyed) {
      callback()
      return
    }
    socket.cork()
    for (let i = 0; i < chunks.length - 1; i++) socket.write(chunks[i]!.chunk)
    socket.write(chunks[chunks.length - 1]!.chunk, callback as () => void)
    socket.uncork()
    this.#flushInjected()
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.socket.end()
    callback()
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    clearTimeout(this.#idle)
    if (!this.socket.destroyed) this.socket.destroy(error ?? undefined)
    callback(error)
  }

  // --- inbound: the client's frames -------------------------------------------------------------------------------

  #onData(chunk: Buffer): void {
    if (this.#failed) return
    this.#idle?.refresh()
    let buf = chunk
    if (this.#carry !== undefined) {
      buf = Buffer.concat([this.#carry, chunk])
      this.#carry = undefined
    }
    let pos = 0
    let from = 0 // start of the bytes not yet passed on
    const end = buf.length
    while (pos < end) {
      if (this.#skip > 0) {
        const n = Math.min(this.#skip, end - pos)
        this.#skip -= n
        pos += n
        continue
      }
      if (this.#preface > 0) {
        const n = Math.min(this.#preface, end - pos)
        this.#preface -= n
        pos += n
        continue
      }
      if (end - pos < 9) break
      const length = buf.readUIntBE(pos, 3)
      const type = buf[pos + 3]!
      const flags = buf[pos + 4]!
      const id = buf.readUInt32BE(pos + 5) & 0x7fffffff
      if (this.#inHeaderBlock) {
        // Between HEADERS and its last CONTINUATION only CONTINUATION may come: nghttp2 judges (RFC 9113 §6.10).
        if (type === CONTINUATION && flags & END_HEADERS) this.#inHeaderBlock = false
        pos += 9
        this.#skip = length
        continue
      }
      // Counted once the frame is whole here: a frame split across reads is parsed again from #carry.
      if (isHeld(type) && length <= MAX_HELD) {
        if (end - pos < 9 + length) break
        if (isControl(type, flags) && this.#spendControl() === FAIL) return
        const verdict = this.#control(type, flags, id, buf, pos + 9, length)
        if (verdict === FAIL) return
        if (verdict === DROP) {
          if (pos > from) this.#pass(buf.subarray(from, pos))
          from = pos + 9 + length
        }
        pos += 9 + length
        continue
      }
      if (isControl(type, flags) && this.#spendControl() === FAIL) return
      if (this.#streamFrame(type, flags, id) === FAIL) return
      pos += 9
      this.#skip = length
    }
    const stop = Math.min(pos, end)
    if (stop > from) this.#pass(buf.subarray(from, stop))
    if (stop < end) this.#carry = Buffer.from(buf.subarray(stop))
  }

  #pass(bytes: Buffer): void {
    // Flowing with nothing held (always, unless the session stopped reading): to JSStreamSocket's 'data' listener at
    // once, as push() does then, without the Readable bookkeeping and the nextTick (maybeReadMore) push() adds.
    if (this.readableFlowing === true && this.readableLength === 0) this.emit("data", bytes)
    else if (!this.push(bytes)) this.socket.pause()
  }

  /** #streamFrame judges a DATA, HEADERS or other frame from its header alone; the payload passes through. */
  #streamFrame(type: number, flags: number, id: number): number {
    if (type === HEADERS) {
      if (!(flags & END_HEADERS)) this.#inHeaderBlock = true
      if (id === 0 || (id & 1) === 0) return PASS // nghttp2: PROTOCOL_ERROR
      const state = this.#streams.get(id)
      if (state !== undefined) {
        if (state.remote && flags & END_STREAM) this.#remoteDone(id, state)
        return PASS // trailers; HEADERS on a half-closed (remote) stream is nghttp2's STREAM_CLOSED
      }
      if (id > this.#lastStreamId) {
        this.#lastStreamId = id
        this.#earnControl(STREAM_CREDIT)
        this.#streams.set(id, { remote: !(flags & END_STREAM), local: true, window: this.#initialWindow })
        return PASS
      }
      // A HEADERS on an id at or below the last one, on no open stream. nghttp2 decodes and ignores its block (the
      // HPACK state stays in step), so it still goes through; the answer is the guard's.
      const how = this.#recent(id)
      if (how === SERVER_RESET) return PASS // RFC 9113 §5.1: frames after our RST_STREAM are ignored
      // RFC 9113 §5.1 closed: after the client's RST_STREAM, a stream error; after its END_STREAM, a connection error.
      if (how === CLIENT_RESET) return this.#streamError(id, STREAM_CLOSED)
      if (how === ENDED) return this.#connectionError(STREAM_CLOSED)
      return this.#connectionError(PROTOCOL_ERROR) // RFC 9113 §5.1.1: a lower id than one already used
    }
    if (type === DATA) {
      if (id === 0 || id > this.#lastStreamId) return PASS // nghttp2: PROTOCOL_ERROR
      const state = this.#streams.get(id)
      if (state !== undefined) {
        if (state.remote && flags & END_STREAM) this.#remoteDone(id, state)
        return PASS // on a half-closed (remote) stream nghttp2 answers STREAM_CLOSED itself
      }
      // Passed on all the same: DATA counts against the connection's flow-control window (RFC 9113 §6.9).
      const how = this.#recent(id)
      if (how === SERVER_RESET) return PASS
      if (how === ENDED) return this.#connectionError(STREAM_CLOSED)
      return this.#streamError(id, STREAM_CLOSED) // RFC 9113 §6.1
    }
    return PASS
  }

  /** #control judges a small control frame from its whole payload. */
  #control(type: number, flags: number, id: number, buf: Buffer, at: number, length: number): number {
    switch (type) {
      case PRIORITY: {
        if (length !== 5) return PASS // nghttp2: FRAME_SIZE_ERROR
        if (id === 0) return this.#connectionError(PROTOCOL_ERROR) // RFC 9113 §6.3
        const dependency = buf.readUInt32BE(at) & 0x7fffffff
        if (dependency !== id) return PASS
        // RFC 9113 §5.3.1: a stream cannot depend on itself (a stream error); on an idle stream there is no stream
        // to reset (RFC 9113 §6.4), so the connection ends.
        if (id > this.#lastStreamId) return this.#connectionError(PROTOCOL_ERROR)
        return this.#streamError(id, PROTOCOL_ERROR) === FAIL ? FAIL : DROP
      }
      case RST_STREAM: {
        const state = this.#streams.get(id)
        if (state !== undefined) this.#close(id, CLIENT_RESET)
        return PASS
      }
      case SETTINGS: {
        if (flags & ACK || id !== 0 || length % 6 !== 0) return PASS
        for (let i = at; i < at + length; i += 6) {
          if (buf.readUInt16BE(i) !== 0x4) continue
          const value = buf.readUInt32BE(i + 2)
          if (value > MAX_WINDOW) return PASS // nghttp2: FLOW_CONTROL_ERROR
          // RFC 9113 §6.9.2: a new initial window size shifts every open stream's window by the difference.
          const delta = value - this.#initialWindow
          this.#initialWindow = value
          this.#streams.forEach((state) => {
            state.window += delta
          })
        }
        return PASS
      }
      case PING: {
        if (!(flags & ACK)) return PASS
        if (this.#pingsOut > 0) {
          this.#pingsOut--
          return PASS
        }
        return DROP // RFC 9113 §6.7: an ACK answers a PING; one that answers nothing is ignored
      }
      case WINDOW_UPDATE: {
        if (id === 0 || length !== 4) return PASS // the connection window is nghttp2's (GOAWAY FLOW_CONTROL_ERROR)
        const increment = buf.readUInt32BE(at) & 0x7fffffff
        const state = this.#streams.get(id)
        if (state === undefined || !state.local || increment === 0) return PASS
        if (state.window + increment > MAX_WINDOW) {
          // RFC 9113 §6.9.1: a stream error; nghttp2 would end the whole connection.
          return this.#streamError(id, FLOW_CONTROL_ERROR) === FAIL ? FAIL : DROP
        }
        state.window += increment
        return PASS
      }
    }
    return PASS
  }

  /** #spendControl takes one control frame from the budget, refilled by the time since it last ran dry. */
  #spendControl(): number {
    if (--this.#controlBudget >= 0) return PASS
    // Refilled lazily, only when it runs dry: no clock read per frame.
    const now = Date.now()
    this.#earnControl(((now - this.#controlAt) * CONTROL_RATE) / 1000)
    this.#controlAt = now
    if (this.#controlBudget >= 0) return PASS
    return this.#connectionError(ENHANCE_YOUR_CALM)
  }

  #earnControl(n: number): void {
    this.#controlBudget = Math.min(CONTROL_BURST, this.#controlBudget + n)
  }

  #remoteDone(id: number, state: StreamState): void {
    state.remote = false
    if (!state.local) this.#close(id, ENDED)
  }

  #close(id: number, how: number): void {
    this.#streams.delete(id)
    this.#known.delete(id)
    this.#recentIds[this.#recentAt] = id
    this.#recentHow[this.#recentAt] = how
    this.#recentAt = (this.#recentAt + 1) % RECENT
  }

  #recent(id: number): number {
    for (let i = 0; i < RECENT; i++) if (this.#recentIds[i] === id) return this.#recentHow[i]!
    return 0
  }

  /** #streamError resets one stream (RFC 9113 §5.4.2), through the session when it knows the stream. */
  #streamError(id: number, code: number): number {
    if (++this.#streamErrors > MAX_STREAM_ERRORS) return this.#connectionError(ENHANCE_YOUR_CALM)
    const state = this.#streams.get(id)
    if (state !== undefined) {
      const stream = this.#known.get(id)
      if (stream !== undefined) stream.close(code)
      else this.#pending.set(id, code)
      return PASS
    }
    // A stream the session has forgotten: write the RST_STREAM ourselves, between two of its frames.
    const frame = Buffer.alloc(13)
    frame.writeUIntBE(4, 0, 3)
    frame[3] = RST_STREAM
    frame.writeUInt32BE(id, 5)
    frame.writeUInt32BE(code, 9)
    this.#inject.push(frame)
    this.#flushInjected()
    return PASS
  }

  /** #connectionError ends the connection with GOAWAY and the code (RFC 9113 §5.4.1); nothing more is read. */
  #connectionError(code: number): number {
    this.#failed = true
    this.socket.pause()
    const session = this.session
    // destroy(code): GOAWAY with that code, then the connection closes.
    if (session !== undefined && !session.destroyed) session.destroy(code as unknown as Error)
    else this.destroy()
    return FAIL
  }

  // --- outbound: the session's frames -----------------------------------------------------------------------------

  /** #outbound follows the frame headers the session writes: END_STREAM, RST_STREAM, DATA lengths, PINGs. */
  #outbound(chunk: Buffer): void {
    let buf = chunk
    if (this.#outHead !== undefined) {
      buf = Buffer.concat([this.#outHead, chunk])
      this.#outHead = undefined
    }
    let pos = 0
    const end = buf.length
    while (pos < end) {
      if (this.#outSkip > 0) {
        const n = Math.min(this.#outSkip, end - pos)
        this.#outSkip -= n
        pos += n
        continue
      }
      if (end - pos < 9) {
        this.#outHead = Buffer.from(buf.subarray(pos))
        return
      }
      const length = buf.readUIntBE(pos, 3)
      const type = buf[pos + 3]!
      const flags = buf[pos + 4]!
      const id = buf.readUInt32BE(pos + 5) & 0x7fffffff
      pos += 9
      this.#outSkip = length
      if (type === DATA || type === HEADERS) {
        const state = this.#streams.get(id)
        if (state === undefined) continue
        if (type === DATA) {
          state.window -= length
          this.#earnControl(DATA_CREDIT)
        }
        if (flags & END_STREAM) {
          state.local = false
          if (!state.remote) this.#close(id, ENDED)
        }
      } else if (type === RST_STREAM) {
        if (this.#streams.has(id)) this.#close(id, SERVER_RESET)
      } else if (type === PING && !(flags & ACK)) {
        this.#pingsOut++
      }
    }
  }

  /** #flushInjected writes the guard's own frames once the session's output stands between two frames. */
  #flushInjected(): void {
    // While corked, the session's frames wait in #batch: ours go after them, at the last uncork.
    if (this.#inject.length === 0 || this.#corked > 0 || this.#outSkip > 0 || this.#outHead !== undefined) return
    if (this.socket.destroyed) return
    for (const frame of this.#inject.splice(0)) this.socket.write(frame)
    for (const done of this.#onInjected.splice(0)) done()
  }
}

type WriteCallback = (error?: Error | null) => void

const PASS = 0
const DROP = 1
const FAIL = 2

/** isControl: the frames the control budget counts (the ACKs of our own SETTINGS and PINGs are not). */
function isControl(type: number, flags: number): boolean {
  return type === WINDOW_UPDATE || type === PRIORITY || ((type === SETTINGS || type === PING) && !(flags & ACK))
}

/** isHeld: the control frames whose payload the guard reads before passing them on. */
function isHeld(type: number): boolean {
  return type === PRIORITY || type === RST_STREAM || type === SETTINGS || type === PING || type === WINDOW_UPDATE
}
