/**
 * @module access-log: the access log: one JSON line per request or connection, built by hand and written in batches.
 *
 * Why not pino: a pino line per request cost about two thirds of the keep-alive throughput (issue 10): an object of
 * 16 fields, a redaction pass over it, JSON.stringify, and a synchronous write(2) per line. Here an HTTP line's
 * fields are written one by one into the batch buffer (strings escaped by `quote`, numbers as numbers): no line
 * string is made, which as a template was ≈1.2 KB of garbage per request (a piece per field, then a flat copy of
 * the batch). The batch is written when it reaches BATCH_BYTES, or FLUSH_MS after its first line, or at exit: to a
 * file with fs.write (libuv's thread pool: the event loop never waits on the disk); to a stdout that is a pipe or a
 * socket (a service manager's, journald's) through process.stdout, a libuv stream on a non-blocking fd, which writes
 * on the event loop's own thread and waits for a slow reader in epoll. Through the pool, every 4 KiB piece cost a
 * thread hop, an eventfd wake-up and a futex, about 3 µs of CPU per line at 30,000 lines/s. The fields are the
 * ones pino wrote ("level", "time", "pid", "type":"access", ...), so readers of the log see no change. An access
 * line never carries a header, so there is nothing to redact; what a client controls (path, host, method, SNI) is
 * escaped, so it can neither end a line nor add a field.
 *
 * Why not sonic-boom (pino's writer, in node_modules): it is not a dependency of ours but of pino's, and on a pipe we
 * want every write to be whole lines of at most PIPE_BUF bytes (atomic, POSIX write(2)), so pino's own lines to the
 * same stdout are never spliced into the middle of ours. That needs line-aware batching, which is this file.
 *
 * Rotation (logrotate): rename the file, then SIGUSR1: `reopen()` opens the path again; lines written before it go to
 * the old file, later ones to the new. Lines are kept in order across a reopen or a change of path on reload.
 */
import { closeSync, fstatSync, openSync, write, writeSync } from "node:fs"
import { putLatin1, putUtf8 } from "./bytes.ts"
import type { ConnectionInfo } from "./connection-info.ts"
import { PortcullisError } from "./errors.ts"

/** A batch is written once it reaches this size (nginx's `access_log ... buffer=64k`). */
const BATCH_BYTES = 64 * 1024
/** ... or this long after its first line, whichever comes first. */
const FLUSH_MS = 100
/** Pending bytes beyond which new lines are dropped (and counted) rather than held: a stuck disk must not eat memory. */
const MAX_PENDING = 16 * 1024 * 1024
/** POSIX: a write of at most PIPE_BUF bytes to a pipe is atomic (never interleaved with another writer's). */
const PIPE_BUF = 4096
/** On a file, one write takes at most this much. */
const MAX_WRITE = 1024 * 1024
const EAGAIN_RETRY_MS = 10
const STDOUT = 1

