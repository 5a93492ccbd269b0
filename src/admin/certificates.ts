/** @module certificates: GET /certificates: every certificate the running generation serves, never key material. */
import { TlsListener } from "../listeners/tls-listener.ts"
import type { Generation } from "../runtime.ts"
import { certificateSourceKind } from "./metrics-endpoint.ts"

/** CertificateEntry: one certificate of one listener as the admin API shows it. */
export interface CertificateEntry {
  listener: string
  names: string[]
  key_type: string
  issuer: string
  not_after: string
  days_left: number
  source: string
  source_kind: string
  fingerprint256: string
}

/** certificateList reads the certificates off each TLS listener of the generation (the names, not the keys). */
export function certificateList(gen: Generation | undefined, now = Date.now()): { certificates: CertificateEntry[] } {
  const certificates: CertificateEntry[] = []
  if (!gen) return { certificates }
  for (const l of gen.listeners.values()) {
    if (!(l instanceof TlsListener)) continue
    for (const c of l.certs.certificates()) {
      certificates.push({
        listener: l.config.name,
        names: [...c.names],
        key_type: c.keyType,
        issuer: c.leaf.issuer.replace(/\n/g, ","),
        not_after: c.notAfter.toISOString(),
        days_left: Math.floor((c.notAfter.getTime() - now) / 86_400_000),
        source: c.source,
        source_kind: certificateSourceKind(c.source),
        fingerprint256: c.fingerprint256,
      })
    }
  }
  return { certificates }
}
