/** @module h1-request: one HTTP/1.1 request's head as the exchange reads it, and its body as a Readable (if any). */
import type { IncomingHttpHeaders } from "node:http"
import { Readable } from "node:stream"
import type { TLSSocket } from "node:tls"
import type { RequestHead } from "./request-head.ts"

/** BodyOwner: the connection that feeds a body; told when the body's reader wants more (backpressure). */
export interface BodyOwner {
  bodyWanted(): void
}

/**
 * H1Body: the request body, pushed by the connection as it decodes it. Made only for a request that has one (a GET
 * costs no stream). `trailers` holds a chunked body's trailer section once it ended (as IncomingMessage.trailers).
 */
export class H1Body extends Readable {
  readonly owner: BodyOwner
  trailers: Record<string, string | string[]> | undefined = undefined
  /** The exchange's body idle timer, refreshed by each piece the connection pushes (exchange.ts watchBody). */
  timer: NodeJS.Timeout | undefined = undefined

  constructor(owner: BodyOwner) {
    super()
    this.owner = owner
  }

  override _read(): void {
    this.owner.bodyWanted()
  }

  override _destroy(err: Error | null, callback: (error?: Error | null) => void): void {
    // As IncomingMessage: a body aborted with nobody listening for 'error' is not an uncaught exception.
    callback(err !== null && this.listenerCount("error") > 0 ? err : null)
  }
}

/** H1Request: one parsed request head; the members the engine and the exchange read (named as IncomingMessage's). */
export class H1Request {
  readonly method: string
  /** The target; authority.ts rewrites an absolute-form target to origin form. */
  url: string
  /** [name, value, ...] as the client sent them. */
  readonly rawHeaders: string[]
  readonly socket: TLSSocket
  /** 0: HTTP/1.0, 1: HTTP/1.1. */
  readonly minor: number
  /** The body's Content-Length; -1 when chunked or none. */
  readonly contentLength: number
  readonly chunked: boolean
  readonly expect: string | undefined
  readonly upgrade: boolean
  /** The client lets the connection carry another request after this one. */
  readonly keepAlive: boolean
  /** Host fields sent. */
  readonly hosts: number
  /** The body, while it is (or was) read; undefined: the request has none. */
  body: H1Body | undefined = undefined
  #headers: IncomingHttpHeaders | undefined = undefined

  constructor(head: RequestHead, socket: TLSSocket) {
    this.method = head.method
    this.url = head.url
    this.rawHeaders = head.raw
    this.socket = socket
    this.minor = head.minor
    this.contentLength = head.contentLength
    this.chunked = head.chunked
    this.expect = head.expect
    this.upgrade = head.upgrade
    this.keepAlive = head.keepAlive
    this.hosts = head.hosts
  }

  get httpVersion(): string {
    return this.minor === 1 ? "1.1" : "1.0"
  }

  /** header: the value of one field (name in lower case), repeats joined with ", " (cookie: "; "); undefined: none. */
  header(name: string): string | undefined {
    const raw = this.rawHeaders
    let out: string | undefined
    for (let i = 0; i < raw.length; i += 2) {
      const n = raw[i]!
      if (n.length !== name.length || !sameName(n, name)) continue
      const value = raw[i + 1]!
      out = out === undefined ? value : `${out}${name === "cookie" ? "; " : ", "}${value}`
    }
    return out
  }

  /** headers: IncomingMessage's object (lower-case names, repeats joined, set-cookie a list); built on first use. */
  get headers(): IncomingHttpHeaders {
    if (this.#headers !== undefined) return this.#headers
    const out: Record<string, string | string[]> = Object.create(null)
    const raw = this.rawHeaders
    for (let i = 0; i < raw.length; i += 2) {
      const name = raw[i]!.toLowerCase()
      const value = raw[i + 1]!
      const seen = out[name]
      if (name === "set-cookie") {
        if (seen === undefined) out[name] = [value]
        else (seen as string[]).push(value)
      } else if (seen === undefined) out[name] = value
      else out[name] = `${seen}${name === "cookie" ? "; " : ", "}${value}`
    }
    this.#headers = out as IncomingHttpHeaders
    return this.#headers
  }

  /** on/once read the request body ('data', 'end'), as on IncomingMessage. */
  on(event: "data" | "end", listener: (chunk: Buffer) => void): this {
    this.body?.on(event, listener)
    return this
  }

  once(event: "data" | "end", listener: (chunk: Buffer) => void): this {
    this.body?.once(event, listener)
    return this
  }
}

/** sameName: name (any case) equals lower (lower case, same length). */
function sameName(name: string, lower: string): boolean {
  for (let i = 0; i < lower.length; i++) {
    if ((name.charCodeAt(i) | 0x20) !== lower.charCodeAt(i)) return false
  }
  return true
}
