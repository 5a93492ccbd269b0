/**
 * @module manager: AcmeManager, the runtime's ACME state that outlives generations: the account, the challenge
 * responders, every managed certificate by names and key type, and on-demand TLS.
 */
import type { AcmeConfig } from "../../config/schema.ts"
import type { Logger } from "../../core/log.ts"
import type { AcmeCounters } from "../../state/instruments.ts"
import type { LoadedCertificate } from "../certificate.ts"
import { AcmeAccount } from "./account.ts"
import { DnsHookSolver } from "./challenges/dns-01.ts"
import { Http01Responder } from "./challenges/http-01.ts"
import type { ChallengeSolver } from "./challenges/solver.ts"
import { TlsAlpnResponder } from "./challenges/tls-alpn-01.ts"
import {
  type AcmeSnapshot,
  type CertificateFeed,
  type ChallengeRelay,
  managedKey,
  type WireCertificate,
} from "./feed.ts"
import { ManagedCertificate } from "./managed-certificate.ts"
import { OnDemand } from "./on-demand.ts"
import type { CertificateStorage } from "./storage.ts"

/** defaultChallenges: dns-01 alone when a hook is set (Caddy does the same with a DNS provider), else http-01 and tls-alpn-01. */
export function challengeTypes(config: AcmeConfig): readonly ("http-01" | "tls-alpn-01" | "dns-01")[] {
  return config.challenges ?? (config.dns_hook ? ["dns-01"] : ["http-01", "tls-alpn-01"])
}

/** AcmeManagerOptions: what the runtime hands the manager. */
export interface AcmeManagerOptions {
  storage: CertificateStorage
  log: Logger
  counters: AcmeCounters
  random?: () => number
  /** With a shared storage: how often each certificate looks for a copy another instance stored (ms). */
  watchMs?: number
  /**
   * A cluster primary's: told of each challenge answer made or withdrawn (present waits for it, so every worker
   * answers before the CA validates), and of each certificate taken, to push it to the workers.
   */
  relay?: ChallengeRelay
  onCertificate?: (cert: WireCertificate) => void
}

/**
 * AcmeManager is made by the runtime when the config has an acme section, and kept across reloads while that
 * section stays the same: a reload's sources find the same managed certificates (no new order) and the same
 * responders the listeners answer challenges from.
 */
export class AcmeManager implements CertificateFeed {
  readonly config: AcmeConfig
  readonly account: AcmeAccount
  readonly http01 = new Http01Responder()
  readonly tlsAlpn = new TlsAlpnResponder()
  readonly solvers: readonly ChallengeSolver[]
  readonly onDemand: OnDemand | undefined
  readonly #options: AcmeManagerOptions
  readonly #managed = new Map<string, ManagedCertificate>()
  /** On-demand certificates by name, and who serves them (the first acme entry of each listener). */
  readonly #onDemandCerts = new Map<string, ManagedCertificate>()
  readonly #onDemandSubscribers = new Set<() => Promise<void>>()
  /** Managed on-demand certificates already followed (their renewals reach the subscribers too). */
  readonly #followed = new WeakSet<ManagedCertificate>()

  constructor(config: AcmeConfig, options: AcmeManagerOptions) {
    this.config = config
    this.#options = options
    this.account = new AcmeAccount(config, options.storage)
    this.http01.relay = options.relay
    this.tlsAlpn.relay = options.relay
    const byType: Record<string, ChallengeSolver> = {
      "http-01": this.http01,
      "tls-alpn-01": this.tlsAlpn,
      ...(config.dns_hook ? { "dns-01": new DnsHookSolver(config.dns_hook) } : {}),
    }
    this.solvers = challengeTypes(config).flatMap((type) => (byType[type] ? [byType[type]] : []))
    this.onDemand = config.on_demand
      ? new OnDemand(
          config.on_demand,
          (name) => this.#obtainOnDemand(name),
          options.log.child({ acme: "on_demand" }),
          options.counters,
        )
      : undefined
  }

