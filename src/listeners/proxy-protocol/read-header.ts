/** @module read-header: reads a PROXY v1/v2 header off a raw TCP socket before the TLS handshake, consuming only its bytes. */
import type net from "node:net"
import { ClientError, PortcullisError } from "../../core/errors.ts"
import {
  type ProxyAddress,
  type ProxyTlvs,
  parseProxyHeader,
  V2_DEFAULT_MAX_BYTES,
} from "../../protocols/proxy-protocol/parse.ts"

export type { ProxyAddress, ProxySslInfo, ProxyTlv, ProxyTlvs } from "../../protocols/proxy-protocol/parse.ts"

/** ProxyInfo is what a PROXY header says about the real client: its address, the address it dialled, and v2 TLVs. */
export interface ProxyInfo {
  version: 1 | 2
  source: ProxyAddress
  destination: ProxyAddress
  tlvs: ProxyTlvs
}

/** ReadProxyHeaderOptions: how long the whole header may take, and how large a v2 header may be (v1 is always ≤ 107). */
export interface ReadProxyHeaderOptions {
  timeoutMs: number
  maxBytes?: number
}

/** Per-socket reading state; the handlers below are module-level and find it through the socket. */
interface ReaderState {
  buffered: Buffer | undefined
  maxBytes: number
  timer: NodeJS.Timeout | undefined
  resolve: (info: ProxyInfo | null) => void
  reject: (err: Error) => void
}

const kReader = Symbol("portcullis.proxyHeaderReader")
type ReadingSocket = net.Socket & { [kReader]?: ReaderState }

/**
 * readProxyHeader reads one PROXY header from a fresh socket and puts any bytes after it back (unshift) for the TLS
 * handshake; it resolves to the header's addresses, or null for LOCAL/UNKNOWN/UNSPEC (use the socket's own), and
 * rejects with PC_PROXY_HEADER_INVALID or PC_PROXY_HEADER_TIMEOUT, after which the caller destroys the socket.
 * The socket is left paused with no listeners of ours: attach an 'error' listener (or hand it to TLS) right away.
 */
export function readProxyHeader(socket: net.Socket, options: ReadProxyHeaderOptions): Promise<ProxyInfo | null> {
  return new Promise((resolve, reject) => {
    if (socket.destroyed) {
      reject(
        new ClientError("PC_PROXY_HEADER_INVALID", "proxy protocol: connection closed before the header was complete"),
      )
      return
    }
    const s = socket as ReadingSocket
    const state: ReaderState = {
      buffered: undefined,
      maxBytes: options.maxBytes ?? V2_DEFAULT_MAX_BYTES,
      timer: undefined,
      resolve,
      reject,
    }
    s[kReader] = state
    state.timer = setTimeout(onTimeout, options.timeoutMs, s)
    s.on("data", onData)
    s.on("end", onEnd)
    s.on("error", onError)
    s.on("close", onClose)
  })
}

function onData(this: ReadingSocket, chunk: Buffer): void {
  const state = this[kReader]
  if (!state) return
  const buf = state.buffered ? Buffer.concat([state.buffered, chunk]) : chunk
  let parsed: ReturnType<typeof parseProxyHeader>
  try {
    parsed = parseProxyHeader(buf, state.maxBytes)
  } catch (err) {
    fail(this, state, err as Error)
    return
  }
  if (!parsed) {
    state.buffered = buf
    return
  }
  // Stop flowing before giving the rest back, so the bytes after the header wait for the TLS handshake.
  this.pause()
  detach(this, state)
  if (parsed.length < buf.length) this.unshift(buf.subarray(parsed.length))
  const { header } = parsed
  if (header.command === "local" || !header.source || !header.destination) {
    state.resolve(null)
    return
  }
  state.resolve({ version: header.version, source: header.source, destination: header.destination, tlvs: header.tlvs })
}

function onEnd(this: ReadingSocket): void {
  const state = this[kReader]
  if (state)
    fail(
      this,
      state,
      new ClientError("PC_PROXY_HEADER_INVALID", "proxy protocol: connection ended before the header was complete"),
    )
}

function onClose(this: ReadingSocket): void {
  const state = this[kReader]
  if (state)
    fail(
      this,
      state,
      new ClientError("PC_PROXY_HEADER_INVALID", "proxy protocol: connection closed before the header was complete"),
    )
}

function onError(this: ReadingSocket, err: Error): void {
  const state = this[kReader]
  if (state) {
    fail(
      this,
      state,
      new PortcullisError("PC_PROXY_HEADER_INVALID", `proxy protocol: reading the header: ${err.message}`, {
        source: "client",
        cause: err,
      }),
    )
  }
}

function onTimeout(socket: ReadingSocket): void {
  const state = socket[kReader]
  if (state)
    fail(socket, state, new ClientError("PC_PROXY_HEADER_TIMEOUT", "proxy protocol: the header did not arrive in time"))
}

function fail(socket: ReadingSocket, state: ReaderState, err: Error): void {
  socket.pause()
  detach(socket, state)
  // Keep an 'error' listener: the caller destroys the socket after the rejection, and a late error must not crash us.
  socket.on("error", ignore)
  state.reject(err)
}

function detach(socket: ReadingSocket, state: ReaderState): void {
  clearTimeout(state.timer)
  state.buffered = undefined
  socket[kReader] = undefined
  socket.removeListener("data", onData)
  socket.removeListener("end", onEnd)
  socket.removeListener("error", onError)
  socket.removeListener("close", onClose)
}

function ignore(): void {}
