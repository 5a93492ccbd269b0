/** @module acme: the ACME certificate source: `{ acme: [names] }`, served from the AcmeManager's certificates. */
import type { AcmeCertificateConfig, AcmeConfig } from "../../config/schema.ts"
import { storagePrefix } from "../acme/account.ts"
import type { CertificateFeed, FedCertificate } from "../acme/feed.ts"
import { FileCertificateStorage } from "../acme/file-storage.ts"
import { readStoredCertificate } from "../acme/managed-certificate.ts"
import type { LoadedCertificate } from "../certificate.ts"
import { loadSelfSigned } from "./self-signed.ts"
import type { CertificateSource, CertificateSourceStatus } from "./source.ts"

/**
 * AcmeContext: the running manager's feed (start, reload: the AcmeManager, or a cluster worker's copy of the
 * primary's), or only the acme section (`portcullis check`: no orders).
 */
export interface AcmeContext {
  manager?: CertificateFeed | undefined
  config?: AcmeConfig | undefined
  /** this entry also serves the names on-demand TLS obtains (the first acme entry of a listener) */
  onDemand?: boolean
}

/**
 * AcmeSource serves one `{ acme }` entry: one certificate per key type (`both`: ECDSA and RSA). `load` never waits
 * on the CA: it gives the stored certificate when there is a valid one, else a self-signed stand-in marked pending
 * (acme.while_pending), and `watch` starts the schedule, pushing each issued or renewed certificate to the store.
 */
export class AcmeSource implements CertificateSource {
  readonly names: readonly string[]
  readonly keyTypes: readonly ("ecdsa" | "rsa")[]
  readonly #dataDir: string
  readonly #context: AcmeContext
  readonly #managed: FedCertificate[]
  /** What load() gave last: a certificate that came in between it and watch() is pushed at once. */
  #loaded: LoadedCertificate[] = []

  constructor(entry: AcmeCertificateConfig, dataDir: string, context: AcmeContext) {
    this.names = entry.acme
    this.keyTypes = entry.key_type === "both" ? ["ecdsa", "rsa"] : [entry.key_type]
    this.#dataDir = dataDir
    this.#context = context
    const manager = context.manager
    this.#managed = manager ? this.keyTypes.map((k) => manager.managed(this.names, k)) : []
  }

  async load(): Promise<LoadedCertificate[]> {
    const certs: LoadedCertificate[] = []
    for (const [i, keyType] of this.keyTypes.entries()) {
      const managed = this.#managed[i]
      const stored = managed ? await managed.load() : await this.#readOffline(keyType)
      certs.push(stored ?? (await this.#standIn(keyType)))
    }
    this.#loaded = [...certs, ...this.#onDemand()]
    return this.#loaded
  }

  watch(onChange: (certificates: LoadedCertificate[]) => void): () => void {
    const manager = this.#context.manager
    if (!manager) return () => {}
    const push = () => this.load().then(onChange)
    const stops = this.#managed.map((m) => m.subscribe(() => void push()))
    if (this.#context.onDemand) stops.push(manager.subscribeOnDemand(push))
    for (const m of this.#managed) m.start()
    // A cluster worker's copy may have taken a certificate from the primary while the store was being built.
    const seen = this.#loaded
    let watching = true
    void this.load().then((certs) => {
      const changed = certs.length !== seen.length || certs.some((c, i) => c.fingerprint256 !== seen[i]!.fingerprint256)
      if (watching && changed) onChange(certs)
    })
    return () => {
      watching = false
      for (const stop of stops) stop()
    }
  }

  status(): CertificateSourceStatus {
    const next = this.#managed.flatMap((m) => (m.nextRenewalAt === undefined ? [] : [m.nextRenewalAt]))
    const lastError = this.#managed.find((m) => m.lastError !== undefined)?.lastError
    return {
      kind: "acme",
      ...(next.length > 0 ? { nextRenewalAt: Math.min(...next) } : {}),
      ...(lastError !== undefined ? { lastError } : {}),
    }
  }

  #onDemand(): LoadedCertificate[] {
    return this.#context.onDemand && this.#context.manager ? this.#context.manager.onDemandCertificates() : []
  }

  /** readOffline: `portcullis check` and `certs` show a stored certificate without starting any order. */
  async #readOffline(keyType: "ecdsa" | "rsa"): Promise<LoadedCertificate | undefined> {
    const config = this.#context.config
    if (!config) return undefined
    return readStoredCertificate(
      new FileCertificateStorage(this.#dataDir),
      storagePrefix(config.directory),
      this.names,
      keyType,
    )
  }

  async #standIn(keyType: "ecdsa" | "rsa"): Promise<LoadedCertificate> {
    const cert = await loadSelfSigned(this.names, keyType, this.#dataDir)
    const pending = this.#context.config?.while_pending ?? this.#context.manager?.config.while_pending ?? "self_signed"
    return { ...cert, source: `acme-pending:${this.names.join(",")}`, pending }
  }
}
