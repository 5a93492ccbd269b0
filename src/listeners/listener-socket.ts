/** @module listener-socket: one bound address; it outlives generations, which only swap the handler it feeds. */
import net from "node:net"
import type { HostPort } from "../config/schema.ts"
import { PortcullisError } from "../core/errors.ts"
import type { SocketCounters } from "../state/instruments.ts"
import { Counter } from "../state/registry.ts"

/**
 * ListenTarget is a socket bound elsewhere to listen on: a server handle a cluster primary sent (it binds, every
 * worker accepts on the one socket), or `{ fd }`, a listening socket inherited from the process being replaced.
 */
export type ListenTarget = object | { fd: number }

/** SocketHandler takes an accepted raw TCP socket. */
export type SocketHandler = (socket: net.Socket) => void

/** addressKey names a bound address: "127.0.0.1:8443", "[::]:8443". */
export function addressKey(address: HostPort): string {
  return address.host.includes(":") ? `[${address.host}]:${address.port}` : `${address.host}:${address.port}`
}

/** ListenerSocket binds an address and hands each accepted socket to the current handler. */
export class ListenerSocket {
  readonly address: HostPort
  readonly key: string
  handler: SocketHandler
  /** Connections refused because the listener held max_connections (the runtime's counter for this address). */
  readonly counters: SocketCounters
  readonly #server: net.Server

  constructor(address: HostPort, handler: SocketHandler, counters?: SocketCounters) {
    this.address = address
    this.key = addressKey(address)
    this.handler = handler
    this.counters = counters ?? { refused: new Counter() }
    const refused = this.counters.refused
    this.#server = net.createServer({ noDelay: true, pauseOnConnect: false }, (socket) => {
      socket.on("error", ignore)
      this.handler(socket)
    })
    this.#server.on("error", ignore)
    this.#server.on("drop", () => refused.inc())
  }

  /** refused is how many connections this address closed at accept, across generations and rebinds. */
  get refused(): number {
    return this.counters.refused.value
  }

  /** maxConnections: open client connections past which new ones are closed at accept (the listener's limit). */
  set maxConnections(value: number) {
    this.#server.maxConnections = value
  }

  /** connections is the number of open client connections on this address, all generations together. */
  get connections(): number {
    return (this.#server as unknown as { _connections: number })._connections
  }

  /** fd is the listening socket's file descriptor (-1 before start or after close). */
  get fd(): number {
    const handle = (this.#server as unknown as { _handle?: { fd?: number } | null })._handle
    return handle?.fd ?? -1
  }

  /**
   * start binds the address, or listens on `target` (bound elsewhere, see ListenTarget); rejects with
   * PC_LISTEN_FAILED naming the address (e.g. EADDRINUSE).
   */
  start(target?: ListenTarget): Promise<void> {
    return new Promise((resolve, reject) => {
      const onError = (err: NodeJS.ErrnoException) => {
        reject(
          new PortcullisError("PC_LISTEN_FAILED", `binding ${this.key}: ${err.code ?? err.message}`, { cause: err }),
        )
      }
      this.#server.once("error", onError)
      const done = () => {
        this.#server.off("error", onError)
        resolve()
      }
      if (target) this.#server.listen(target, 1024, done)
      else this.#server.listen({ host: this.address.host, port: this.address.port, backlog: 1024 }, done)
    })
  }

  /** port is the bound port (useful with port 0 in tests). */
  get port(): number {
    const a = this.#server.address()
    return a && typeof a === "object" ? a.port : 0
  }

  /**
   * close stops accepting; open connections are the generations' to finish. It does not wait for them: net.Server's
   * close callback would, so a long-lived tcp connection kept Runtime.close from reaching the generations' grace.
   */
  close(): Promise<void> {
    this.#server.close()
    return Promise.resolve()
  }
}

function ignore(): void {}
