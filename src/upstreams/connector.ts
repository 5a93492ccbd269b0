/** @module connector: opens backend connections, plain TCP or TLS (re-encryption, optional mTLS), kept alive in a pool. */
import { readFileSync } from "node:fs"
import { Pool } from "undici"
import type { UpstreamConfig } from "../config/schema.ts"
import { TlsError } from "../core/errors.ts"
import type { Logger } from "../core/log.ts"
import { Secret } from "../core/secret.ts"
import type { Backend } from "./backend.ts"

/** BackendTls is the upstream's TLS material, read once per generation. */
export interface BackendTls {
  ca?: Buffer
  cert?: Buffer
  key?: Secret<Buffer>
  servername?: string
  rejectUnauthorized: boolean
}

/** loadBackendTls reads the upstream's CA, client certificate and key files; errors name the file. */
export function loadBackendTls(name: string, config: UpstreamConfig, log: Logger): BackendTls | undefined {
  const tls = config.tls
  if (!tls) return undefined
  const read = (what: string, path: string | undefined) => {
    if (path === undefined) return undefined
    try {
      return readFileSync(path)
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? "error"
      throw new TlsError("PC_TLS_CERT_LOAD", `upstream ${name}: reading ${what} ${path}: ${code}`, { cause: err })
    }
  }
  if (tls.insecure_skip_verify) {
    log.warn({ upstream: name }, `upstream ${name}: insecure_skip_verify is on: backend certificates are not verified`)
  }
  const key = read("key", tls.key)
  return {
    ca: read("ca", tls.ca),
    cert: read("cert", tls.cert),
    key: key ? new Secret(key) : undefined,
    servername: tls.servername,
    rejectUnauthorized: !tls.insecure_skip_verify,
  }
}

/** createBackendPool makes the keep-alive connection pool for one backend. */
export function createBackendPool(backend: Backend, config: UpstreamConfig, tls: BackendTls | undefined): Pool {
  const host = backend.address.host.includes(":") ? `[${backend.address.host}]` : backend.address.host
  const origin = `${tls ? "https" : "http"}://${host}:${backend.address.port}`
  return new Pool(origin, {
    connections: Number.isFinite(backend.maxConnections) ? backend.maxConnections : null,
    pipelining: 1,
    headersTimeout: config.timeouts.response,
    bodyTimeout: config.timeouts.idle,
    keepAliveMaxTimeout: config.timeouts.idle,
    // Forwarded requests carry whatever the client sent; the backend enforces its own limits.
    maxHeaderSize: 64 * 1024,
    connect: {
      timeout: config.timeouts.connect,
      ...(tls && {
        ca: tls.ca,
        cert: tls.cert,
        key: tls.key?.reveal(),
        servername: tls.servername ?? (isHostname(backend.address.host) ? backend.address.host : undefined),
        rejectUnauthorized: tls.rejectUnauthorized,
        ALPNProtocols: ["http/1.1"],
      }),
    },
  })
}

function isHostname(host: string): boolean {
  return !/^[\d.]+$/.test(host) && !host.includes(":")
}