  /** managed is the one ManagedCertificate for these names and key type (made on first use). */
  managed(names: readonly string[], keyType: "ecdsa" | "rsa"): ManagedCertificate {
    const { key, names: wanted } = managedKey(names, keyType)
    let managed = this.#managed.get(key)
    if (!managed) {
      const onCertificate = this.#options.onCertificate
      managed = new ManagedCertificate({
        account: this.account,
        config: this.config,
        names: wanted,
        keyType,
        solvers: this.solvers,
        log: this.#options.log,
        counters: this.#options.counters,
        ...(this.#options.random ? { random: this.#options.random } : {}),
        ...(this.#options.watchMs !== undefined ? { watchMs: this.#options.watchMs } : {}),
        ...(onCertificate && { onAdopt: (cert: LoadedCertificate) => onCertificate(this.#wire(managed!, cert)) }),
      })
      this.#managed.set(key, managed)
    }
    return managed
  }

  /** managedCount: how many certificates the manager looks after (status, tests). */
  get managedCount(): number {
    return this.#managed.size
  }

  /** onDemandCertificates lists the certificates on-demand TLS obtained so far. */
  onDemandCertificates(): LoadedCertificate[] {
    return [...this.#onDemandCerts.values()].flatMap((m) => (m.current ? [m.current] : []))
  }

  /**
   * subscribeOnDemand calls fn whenever an on-demand certificate is added or renewed; an addition waits for every
   * fn's promise (its store's swap) before the handshake that asked for it goes on.
   */
  subscribeOnDemand(fn: () => Promise<void>): () => void {
    this.#onDemandSubscribers.add(fn)
    return () => this.#onDemandSubscribers.delete(fn)
  }

  async #obtainOnDemand(name: string): Promise<void> {
    const managed = this.#onDemandCerts.get(name) ?? this.managed([name], "ecdsa")
    await managed.obtain()
    if (!this.#followed.has(managed)) {
      this.#followed.add(managed)
      managed.subscribe(() => void this.#notifyOnDemand())
    }
    // Only now is it served: the subscribers' stores swap it in before the handshake that asked goes on.
    this.#onDemandCerts.set(name, managed)
    if (managed.current) this.#options.onCertificate?.(this.#wire(managed, managed.current))
    await this.#notifyOnDemand()
  }

  /** snapshot is every certificate held now and every challenge answered now (for a worker that starts). */
  snapshot(): AcmeSnapshot {
    const certs: WireCertificate[] = []
    for (const m of this.#managed.values()) if (m.current) certs.push(this.#wire(m, m.current))
    return { certs, challenges: [...this.http01.pending(), ...this.tlsAlpn.pending()] }
  }

  #wire(managed: ManagedCertificate, cert: LoadedCertificate): WireCertificate {
    let onDemand = false
    for (const m of this.#onDemandCerts.values()) if (m === managed) onDemand = true
    return {
      source: cert.source,
      names: [...managed.names],
      keyType: managed.keyType,
      chainPem: cert.chainPem,
      keyPem: cert.key.reveal(),
      onDemand,
    }
  }

  async #notifyOnDemand(): Promise<void> {
    await Promise.allSettled([...this.#onDemandSubscribers].map((fn) => fn()))
  }

  /**
   * prune stops the certificates no running store serves any more (their entry left the config): called once a
   * reload's old generation stopped watching. Their stored files stay, for a config that brings them back.
   */
  prune(): void {
    const onDemand = new Set(this.#onDemandCerts.values())
    for (const [key, m] of this.#managed) {
      if (m.subscribers > 0 || onDemand.has(m)) continue
      m.close()
      this.#managed.delete(key)
    }
  }

  close(): void {
    for (const m of this.#managed.values()) m.close()
    this.#onDemandSubscribers.clear()
    this.account.close()
  }
}
