/**
 * @module connection: one client's HTTP/1.1 connection, parsed and framed by us (request-head.ts, chunked.ts) on the
 * decrypted TLS socket. Requests are served one at a time (issue 14, finding 2): while one is in flight, what the
 * client pipelines behind it waits unparsed, with reading paused. An idle keep-alive connection holds this object,
 * its socket and one timer: no parser, no buffer.
 */
import type { TLSSocket } from "node:tls"
import { hold, release } from "../../../core/write-batch.ts"
import { ChunkedDecoder } from "../../../upstreams/h1/chunked.ts"
import { H1Body, H1Request } from "./h1-request.ts"
import { H1Response } from "./h1-response.ts"
import { parseRequestHead, RequestParseError } from "./request-head.ts"

/** H1Limits: limits of the listener that the connection applies (the engine's others are applied per request). */
export interface H1Limits {
  maxHeaderSize: number
  /** ms from a request's first byte (or the connection's start) to the end of its head: else 408. */
  headerTimeout: number
  /** ms from a request's head to the end of its body: else 408. */
  requestTimeout: number
  /** ms a keep-alive connection waits for its next request: then it is closed. */
  idleTimeout: number
}

/** H1Host: the engine side of a connection. Each call is made with no exception expected back. */
export interface H1Host {
  readonly h1Limits: H1Limits
  /** The generation is closing: responses say Connection: close. */
  readonly closing: boolean
  onH1Request(req: H1Request, res: H1Response): void
  /** An Upgrade (or CONNECT) request: the socket leaves HTTP; head holds the bytes read after the request head. */
  onH1Upgrade(req: H1Request, socket: TLSSocket, head: Buffer): void
  /** A request the parser refused, or a timeout: answer err (classified by failure.ts) and close. */
  onH1Error(err: Error & { code: string }, socket: TLSSocket, responseStarted: boolean): void
}

/** TimeoutError: a header or request timeout (Node's code, mapped to 408 by failure.ts). */
class RequestTimeoutError extends Error {
  readonly code = "ERR_HTTP_REQUEST_TIMEOUT"
}

const kConnection = Symbol("portcullis.h1.connection")
type WithConnection = TLSSocket & { [kConnection]?: H1Connection }

// States.
/** Waiting for (or reading) a request head. */
const HEAD = 0
/** Reading the body of the request in flight. */
const BODY = 1
/** A request is in flight and its body is read: nothing more is parsed until its response ends. */
const WAIT = 2
/** The socket left HTTP (an upgrade) or closed. */
const GONE = 3

// Timer kinds: the one timer runs for the phase it was set for; a phase that has none lets it fire unseen.
const T_HEADER = 1
const T_REQUEST = 2
const T_IDLE = 3

/** How long a closing connection reads what its client still sends (see #linger). */
const LINGER_MS = 5_000
/** HOLD_LIMIT: writes up to this size wait for the end of the round (core/write-batch.ts); bulk ones do not. */
const HOLD_LIMIT = 16 * 1024
const CRLFCRLF = Buffer.from("\r\n\r\n")
const EMPTY = Buffer.alloc(0)

/** H1Connection: the state of one connection; socket handlers are module functions that read it. */
export class H1Connection {
  readonly host: H1Host
  readonly socket: TLSSocket
  readonly keepAliveSeconds: number
  #state = HEAD
  /** Bytes read and not yet parsed: a partial head, or what a client pipelined behind the request in flight. */
  #pending: Buffer | undefined = undefined
  #req: H1Request | undefined = undefined
  #res: H1Response | undefined = undefined
  /** The body being read (undefined: none, or discarded after its response ended). */
  #body: H1Body | undefined = undefined
  /** Body bytes left (Content-Length framing); -1 when chunked. */
  #remaining = 0
  #chunked: ChunkedDecoder | undefined = undefined
  /** The request's body is all read (or it had none). */
  #bodyDone = true
  #timer: NodeJS.Timeout | undefined = undefined
  #timerKind = 0
  /** Reading is paused: backpressure from the body's reader, or a request in flight. */
  #paused = false
  /** A continuation of pipelined requests is scheduled. */
  #scheduled = false