/** Characters JSON needs escaped (", \, controls) or that are not whole UTF-8 on their own (lone surrogates). */
const NEEDS_ESCAPE = /["\\\u0000-\u001f\ud800-\udfff]/

/** quote is a string as a JSON string: most values (addresses, names, plain paths) need no escaping at all. */
export function quote(s: string): string {
  return NEEDS_ESCAPE.test(s) ? JSON.stringify(s) : `"${s}"`
}

/** The batch buffer's size: a batch is sealed at BATCH_BYTES, so a line that starts below it always fits in the rest. */
const BATCH_CAPACITY = BATCH_BYTES + 16 * 1024
/** A sealed batch smaller than this is copied out and its buffer kept for the next batch. */
const COPY_BELOW = 16 * 1024

/** field is `,"name":"value"` for a defined string, "" for undefined (pino left undefined fields out). */
function field(prefix: string, value: string | undefined): string {
  return value === undefined ? "" : prefix + quote(value)
}

/**
 * connectionPart is `"client":...,"listener":...` and the TLS fields of a connection's lines: the same for every
 * request on it, so it is escaped and joined once per connection (and listener), not once per request, and kept in
 * the info's own slot for it (ConnectionInfo.linePart: no WeakMap entry per connection).
 */
function connectionPart(info: ConnectionInfo, listener: string): string {
  const cached = info.linePart
  if (cached !== undefined && info.lineListener === listener) return cached
  const text = `"client":${quote(info.clientAddress)},"listener":${quote(listener)}${field(',"sni":', info.servername)}${field(',"tls":', info.tlsVersion)}${field(',"cipher":', info.cipher)}${field(',"alpn":', info.alpn)}`
  info.linePart = text
  info.lineListener = listener
  return text
}

/** Memo of the last upstream and backend names quoted: the same few strings on every line. */
let lastUpstream = ""
let lastUpstreamField = ""
let lastBackend = ""
let lastBackendField = ""

/** A chunk handed to the writer, with the fd it goes to (a reopen changes the fd for later chunks only). */
interface Chunk {
  fd: number
  buf: Buffer
  offset: number
  /** On a batch's last chunk: the batch buffer, free again once this chunk is written (see #spare). */
  release?: Buffer | undefined
}

export interface AccessLogOptions {
  /** Instead of stdout or a file, hand each batch of lines to this function (tests; an in-process reader). */
  sink?: (lines: string) => void
  /** Told once per kind of trouble (a failed write, lines dropped); the log carries on. */
  onError?: (err: Error) => void
}

/** AccessLog buffers access lines and writes them to stdout (default), a file, or a sink. */
export class AccessLog {
  readonly #sink: ((lines: string) => void) | undefined
  readonly #onError: (err: Error) => void
  readonly #pid = process.pid
  /** Every line's start up to the time, and from the pid to the connection's fields. */
  readonly #head = '{"level":30,"time":'
  readonly #pidPart = `,"pid":${process.pid},"type":"access",`
  /** Lines not yet handed to a write: the first #used bytes of #batch (allocated at the first line of a batch). */
  #batch: Buffer | undefined = undefined
  /** A written batch buffer kept for the next batch: a fresh 80 KiB per batch was external memory for V8 to collect. */
  #spare: Buffer | undefined = undefined
  #used = 0
  /** Bytes sealed into #chunks and not written yet. */
  #queued = 0
  #path: string | undefined
  #fd = STDOUT
  /** The current fd is a pipe: writes are cut at PIPE_BUF on line ends. */
  #pipe = false
  /** stdout is a pipe or socket: its chunks go through process.stdout (see the module's comment). */
  #stdoutStream: NodeJS.WriteStream | undefined = undefined
  readonly #chunks: Chunk[] = []
  #writing = false
  /** The head chunk is in a write now (fs.write, or process.stdout's), not merely waiting to retry after EAGAIN. */
  #inFlight = false
  #timer: NodeJS.Timeout | undefined
  #closed = false
  #drained: (() => void)[] = []
  /** Lines dropped because MAX_PENDING was reached (a stalled destination). */
  dropped = 0
  #warnedDrop = false
  #warnedWrite = false
  readonly #onExit = (): void => this.flushSync()
  readonly #onBeforeExit = (): void => this.flush()

  constructor(options: AccessLogOptions = {}) {
    this.#sink = options.sink
    this.#onError = options.onError ?? (() => {})
    if (!this.#sink) {
      this.#pipe = isPipe(STDOUT)
      if (this.#pipe) {
        this.#stdoutStream = process.stdout
        // A write's error comes to its callback; without a listener the stream's 'error' (EPIPE: the reader is
        // gone) would be an uncaught exception.
        if (!process.stdout.listeners("error").includes(ignoreStdoutError))
          process.stdout.on("error", ignoreStdoutError)
      }
      process.on("exit", this.#onExit)
      process.on("beforeExit", this.#onBeforeExit)
    }
  }

  /** path is the file written to now; undefined for stdout. */
  get path(): string | undefined {
    return this.#path
  }

  /**
   * use sends later lines to `path` (undefined: stdout). Opening happens here, so a path that cannot be opened throws
   * (a reload is refused) and the current destination stays. The same path again is a no-op; see reopen().
   */
  use(path: string | undefined): void {
    if (path === this.#path || this.#sink) return
    this.#switchTo(path)
  }

  /** reopen opens the file at the same path again (after logrotate renamed it); stdout: nothing to do. */
  reopen(): void {
    if (this.#path === undefined || this.#sink) return
    this.#switchTo(this.#path)
  }

  #switchTo(path: string | undefined): void {
    const fd = path === undefined ? STDOUT : openLogFile(path)
    // Lines so far belong to the old destination: seal them into a chunk for its fd, then switch.
    this.#seal()
    const old = this.#fd
    this.#fd = fd
    this.#path = path
    this.#pipe = isPipe(fd)
    if (old !== STDOUT) {
      // Closed once its last chunk is written (or now, if it has none).
      if (this.#chunks.some((c) => c.fd === old)) this.#chunks.push({ fd: old, buf: CLOSE, offset: 0 })
      else closeSync(old)
    }
    this.#pump()
  }

  /**
   * http writes one HTTP request's line. Arguments, not an object: nothing is allocated for the call. `status` 0 and
   * `backend` undefined mean no response and no backend; `error` "" means none; `traceId` is the W3C trace id, if any.
   */
  http(
    info: ConnectionInfo,
    listener: string,
    method: string | undefined,
    host: string | undefined,
    path: string | undefined,
    status: number,
    bytes: number,
    upstream: string | undefined,
    backend: string | undefined,
    tries: number | undefined,
    durationMs: number | undefined,
    error: string,
    traceId?: string,
  ): void {
    let upstreamField = ""
    if (upstream !== undefined) {
      if (upstream !== lastUpstream) {
        lastUpstream = upstream
        lastUpstreamField = `,"upstream":${quote(upstream)}`
      }
      upstreamField = lastUpstreamField
    }
    let backendField = ""
    if (backend !== undefined) {
      if (backend !== lastBackend) {
        lastBackend = backend
        lastBackendField = `,"backend":${quote(backend)}`
      }
      backendField = lastBackendField
    }
    const connection = connectionPart(info, listener)
    // The most the line can take: every character as 3 UTF-8 bytes (6 when escaped: a control as \u00XX), numbers
    // and field names within the constant.
    const strings =
      (method?.length ?? 0) + (host?.length ?? 0) + (path?.length ?? 0) + (traceId?.length ?? 0) + error.length
    const most = 256 + 3 * (connection.length + upstreamField.length + backendField.length) + 6 * strings
    if (!this.#room(most)) return
    const buf = this.#batch!
    let o = this.#used
    o = putLatin1(buf, o, this.#head)
    o = putLatin1(buf, o, String(Date.now()))
    o = putLatin1(buf, o, this.#pidPart)
    o = putUtf8(buf, o, connection)
    if (method !== undefined) o = putString(buf, putLatin1(buf, o, ',"method":'), method)
    if (host !== undefined) o = putString(buf, putLatin1(buf, o, ',"host":'), host)
    if (path !== undefined) o = putString(buf, putLatin1(buf, o, ',"path":'), path)
    o = putLatin1(buf, o, ',"status":')
    o = putLatin1(buf, o, String(status))
    o = putLatin1(buf, o, ',"bytes":')
    o = putLatin1(buf, o, String(bytes))
    if (upstreamField !== "") o = putUtf8(buf, o, upstreamField)
    if (backendField !== "") o = putUtf8(buf, o, backendField)
    if (tries !== undefined) o = putLatin1(buf, putLatin1(buf, o, ',"tries":'), String(tries))
    if (durationMs !== undefined) o = putLatin1(buf, putLatin1(buf, o, ',"duration_ms":'), String(durationMs))
    if (traceId !== undefined) o = putString(buf, putLatin1(buf, o, ',"trace_id":'), traceId)
    if (error) o = putString(buf, putLatin1(buf, o, ',"error":'), error)
    buf[o++] = 0x7d // }
    buf[o++] = 0x0a
    this.#used = o
    this.#added()
  }

  /** tcp writes one tcp connection's line (the tcp engine's fields). */
  tcp(
    info: ConnectionInfo | undefined,
    listener: string,
    upstream: string,
    backend: string | undefined,
    bytesIn: number,
    bytesOut: number,
    durationMs: number,
    error: string | undefined,
  ): void {
    this.line(
      `{"level":30,"time":${Date.now()},"pid":${this.#pid},"type":"access","listener":${quote(listener)}${field(',"client":', info?.clientAddress)}${field(',"sni":', info?.servername)}${field(',"tls":', info?.tlsVersion)}${field(',"cipher":', info?.cipher)},"upstream":${quote(upstream)}${field(',"backend":', backend)},"bytes_in":${bytesIn},"bytes_out":${bytesOut},"duration_ms":${durationMs}${error ? `,"error":${quote(error)}` : ""}}\n`,
    )
  }

  /** line queues one complete line (ending in \n). */
  line(text: string): void {
    if (!this.#room(3 * text.length)) return
    this.#used = putUtf8(this.#batch!, this.#used, text)
    this.#added()
  }

  /**
   * #room makes sure the batch buffer has `most` bytes free for the next line (sealing the batch first when it has
   * not); false: the line is dropped (closed, or MAX_PENDING bytes already wait for a stalled destination).
   */
  #room(most: number): boolean {
    if (this.#closed) return false
    if (this.#queued + this.#used + most > MAX_PENDING) {
      this.dropped++
      if (!this.#warnedDrop) {
        this.#warnedDrop = true
        this.#onError(new PortcullisError("PC_ACCESS_LOG_DROPPED", "access log: destination too slow; dropping lines"))
      }
      return false
    }
    const batch = this.#batch
    if (batch !== undefined && this.#used + most <= batch.length) return true
    if (this.#used > 0) this.#seal()
    // A line longer than a batch (a long path or error) gets a buffer of its own size.
    const spare = this.#spare
    if (spare !== undefined && spare.length >= most) {
      this.#batch = spare
      this.#spare = undefined
    } else this.#batch = Buffer.allocUnsafeSlow(Math.max(BATCH_CAPACITY, most))
    this.#used = 0
    return true
  }

  /** #added: a line went into the batch; write the batch once it is full, else within FLUSH_MS. */
  #added(): void {
    if (this.#used >= BATCH_BYTES) this.flush()
    else if (this.#timer === undefined) {
      this.#timer = setTimeout(onFlushTimer, FLUSH_MS, this)
      this.#timer.unref()
    }
  }

  /** flush hands the pending lines to the writer now (asynchronous; see drain()). */
  flush(): void {
    this.#seal()
    this.#pump()
  }

  /** flushSync writes everything not yet handed to a write, synchronously: for the 'exit' event, where nothing waits. */
  flushSync(): void {
    this.#seal()
    // A chunk in an async write now is left to it (writing it again could double its lines); the rest goes now.
    const start = this.#inFlight ? 1 : 0
    for (let i = start; i < this.#chunks.length; i++) {
      const c = this.#chunks[i]!
      if (c.buf === CLOSE) continue
      writeAllSync(c)
    }
    this.#chunks.length = start
    this.#queued = start === 1 ? this.#chunks[0]!.buf.length - this.#chunks[0]!.offset : 0
  }

  /** drain resolves once every line so far is written. */
  drain(): Promise<void> {
    this.flush()
    if (!this.#writing && this.#chunks.length === 0) return Promise.resolve()
    return new Promise((resolve) => this.#drained.push(resolve))
  }

  /** close writes what is pending, closes the file, and takes no more lines. */
  async close(): Promise<void> {
    await this.drain()
    this.#closed = true
    if (this.#timer !== undefined) clearTimeout(this.#timer)
    this.#timer = undefined
    if (this.#fd !== STDOUT) closeSync(this.#fd)
    this.#fd = STDOUT
    process.off("exit", this.#onExit)
    process.off("beforeExit", this.#onBeforeExit)
    this.#stdoutStream?.off("error", ignoreStdoutError)
  }

  /** #seal moves the pending lines into chunks for the current fd (or to the sink). */
  #seal(): void {
    if (this.#timer !== undefined) {
      clearTimeout(this.#timer)
      this.#timer = undefined
    }
    const used = this.#used
    if (used === 0) return
    const batch = this.#batch!
    this.#used = 0
    if (this.#sink) {
      this.#sink(batch.toString("utf8", 0, used))
      return
    }
    let buf: Buffer
    if (used < COPY_BELOW) {
      // A small batch (the timer's, at a low rate) is copied out, and the buffer serves the next batch.
      buf = Buffer.from(batch.subarray(0, used))
    } else {
      // The chunks hold views of this buffer until they are written: the next line starts a new one.
      buf = batch.subarray(0, used)
      this.#batch = undefined
    }
    this.#queued += used
    const max = this.#pipe ? PIPE_BUF : MAX_WRITE
    let start = 0
    // Whole lines per chunk, each at most `max` bytes (a single longer line is one chunk of its own).
    while (buf.length - start > max) {
      let end = buf.lastIndexOf(0x0a, start + max - 1)
      if (end < start) end = buf.indexOf(0x0a, start + max)
      this.#chunks.push({ fd: this.#fd, buf: buf.subarray(start, end + 1), offset: 0 })
      start = end + 1
    }
    if (start < buf.length) this.#chunks.push({ fd: this.#fd, buf: buf.subarray(start), offset: 0 })
    // Chunks that are views of the batch: it may serve again once the last of them is written.
    if (this.#batch === undefined) this.#chunks[this.#chunks.length - 1]!.release = batch
  }

  /** #pump starts the next write, one at a time, so chunks reach their fd in order. */
  #pump(): void {
    if (this.#writing) return
    while (this.#chunks.length > 0 && this.#chunks[0]!.buf === CLOSE) {
      const { fd } = this.#chunks.shift()!
      tryClose(fd)
    }
    const chunk = this.#chunks[0]
    if (chunk === undefined) {
      for (const resolve of this.#drained.splice(0)) resolve()
      return
    }
    this.#writing = true
    this.#inFlight = true
    const stream = this.#stdoutStream
    if (stream !== undefined && chunk.fd === STDOUT) {
      // One write call per chunk, never corked: the stream then makes one write(2) of it (atomic up to PIPE_BUF),
      // and the next chunk waits for this one's callback, so a slow reader never gets a joined writev.
      const length = chunk.buf.length - chunk.offset
      stream.write(chunk.offset === 0 ? chunk.buf : chunk.buf.subarray(chunk.offset), (err) =>
        this.#written(chunk, (err as NodeJS.ErrnoException | null | undefined) ?? null, err ? 0 : length),
      )
      return
    }
    write(chunk.fd, chunk.buf, chunk.offset, chunk.buf.length - chunk.offset, null, (err, written) =>
      this.#written(chunk, err, written),
    )
  }

  #written(chunk: Chunk, err: NodeJS.ErrnoException | null, written: number): void {
    this.#writing = false
    this.#inFlight = false
    if (err) {
      if (err.code === "EAGAIN") {
        // A non-blocking pipe that is full: try again shortly, without spinning.
        this.#writing = true
        setTimeout(() => {
          this.#writing = false
          this.#pump()
        }, EAGAIN_RETRY_MS).unref()
        return
      }
      if (!this.#warnedWrite) {
        this.#warnedWrite = true
        this.#onError(
          new PortcullisError("PC_ACCESS_LOG_WRITE", `access log: write failed: ${err.code ?? err.message}`),
        )
      }
      this.#queued -= chunk.buf.length - chunk.offset
      this.#chunks.shift() // these lines are lost; later ones may still get through (e.g. after a reopen)
    } else {
      chunk.offset += written
      this.#queued -= written
      if (chunk.offset >= chunk.buf.length) {
        this.#chunks.shift()
        if (chunk.release !== undefined && chunk.release.length === BATCH_CAPACITY) this.#spare = chunk.release
      }
    }
    this.#pump()
  }
}

/** putString writes s as a JSON string at o (as `quote` makes it, UTF-8); returns the offset after it. */
function putString(buf: Buffer, o: number, s: string): number {
  if (NEEDS_ESCAPE.test(s)) return putUtf8(buf, o, JSON.stringify(s))
  buf[o++] = 0x22 // "
  o = putUtf8(buf, o, s)
  buf[o++] = 0x22
  return o
}

/** writeAllSync writes the rest of c at exit; a full non-blocking pipe (EAGAIN) is waited on, up to a bound. */
function writeAllSync(c: Chunk): void {
  let waits = 0
  while (c.offset < c.buf.length) {
    try {
      c.offset += writeSync(c.fd, c.buf, c.offset)
    } catch (err) {
      // At exit there is no one to tell; a reader that takes nothing for EXIT_WAIT_MS loses the rest.
      if ((err as NodeJS.ErrnoException).code !== "EAGAIN" || ++waits > EXIT_WAIT_MS) return
      Atomics.wait(EXIT_SLEEP, 0, 0, 1)
    }
  }
}

/** For writeAllSync's 1 ms sleeps. */
const EXIT_SLEEP = new Int32Array(new SharedArrayBuffer(4))
const EXIT_WAIT_MS = 2000

function ignoreStdoutError(): void {
  // Reported through the failed write's callback (#written).
}

/** A marker chunk: close this fd here (after the chunks before it are written). */
const CLOSE = Buffer.alloc(0)

function onFlushTimer(log: AccessLog): void {
  log.flush()
}

function openLogFile(path: string): number {
  try {
    return openSync(path, "a", 0o640)
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? "error"
    throw new PortcullisError("PC_ACCESS_LOG_OPEN", `access_log.path ${path}: ${code}`, { cause: err })
  }
}

function isPipe(fd: number): boolean {
  try {
    const s = fstatSync(fd)
    return s.isFIFO() || s.isSocket()
  } catch {
    return false
  }
}

function tryClose(fd: number): void {
  try {
    closeSync(fd)
  } catch {
    // Already gone: nothing to release.
  }
}
