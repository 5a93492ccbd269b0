/** @module pool: the interface every backend connection pool implements (HTTP/1.1 now; HTTP/2 next to it). */
import type { Dispatcher } from "undici"
import type { ConnectionInfo } from "../core/connection-info.ts"

/**
 * BackendPool is what the proxy needs of a backend's connection pool (undici's Pool has it too). dispatch sends one
 * request and reports through the handler; `client` is the client connection the request is for, which a pool whose
 * connections belong to one client (send_proxy_protocol: ProxiedPool) keys on; other pools ignore it.
 */
export interface BackendPool {
  dispatch(options: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler, client?: ConnectionInfo): boolean
  /** close lets requests in flight finish, then closes every connection. */
  close(): Promise<void>
  /** destroy closes every connection now; requests in flight fail. */
  destroy(): Promise<void>
}