  constructor(host: H1Host, socket: TLSSocket) {
    this.host = host
    this.socket = socket
    this.keepAliveSeconds = Math.floor(host.h1Limits.idleTimeout / 1000)
    ;(socket as WithConnection)[kConnection] = this
    // A client that half-closes after its request still gets the response (node:http's allowHalfOpen).
    socket.allowHalfOpen = true
    socket.on("data", onSocketData)
    socket.on("drain", onSocketDrain)
    socket.on("close", onSocketClose)
    socket.on("end", onSocketEnd)
    // Node's server answers 408 to a connection that sends no complete head within headers_timeout, first or not.
    this.#arm(T_HEADER, host.h1Limits.headerTimeout)
  }

  /** idle: no request in flight and nothing of the next one read (engine.close closes these at once). */
  get idle(): boolean {
    return this.#state === HEAD && this.#pending === undefined && this.#req === undefined
  }

  // ResponseOwner

  write(data: Buffer | string, callback?: () => void): boolean {
    const socket = this.socket
    if (socket.destroyed) {
      if (callback) queueMicrotask(callback)
      return true
    }
    // A small piece (a head, a short body) leaves with this round's other writes (core/write-batch.ts); a bulk
    // piece goes at once unless the socket is held already.
    if (data.length <= HOLD_LIMIT) hold(socket)
    if (typeof data === "string") return socket.write(data, "latin1", callback)
    return callback ? socket.write(data, callback) : socket.write(data)
  }

  destroy(): void {
    // What this round wrote goes first, as it did before writes were held.
    release(this.socket)
    this.socket.destroy()
  }

  bodyPending(): boolean {
    return !this.#bodyDone
  }

