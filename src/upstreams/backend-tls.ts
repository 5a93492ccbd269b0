/** @module backend-tls: an upstream's TLS material toward its backends (re-encryption, mTLS), read once per generation. */
import { readFileSync } from "node:fs"
import type { UpstreamConfig } from "../config/schema.ts"
import { TlsError } from "../core/errors.ts"
import type { Logger } from "../core/log.ts"
import { Secret } from "../core/secret.ts"
import type { DialTls } from "./dial.ts"

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

/** dialTls is the material as the dialer takes it (the key revealed, kept only until its context is built). */
export function dialTls(tls: BackendTls | undefined): DialTls | undefined {
  return (
    tls && {
      ca: tls.ca,
      cert: tls.cert,
      key: tls.key?.reveal(),
      servername: tls.servername,
      rejectUnauthorized: tls.rejectUnauthorized,
    }
  )
}
