/**
 * @module ipc-certificate-feed: a cluster worker's ACME certificates, challenge answers and on-demand TLS, fed by the
 * primary over IPC: the primary's AcmeManager orders and renews, pushes every certificate it takes and every
 * challenge it answers, and decides on-demand names; the worker only serves what it was sent.
 */
import type { AcmeConfig } from "../config/schema.ts"
import { errorMessage } from "../core/errors.ts"
import type { Logger } from "../core/log.ts"
import { Http01Responder } from "../tls/acme/challenges/http-01.ts"
import { TlsAlpnResponder } from "../tls/acme/challenges/tls-alpn-01.ts"
import {
  type AcmeSnapshot,
  type CertificateFeed,
  type ChallengeChange,
  type FedCertificate,
  managedKey,
  type OnDemandRequests,
  type WireCertificate,
} from "../tls/acme/feed.ts"
import { OnDemandNames } from "../tls/acme/on-demand.ts"
import { type LoadedCertificate, parseCertificate } from "../tls/certificate.ts"

/** PushedCertificate: the worker's copy of one of the primary's managed certificates (no schedule of its own). */
class PushedCertificate implements FedCertificate {
  readonly names: readonly string[]
  readonly keyType: "ecdsa" | "rsa"
  readonly nextRenewalAt = undefined
  readonly lastError = undefined
  readonly #subscribers = new Set<(cert: LoadedCertificate) => void>()
  #current: LoadedCertificate | undefined

  constructor(names: readonly string[], keyType: "ecdsa" | "rsa") {
    this.names = names
    this.keyType = keyType
  }

  get current(): LoadedCertificate | undefined {
    return this.#current
  }

  get subscribers(): number {
    return this.#subscribers.size
  }

  load(): Promise<LoadedCertificate | undefined> {
    return Promise.resolve(this.#current)
  }

  subscribe(fn: (cert: LoadedCertificate) => void): () => void {
    this.#subscribers.add(fn)
    return () => this.#subscribers.delete(fn)
  }

  /** start: the primary's copy runs the schedule. */
  start(): void {}

  /** set takes a pushed certificate and tells the subscribers (their stores swap it in place); false: no change. */
  set(cert: LoadedCertificate): boolean {
    if (cert.fingerprint256 === this.#current?.fingerprint256) return false
    this.#current = cert
    for (const fn of this.#subscribers) fn(cert)
    return true
  }

  close(): void {
    this.#subscribers.clear()
  }
}

/**
 * IpcCertificateFeed implements CertificateFeed for a worker. `ask` asks the primary about an on-demand name and
 * resolves true when it obtained a certificate (pushed before the answer, on the same channel, so it is in by then).
 */
export class IpcCertificateFeed implements CertificateFeed {
  readonly http01 = new Http01Responder()
  readonly tlsAlpn = new TlsAlpnResponder()
  #config: AcmeConfig | undefined
  #onDemand: OnDemandRequests | undefined
  readonly #ask: (name: string) => Promise<boolean>
  readonly #log: Logger
  readonly #certs = new Map<string, PushedCertificate>()
  readonly #onDemandKeys = new Set<string>()
  readonly #onDemandSubscribers = new Set<() => Promise<void>>()
  /** The last on-demand notification (every store swapped the certificate in once it settles). */
  #notified: Promise<void> = Promise.resolve()
  readonly #inFlight = new Map<string, Promise<boolean>>()

  constructor(snapshot: AcmeSnapshot | undefined, ask: (name: string) => Promise<boolean>, log: Logger) {
    this.#ask = ask
    this.#log = log
    for (const cert of snapshot?.certs ?? []) this.take(cert)
    for (const change of snapshot?.challenges ?? []) this.challenge(change)
  }

  get config(): AcmeConfig {
    if (!this.#config) throw new RangeError("acme feed: no acme section configured")
    return this.#config
  }

  get onDemand(): OnDemandRequests | undefined {
    return this.#onDemand
  }

  /** configure follows the config's acme section (a reload that changed it: the primary's manager changed too). */
  configure(config: AcmeConfig): this {
    this.#config = config
    const onDemand = config.on_demand
    if (!onDemand) {
      this.#onDemand = undefined
      return this
    }
    const names = new OnDemandNames(onDemand.names)
    this.#onDemand = {
      request: (servername) => {
        // Names outside the patterns are refused here, with no round trip; the rest is the primary's to decide.
        const name = names.accepts(servername)
        if (name === undefined) return undefined
        let run = this.#inFlight.get(name)
        if (!run) {
          run = this.#ask(name)
            .then(async (ok) => {
              await this.#notified
              return ok
            })
            .finally(() => this.#inFlight.delete(name))
          this.#inFlight.set(name, run)
        }
        return run
      },
    }
    return this
  }

  managed(names: readonly string[], keyType: "ecdsa" | "rsa"): FedCertificate {
    return this.#entry(names, keyType)
  }

  #entry(names: readonly string[], keyType: "ecdsa" | "rsa"): PushedCertificate {
    const { key, names: wanted } = managedKey(names, keyType)
    let entry = this.#certs.get(key)
    if (!entry) {
      entry = new PushedCertificate(wanted, keyType)
      this.#certs.set(key, entry)
    }
    return entry
  }

  /** take swaps in a certificate the primary pushed (issued, renewed, loaded): its stores replace it in place. */
  take(wire: WireCertificate): void {
    let cert: LoadedCertificate
    try {
      cert = parseCertificate(wire.chainPem, wire.keyPem, wire.source)
    } catch (err) {
      this.#log.error({ names: wire.names, err: errorMessage(err) }, "acme certificate from the primary refused")
      return
    }
    const entry = this.#entry(wire.names, wire.keyType)
    const changed = entry.set(cert)
    const key = managedKey(wire.names, wire.keyType).key
    const added = wire.onDemand && !this.#onDemandKeys.has(key)
    if (added) this.#onDemandKeys.add(key)
    if (added || (changed && this.#onDemandKeys.has(key))) {
      const subscribers = [...this.#onDemandSubscribers]
      const previous = this.#notified
      this.#notified = previous.then(() => Promise.allSettled(subscribers.map((fn) => fn()))).then(() => {})
    }
  }

  /** challenge makes (or withdraws) a challenge answer the primary relayed. */
  challenge(change: ChallengeChange): void {
    if (change.type === "http-01") this.http01.apply(change)
    else this.tlsAlpn.apply(change)
  }

  onDemandCertificates(): LoadedCertificate[] {
    const out: LoadedCertificate[] = []
    for (const key of this.#onDemandKeys) {
      const current = this.#certs.get(key)?.current
      if (current) out.push(current)
    }
    return out
  }

  subscribeOnDemand(fn: () => Promise<void>): () => void {
    this.#onDemandSubscribers.add(fn)
    return () => this.#onDemandSubscribers.delete(fn)
  }

  /** prune forgets copies no store serves (the primary's manager stops their schedules in its own prune). */
  prune(): void {
    for (const [key, entry] of this.#certs) {
      if (entry.subscribers === 0 && !this.#onDemandKeys.has(key)) this.#certs.delete(key)
    }
  }

  close(): void {
    for (const entry of this.#certs.values()) entry.close()
    this.#onDemandSubscribers.clear()
  }
}
