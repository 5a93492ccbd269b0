/**
 * @module certificates: every certificate in use as one row (names, key type, issuer, expiry, source, next renewal,
 * OCSP status), for GET /certificates and `portcullis certs`; never key material.
 */
import type { Config } from "../config/schema.ts"
import { TlsListener } from "../listeners/tls-listener.ts"
import type { Generation } from "../runtime.ts"
import type { LoadedCertificate } from "../tls/certificate.ts"
import { OcspCache } from "../tls/ocsp/cache.ts"
import { ocspUrlOf } from "../tls/ocsp/request.ts"
import type { OcspStatus } from "../tls/ocsp/stapler.ts"
import { certificateSource, loadEntries } from "../tls/sources/index.ts"
import type { CertificateSourceStatus } from "../tls/sources/source.ts"
import { certificateSourceKind } from "./metrics-endpoint.ts"

const DAY = 86_400_000

/** OcspEntry: a certificate's OCSP state as shown (snake_case, like the rest of the admin API). */
export interface OcspEntry {
  status: OcspStatus["status"]
  stapled: boolean
  url?: string | undefined
  this_update?: string | undefined
  next_update?: string | undefined
  next_refresh?: string | undefined
  last_error?: string | undefined
}

/** CertificateEntry: one certificate of one listener as the admin API and `portcullis certs --json` show it. */
export interface CertificateEntry {
  listener: string
  names: string[]
  key_type: string
  issuer: string
  not_after: string
  days_left: number
  /** where it came from: a file path, "self-signed:<path>", an ACME description */
  source: string
  /** file, self_signed or acme (the /metrics label) */
  source_kind: string
  fingerprint256: string
  /** when the source next renews it by itself (ACME), ISO 8601 */
  next_renewal?: string | undefined
  /** the source's last renewal or issuance failure */
  renewal_error?: string | undefined
  ocsp: OcspEntry
}

/** certificateList reads the certificates off each TLS listener of the generation (the names, not the keys). */
export function certificateList(
  gen: Generation | undefined,
  ocspStatus: (cert: LoadedCertificate) => OcspStatus = () => ({ status: "none", stapled: false }),
  now = Date.now(),
): { certificates: CertificateEntry[] } {
  const certificates: CertificateEntry[] = []
  if (!gen) return { certificates }
  for (const l of gen.listeners.values()) {
    if (!(l instanceof TlsListener)) continue
    for (const [i, list] of l.certs.entries().entries()) {
      for (const c of list) {
        certificates.push(entryOf(l.config.name, c, l.certs.sourceStatus(i), ocspEntry(ocspStatus(c)), now))
      }
    }
  }
  return { certificates }
}

/**
 * certificatesOfConfig loads the config's certificates as a start would (no binding) and reads each one's OCSP
 * state from the cache the running instance keeps under data_dir; `errors` are certificates that did not load.
 */
export async function certificatesOfConfig(
  config: Config,
  now = Date.now(),
): Promise<{ certificates: CertificateEntry[]; errors: string[] }> {
  const certificates: CertificateEntry[] = []
  const errors: string[] = []
  const cache = new OcspCache(config.data_dir)
  for (const listener of config.listeners) {
    if (!listener.tls) continue
    // As `check` does: ACME entries read from storage with the acme section, no orders placed.
    const loaded = await loadEntries(listener.tls, config.data_dir, (entry, dataDir) =>
      certificateSource(entry, dataDir, { config: config.acme }),
    )
    for (const p of loaded.problems) errors.push(`listener ${listener.name}: ${p.message}`)
    for (const [i, list] of loaded.certificates.entries()) {
      for (const c of list ?? []) {
        const ocsp = listener.tls.ocsp_stapling ? cachedOcsp(cache, c) : { status: "none" as const, stapled: false }
        certificates.push(entryOf(listener.name, c, loaded.sources[i]?.status?.(), ocsp, now))
      }
    }
  }
  return { certificates, errors }
}

/** cachedOcsp is what the running instance last wrote for the certificate (none when it names no responder). */
function cachedOcsp(cache: OcspCache, cert: LoadedCertificate): OcspEntry {
  const url = ocspUrlOf(cert.leaf)
  if (!url) return { status: "none", stapled: false }
  const state = cache.readState(OcspCache.keyOf(cert.fingerprint256))
  if (!state) return { status: "pending", stapled: false, url }
  const valid = state.nextUpdate === undefined || Date.parse(state.nextUpdate) > Date.now()
  return {
    status: state.status,
    stapled: state.status === "good" && valid,
    url,
    this_update: state.thisUpdate,
    next_update: state.nextUpdate,
    next_refresh: state.nextRefreshAt,
    last_error: state.lastError,
  }
}

function ocspEntry(s: OcspStatus): OcspEntry {
  return {
    status: s.status,
    stapled: s.stapled,
    url: s.url,
    this_update: s.thisUpdate,
    next_update: s.nextUpdate,
    next_refresh: s.nextRefreshAt,
    last_error: s.lastError,
  }
}

function entryOf(
  listener: string,
  c: LoadedCertificate,
  source: CertificateSourceStatus | undefined,
  ocsp: OcspEntry,
  now: number,
): CertificateEntry {
  return {
    listener,
    names: [...c.names],
    key_type: c.keyType,
    issuer: c.leaf.issuer.replace(/\n/g, ","),
    not_after: c.notAfter.toISOString(),
    days_left: Math.floor((c.notAfter.getTime() - now) / DAY),
    source: c.source,
    source_kind: source ? source.kind.replace("-", "_") : certificateSourceKind(c.source),
    fingerprint256: c.fingerprint256,
    next_renewal: source?.nextRenewalAt === undefined ? undefined : new Date(source.nextRenewalAt).toISOString(),
    renewal_error: source?.lastError,
    ocsp,
  }
}
