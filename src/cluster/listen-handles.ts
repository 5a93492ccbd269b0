/**
 * @module listen-handles: the cluster primary's bound listening sockets, by address. The primary binds each one
 * (or wraps the descriptor it inherited) and sends the handle to every worker, which listens on it: one socket,
 * one accept queue, the kernel hands each connection to one of the workers waiting in accept (as the cluster
 * module's SCHED_NONE does). The primary never accepts; it holds the socket so that it stays open while workers
 * come and go (rolling restart, a crash) and can pass it on to a new binary (takeover).
 */
import net from "node:net"
import { getSystemErrorName } from "node:util"
import type { HostPort } from "../config/schema.ts"
import { PortcullisError } from "../core/errors.ts"
import type { InheritedFds } from "./inherited-fds.ts"

/**
 * ServerHandle is Node's TCP wrap for a bound socket (what net._createServerHandle returns, and what
 * child_process.send carries as a "net.Native" handle).
 */
export interface ServerHandle {
  readonly fd: number
  getsockname(out: { address?: string; port?: number }): number
  close(): void
}

/**
 * createServerHandle is net's own `_createServerHandle(address, port, addressType, fd)`: it binds (or wraps `fd`)
 * without listening, so this process accepts nothing. It is what the cluster module's primary uses for shared
 * handles; net exports it, undocumented, and returns an errno (a negative number) on failure.
 */
const createServerHandle = (
  net as unknown as {
    _createServerHandle: (
      address: string | null,
      port: number,
      addressType: number,
      fd?: number,
    ) => ServerHandle | number
  }
)._createServerHandle

/** ListenHandles: bound server handles by listen key (addressKey of the address). */
export class ListenHandles {
  readonly #handles = new Map<string, ServerHandle>()
  readonly #inherited: InheritedFds

  constructor(inherited: InheritedFds) {
    this.#inherited = inherited
  }

  /** get returns the handle for key, binding the address (or wrapping the inherited descriptor) the first time. */
  get(key: string, address: HostPort): ServerHandle {
    const held = this.#handles.get(key)
    if (held) return held
    const fd = this.#inherited.take(key)
    const made =
      fd !== undefined
        ? // port 0, not -1: with an fd, net asserts that no address and no port are given.
          createServerHandle(null, 0, 0, fd)
        : createServerHandle(address.host, address.port, net.isIPv6(address.host) ? 6 : 4)
    if (typeof made === "number") {
      throw new PortcullisError("PC_LISTEN_FAILED", `binding ${key}: ${getSystemErrorName(made)}`)
    }
    // libuv keeps an EADDRINUSE from bind() to report it at listen(), in this process's handle; a worker's copy of
    // the descriptor does not carry it, and listen() on the unbound socket would pick a random port. An unbound
    // socket has port 0: that is the bind failure.
    const bound: { port?: number } = {}
    made.getsockname(bound)
    if (!bound.port) {
      made.close()
      throw new PortcullisError("PC_LISTEN_FAILED", `binding ${key}: EADDRINUSE`)
    }
    this.#handles.set(key, made)
    return made
  }

  /** port is the bound port of key's handle (0 when none). */
  port(key: string): number {
    const out: { port?: number } = {}
    this.#handles.get(key)?.getsockname(out)
    return out.port ?? 0
  }

  /** fds maps every held key to its descriptor (for a successor process). */
  fds(): Map<string, number> {
    const out = new Map<string, number>()
    for (const [key, h] of this.#handles) out.set(key, h.fd)
    return out
  }

  /** retain closes the handles of addresses no longer configured (workers have closed theirs already). */
  retain(keys: Iterable<string>): void {
    const keep = new Set(keys)
    for (const [key, h] of this.#handles) {
      if (keep.has(key)) continue
      h.close()
      this.#handles.delete(key)
    }
  }

  close(): void {
    this.retain([])
  }
}