  /** responseEnded: the response in flight is complete; go on with the connection (or close it). */
  responseEnded(res: H1Response): void {
    if (res !== this.#res) return
    this.#res = undefined
    if (!res.shouldKeepAlive || this.host.closing) {
      this.#finishAndClose()
      return
    }
    if (!this.#bodyDone) {
      // The response came before the whole body (a backend that answered early): the rest is read and dropped,
      // so the next request is framed where it starts (RFC 9112 §9.3 needs the whole message read).
      this.#body = undefined
      this.#req = undefined
      return
    }
    this.#next()
  }

  /** bodyWanted: the body's reader takes more; read on. */
  bodyWanted(): void {
    if (this.#state === BODY && this.#paused) {
      this.#paused = false
      this.socket.resume()
    }
  }

  // The reading side

  /** onData: bytes from the socket. */
  onData(chunk: Buffer): void {
    switch (this.#state) {
      case HEAD: {
        const pending = this.#pending
        if (pending === undefined) this.#readHeads(chunk, 0)
        else this.#readHeads(Buffer.concat([pending, chunk]), pending.length)
        return
      }
      case BODY:
        this.#readBody(chunk, 0)
        return
      case WAIT:
        // Pipelined behind the request in flight: kept unparsed, and no more read until its response ends.
        this.#pending = this.#pending === undefined ? chunk : Buffer.concat([this.#pending, chunk])
        this.#pause()
        return
    }
  }

  /**
   * #readHeads parses the next request in input, whose first `scanned` bytes are a head already searched (no end,
   * no bare LF): a head sent a byte at a time is searched once, not once per byte.
   */
  #readHeads(input: Buffer, scanned: number): void {
    this.#pending = undefined
    const limits = this.host.h1Limits
    // RFC 9112 §2.2: empty lines before a request line are ignored.
    let skip = 0
    while (input[skip] === 13 && input[skip + 1] === 10) skip += 2
    const buf = skip === 0 ? input : input.subarray(skip)
    if (buf.length === 0) return
    const from = Math.max(0, scanned - skip - 3)
    const end = buf.indexOf(CRLFCRLF, from)
    if (end === -1) {
      if (buf.length > limits.maxHeaderSize) {
        this.#refuse("HPE_HEADER_OVERFLOW", "request head too large")
        return
      }
      if (hasBareLF(buf, from)) {
        this.#refuse("HPE_LF_EXPECTED", "bare LF in the request head")
        return
      }
      this.#pending = buf
      // The head started: its header timeout runs from now (the idle timer ran till here).
      if (this.#timerKind !== T_HEADER) this.#arm(T_HEADER, limits.headerTimeout)
      return
    }
    if (end > limits.maxHeaderSize) {
      this.#refuse("HPE_HEADER_OVERFLOW", "request head too large")
      return
    }
    let req: H1Request
    try {
      req = new H1Request(parseRequestHead(buf.toString("latin1", 0, end)), this.socket)
    } catch (err) {
      if (err instanceof RequestParseError) {
        this.#refuse(err.code, err.message)
        return
      }
      throw err
    }
    const rest: Buffer | undefined = buf.length > end + 4 ? buf.subarray(end + 4) : undefined
    // RFC 9112 §3.2: an HTTP/1.1 request without Host is a 400 (node:http's requireHostHeader).
    if (req.minor === 1 && req.hosts === 0) {
      this.#refuse("HPE_MISSING_HOST", "no Host")
      return
    }
    if (req.upgrade) {
      this.#upgrade(req, rest ?? EMPTY)
      return
    }
    this.#req = req
    const res = new H1Response(this, req, req.keepAlive && !this.host.closing)
    this.#res = res
    if (req.contentLength > 0 || req.chunked) {
      const body = new H1Body(this)
      req.body = body
      this.#body = body
      this.#bodyDone = false
      if (req.chunked) {
        this.#chunked = new ChunkedDecoder(true, parseError)
        this.#remaining = -1
      } else this.#remaining = req.contentLength
      this.#state = BODY
      this.#arm(T_REQUEST, limits.requestTimeout)
    } else {
      this.#bodyDone = true
      this.#state = WAIT
    }
    this.host.onH1Request(req, res)
    if (this.#state === GONE) return
    if (rest !== undefined) {
      const state = this.#state as number
      if (state === BODY) this.#readBody(rest, 0)
      else {
        this.#pending = rest
        this.#pause()
        // HEAD: the engine answered at once (a 417, a 431) and the response is over: serve what follows.
        if (state === HEAD) this.#next()
      }
    }
  }

  /** #readBody feeds body bytes from buf[pos..]; what follows the body waits as the next request. */
  #readBody(buf: Buffer, pos: number): void {
    while (pos < buf.length && !this.#bodyDone) {
      let piece: Buffer | undefined
      if (this.#chunked !== undefined) {
        try {
          pos = this.#chunked.step(buf, pos)
        } catch (err) {
          this.#bodyFailed(err as Error & { code: string })
          return
        }
        piece = this.#chunked.data
        if (this.#chunked.done) this.#bodyDone = true
      } else {
        const end = Math.min(buf.length, pos + this.#remaining)
        piece = pos === 0 && end === buf.length ? buf : buf.subarray(pos, end)
        this.#remaining -= end - pos
        pos = end
        if (this.#remaining === 0) this.#bodyDone = true
      }
      const body = this.#body
      if (piece !== undefined && piece.length > 0 && body !== undefined) {
        body.timer?.refresh()
        if (!body.push(piece)) this.#pause()
      }
    }
    if (this.#bodyDone) this.#bodyEnded(pos < buf.length ? buf.subarray(pos) : undefined)
  }

  #bodyEnded(rest: Buffer | undefined): void {
    const body = this.#body
    const decoder = this.#chunked
    this.#chunked = undefined
    this.#body = undefined
    if (body !== undefined) {
      if (decoder?.trailers !== undefined) body.trailers = decoder.trailers
      body.push(null)
    }
    if (rest !== undefined) this.#pending = rest
    if (this.#res === undefined && this.#req !== undefined && this.#state !== GONE) {
      // The body of a request whose response already ended (read to drop it): the next request may start.
      this.#req = undefined
    }
    if (this.#state === GONE) return
    this.#state = WAIT
    if (this.#req === undefined) this.#next()
    else if (this.#pending !== undefined) this.#pause()
    else if (this.#paused) {
      // Read on only to see the client close; a pipelined request would be kept unparsed (onData).
      this.#paused = false
      this.socket.resume()
    }
  }

  /** #bodyFailed: the body's framing is broken. The request is answered (400) if it can be, and the connection closed. */
  #bodyFailed(err: Error & { code: string }): void {
    const body = this.#body
    this.#body = undefined
    this.#state = GONE
    this.#clearTimer()
    // No response in flight: one was sent already and this body was being read to drop it; just close.
    const started = this.#res === undefined || this.#res.headersSent
    const res = this.#res
    this.#res = undefined
    // The backend's copy of the body must end broken (its connection is then closed, never reused).
    body?.destroy(err)
    this.host.onH1Error(err, this.socket, started)
    this.#linger()
    res?.emitClose()
  }

  /** #next: the response ended and the request is read: serve what was pipelined, or wait for the next request. */
  #next(): void {
    this.#req = undefined
    this.#state = HEAD
    const limits = this.host.h1Limits
    if (this.#pending !== undefined) {
      // Later, not inside the response's end (a caller may still be running): then parse the next request.
      if (!this.#scheduled) {
        this.#scheduled = true
        setImmediate(continuePipeline, this)
      }
      return
    }
    this.#arm(T_IDLE, limits.idleTimeout)
    if (this.#paused) {
      this.#paused = false
      this.socket.resume()
    }
  }

  /** continued: the scheduled parse of pipelined bytes. */
  continued(): void {
    this.#scheduled = false
    if (this.#state !== HEAD) return
    const pending = this.#pending
    if (pending === undefined) {
      this.#next()
      return
    }
    this.#readHeads(pending, 0)
    const state = this.#state as number
    if (state !== WAIT && state !== GONE && this.#paused) {
      // A partial head, or a body, is left to read (a body's reader pauses again when it is full).
      this.#paused = false
      this.socket.resume()
    }
  }

  #upgrade(req: H1Request, rest: Buffer): void {
    this.#state = GONE
    this.#clearTimer()
    this.#detach()
    // Bytes after the head belong to the upgraded protocol; nothing more is read until its pipe starts.
    this.socket.pause()
    this.host.onH1Upgrade(req, this.socket, rest)
  }

  /** #refuse answers a request the parser refused (or a head too large), and closes the connection. */
  #refuse(code: string, message: string): void {
    this.#state = GONE
    this.#pending = undefined
    this.#clearTimer()
    this.host.onH1Error(new RequestParseError(code, message), this.socket, false)
    this.#linger()
  }

  /** #finishAndClose: the last response is written; end the connection once it is flushed. */
  #finishAndClose(): void {
    this.#state = GONE
    this.#pending = undefined
    this.#clearTimer()
    const body = this.#body
    this.#body = undefined
    body?.destroy()
    this.socket.end()
    this.#linger()
  }

  /**
   * #linger: the connection's last bytes are written (socket.end). What the client still sends is read and dropped
   * until it closes too, for at most LINGER_MS: closing with unread bytes would answer them with a reset, and a
   * reset can take the response with it before the client read it (nginx's lingering_close).
   */
  #linger(): void {
    const socket = this.socket
    if (socket.destroyed) return
    this.#paused = false
    socket.resume()
    socket.setTimeout(LINGER_MS, onLingerTimeout)
  }

  #pause(): void {
    if (!this.#paused) {
      this.#paused = true
      this.socket.pause()
    }
  }

  // Timers

  #arm(kind: number, ms: number): void {
    if (ms <= 0) {
      this.#clearTimer()
      return
    }
    if (this.#timer !== undefined && this.#timerKind === kind) {
      this.#timer.refresh()
      return
    }
    if (this.#timer !== undefined) clearTimeout(this.#timer)
    this.#timerKind = kind
    this.#timer = setTimeout(onTimer, ms, this)
  }

  #clearTimer(): void {
    if (this.#timer !== undefined) {
      clearTimeout(this.#timer)
      this.#timer = undefined
      this.#timerKind = 0
    }
  }

  /** timedOut: the timer fired; it counts only in the phase it was set for. */
  timedOut(): void {
    switch (this.#timerKind) {
      case T_HEADER:
        if (this.#state === HEAD) this.#timeout(false)
        return
      case T_REQUEST:
        if (this.#state === BODY) this.#timeout(this.#res?.headersSent === true)
        return
      case T_IDLE:
        // Idle since the last response: closed without a word, as Node's keep-alive timeout does.
        if (this.#state === HEAD && this.#pending === undefined) this.socket.destroy()
        return
    }
  }

  #timeout(responseStarted: boolean): void {
    const body = this.#body
    const res = this.#res
    this.#body = undefined
    this.#res = undefined
    this.#state = GONE
    this.#clearTimer()
    body?.destroy(new Error("request timeout"))
    this.host.onH1Error(new RequestTimeoutError("request timeout"), this.socket, responseStarted)
    this.#linger()
    res?.emitClose()
  }

  // The end

  /** ended: the client closed its side. A head or body it did not finish is a broken request. */
  ended(): void {
    if (this.#state === GONE) return
    if (this.#state === HEAD && this.#pending === undefined && this.#res === undefined) {
      this.socket.end()
      return
    }
    if (this.#state === HEAD) {
      this.#refuse("HPE_INVALID_EOF_STATE", "the client closed inside a request head")
      return
    }
    if (this.#state === BODY && !this.#bodyDone) {
      this.#bodyFailed(new RequestParseError("HPE_INVALID_EOF_STATE", "the client closed inside a request body"))
    }
    // WAIT: the response in flight still goes out (the client half-closed), then the connection ends.
    if (this.#res !== undefined) this.#res.shouldKeepAlive = false
  }

  closed(): void {
    this.#state = GONE
    this.#pending = undefined
    this.#clearTimer()
    this.#detach()
    const body = this.#body
    this.#body = undefined
    if (body !== undefined && !body.readableEnded) body.destroy(new Error("aborted"))
    const res = this.#res
    this.#res = undefined
    if (res !== undefined && !res.writableEnded) {
      res.destroyed = true
      res.emitClose()
    }
  }

  drained(): void {
    this.#res?.emitDrain()
  }

  #detach(): void {
    const socket = this.socket
    socket.off("data", onSocketData)
    socket.off("drain", onSocketDrain)
    socket.off("end", onSocketEnd)
    socket.off("close", onSocketClose)
    ;(socket as WithConnection)[kConnection] = undefined
  }
}

function onSocketData(this: WithConnection, chunk: Buffer): void {
  this[kConnection]?.onData(chunk)
}

function onSocketDrain(this: WithConnection): void {
  this[kConnection]?.drained()
}

function onSocketEnd(this: WithConnection): void {
  this[kConnection]?.ended()
}

function onSocketClose(this: WithConnection): void {
  this[kConnection]?.closed()
}

function onLingerTimeout(this: TLSSocket): void {
  this.destroy()
}

function onTimer(connection: H1Connection): void {
  connection.timedOut()
}

function continuePipeline(connection: H1Connection): void {
  connection.continued()
}

function parseError(message: string, code: string): Error {
  return new RequestParseError(code, `request body: ${message}`)
}

/** hasBareLF: an LF not preceded by CR in a head that is not complete yet (llhttp strict refuses it at once). */
function hasBareLF(buf: Buffer, from: number): boolean {
  let i = buf.indexOf(10, from)
  while (i !== -1) {
    if (i === 0 || buf[i - 1] !== 13) return true
    i = buf.indexOf(10, i + 1)
  }
  return false
}

/** closeIfIdle closes an HTTP/1.1 connection that has no request in flight (a shutdown's closeIdleConnections). */
export function closeIfIdle(socket: TLSSocket): void {
  const connection = (socket as WithConnection)[kConnection]
  // destroy() first writes what this round held (core/write-batch.ts): a response that just ended.
  if (connection?.idle === true) connection.destroy()
}
