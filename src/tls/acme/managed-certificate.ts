/**
 * @module managed-certificate: one ACME certificate (names, key type) over its life: loaded from storage, ordered
 * when missing, renewed on schedule, retried with backoff, and pushed to whoever serves it.
 */
import type { AcmeConfig } from "../../config/schema.ts"
import { errorMessage } from "../../core/errors.ts"
import type { Logger } from "../../core/log.ts"
import type { AcmeCounters } from "../../state/instruments.ts"
import { type LoadedCertificate, parseCertificate } from "../certificate.ts"
import { type AcmeAccount, AcmeError } from "./account.ts"
import { ariCertId, parseRenewalInfo, type RenewalInfo } from "./ari.ts"
import type { ChallengeSolver } from "./challenges/solver.ts"
import type { FedCertificate } from "./feed.ts"
import { orderCertificate } from "./order.ts"
import { backoffDelay, renewalTime } from "./renewal.ts"
import type { CertificateStorage } from "./storage.ts"

/** setTimeout holds at most 2^31-1 ms; a longer wait fires early and is re-evaluated. */
const MAX_TIMER_MS = 2 ** 31 - 1
/** ARI is asked again after this long when it failed or gave nothing usable. */
const ARI_RETRY_MS = 15 * 60_000
/** A holder that dies loses the order lock after this long. */
const LOCK_TTL_MS = 120_000

/** storageDir is where one certificate's files live: `<prefix>/certs/<first name>[.rsa]` ("*" as "wildcard_"). */
export function storageDir(prefix: string, names: readonly string[], keyType: "ecdsa" | "rsa"): string {
  const first = names[0]!.replace(/^\*\./, "wildcard_.").replace(/[^A-Za-z0-9._-]/g, "_")
  return `${prefix}/certs/${first}${keyType === "rsa" ? ".rsa" : ""}`
}

/**
 * readStoredCertificate loads a stored certificate for exactly these names and key type, or undefined (missing,
 * damaged, other names, or expired).
 */
export async function readStoredCertificate(
  storage: CertificateStorage,
  prefix: string,
  names: readonly string[],
  keyType: "ecdsa" | "rsa",
  now = Date.now(),
): Promise<LoadedCertificate | undefined> {
  const dir = storageDir(prefix, names, keyType)
  try {
    const [cert, key] = await Promise.all([storage.load(`${dir}/cert.pem`), storage.load(`${dir}/key.pem`)])
    if (!cert || !key) return undefined
    const loaded = parseCertificate(cert.value.toString("utf8"), key.value.toString("utf8"), `acme:${dir}`)
    const want = new Set(names.map((n) => n.toLowerCase()))
    const same = loaded.names.length === want.size && loaded.names.every((n) => want.has(n))
    if (!same || loaded.keyType !== keyType || loaded.notAfter.getTime() <= now) return undefined
    return loaded
  } catch {
    return undefined
  }
}

/** ManagedOptions: what one managed certificate needs. */
export interface ManagedOptions {
  account: AcmeAccount
  config: AcmeConfig
  names: readonly string[]
  keyType: "ecdsa" | "rsa"
  solvers: readonly ChallengeSolver[]
  log: Logger
  counters: AcmeCounters
  random?: () => number
  /**
   * With a storage shared by a fleet: every watchMs the stored certificate's modifiedAt is read, and a newer
   * certificate another instance stored (its renewal) is adopted and pushed to the subscribers.
   */
  watchMs?: number
  /** told of every certificate it takes (read from storage at first, issued, renewed, loaded from a fleet's storage) */
  onAdopt?: (cert: LoadedCertificate) => void
}

/**
 * ManagedCertificate keeps `current` (undefined until the first certificate is in) and one timer: at the renewal
 * time (renewal.ts) it orders a new certificate under the storage lock, stores it, and calls every subscriber with
 * it. A failed order is logged with the CA's problem documents and retried after a doubling backoff; `current`
 * stays as it was, so the old certificate keeps serving. Nothing here runs in a handshake.
 */
export class ManagedCertificate implements FedCertificate {
  readonly names: readonly string[]
  readonly keyType: "ecdsa" | "rsa"
  readonly #options: ManagedOptions
  readonly #subscribers = new Set<(cert: LoadedCertificate) => void>()
  #current: LoadedCertificate | undefined
  #loaded: Promise<LoadedCertificate | undefined> | undefined
  #timer: ReturnType<typeof setTimeout> | undefined
  #watch: ReturnType<typeof setInterval> | undefined
  /** The stored cert.pem's modifiedAt last looked at by the watch. */
  #seenModifiedAt = 0
  #running: Promise<void> | undefined
  #started = false
  #closed = false
  #failures = 0
  /** When the current certificate is to be renewed (picked once per certificate and ARI window). */
  #renewAt: number | undefined
  #ari: (RenewalInfo & { fetchedAt: number; for: string }) | undefined
  #nextAt: number | undefined
  #lastError: string | undefined
  /** Orders placed (tests and status read it). */
  orders = 0

  constructor(options: ManagedOptions) {
    this.#options = options
    this.names = options.names
    this.keyType = options.keyType
  }

  get current(): LoadedCertificate | undefined {
    return this.#current
  }

  /** nextRenewalAt: when the timer next fires to order or retry (ms since the epoch). */
  get nextRenewalAt(): number | undefined {
    return this.#nextAt
  }

  get lastError(): string | undefined {
    return this.#lastError
  }

  /** load reads the stored certificate once (later calls share the first read). */
  load(): Promise<LoadedCertificate | undefined> {
    this.#loaded ??= readStoredCertificate(
      this.#options.account.storage,
      this.#options.account.prefix,
      this.names,
      this.keyType,
    ).then((cert) => {
      if (!this.#current && cert) {
        this.#current = cert
        // Not a change for the subscribers (they load it now), but a cluster primary's workers need it too.
        this.#options.onAdopt?.(cert)
      }
      return this.#current
    })
    return this.#loaded.then(() => this.#current)
  }

  /** subscribers: how many stores (and on-demand followers) take this certificate's renewals. */
  get subscribers(): number {
    return this.#subscribers.size
  }

  /** subscribe calls fn with each new certificate; returns the function that stops it. */
  subscribe(fn: (cert: LoadedCertificate) => void): () => void {
    this.#subscribers.add(fn)
    return () => this.#subscribers.delete(fn)
  }

  /** start begins the schedule: an order at once when there is no certificate (in the background). */
  start(): void {
    if (this.#started || this.#closed) return
    this.#started = true
    this.#startWatch()
    // With a certificate in hand, read the directory first: whether it offers renewalInfo decides the schedule.
    void this.load()
      .then(async () => {
        if (this.#current) await this.#options.account.client().catch(() => {})
        else {
          const { log, config } = this.#options
          log.info(
            { names: this.names, key_type: this.keyType, serving: config.while_pending },
            "acme certificate pending: ordering",
          )
        }
      })
      .then(() => this.#schedule())
  }

  /** obtain resolves with a certificate: the current one, else the first order's result (on-demand TLS). */
  async obtain(): Promise<LoadedCertificate> {
    await this.load()
    if (this.#current) {
      this.start()
      return this.#current
    }
    this.#started = true
    this.#startWatch()
    await this.#run()
    if (!this.#current) throw new AcmeError("PC_ACME_ORDER", this.#lastError ?? "the order failed")
    return this.#current
  }

  close(): void {
    this.#closed = true
    clearTimeout(this.#timer)
    clearInterval(this.#watch)
    this.#subscribers.clear()
  }

  #startWatch(): void {
    const ms = this.#options.watchMs
    if (ms === undefined || this.#watch || this.#closed) return
    this.#watch = setInterval(() => void this.#pickUp(), ms)
    this.#watch.unref()
  }

  /**
   * pickUp adopts a certificate another instance of the fleet stored since the last look (it renewed first), when
   * it is newer than the one held; an order of this instance in progress goes first (it re-reads under the lock).
   */
  async #pickUp(): Promise<void> {
    if (this.#closed || this.#running) return
    const { storage, prefix } = this.#options.account
    try {
      const item = await storage.load(`${storageDir(prefix, this.names, this.keyType)}/cert.pem`)
      if (!item || item.modifiedAt === this.#seenModifiedAt) return
      this.#seenModifiedAt = item.modifiedAt
      const stored = await readStoredCertificate(storage, prefix, this.names, this.keyType)
      const current = this.#current
      if (!stored || this.#running || this.#closed || stored.fingerprint256 === current?.fingerprint256) return
      if (current && stored.notAfter <= current.notAfter) return
      this.#adopt(stored, "loaded")
      this.#schedule()
    } catch {
      // The store is down (its connection logs that): the next look tries again.
    }
  }

  /** schedule sets the one timer: a retry after a failure, the renewal time, or an ARI refresh if that is sooner. */
  #schedule(): void {
    if (this.#closed) return
    clearTimeout(this.#timer)
    const config = this.#options.config
    const now = Date.now()
    let at: number
    if (this.#failures > 0) {
      at = now + backoffDelay(this.#failures, config.retry.initial, config.retry.max, this.#options.random)
    } else if (!this.#current) at = now
    else {
      at = this.#renewalAt()
      // RFC 9773 §4.3: ask again after Retry-After, and move the renewal if the window moved.
      if (this.#ari && this.#ari.for === this.#current.fingerprint256) {
        at = Math.min(at, this.#ari.fetchedAt + this.#ari.retryAfterMs)
      } else if (this.#hasAri()) at = now
    }
    this.#nextAt = at
    this.#timer = setTimeout(() => void this.#tick(), Math.min(MAX_TIMER_MS, Math.max(0, at - now)))
    this.#timer.unref()
  }

  #hasAri(): boolean {
    return typeof this.#options.account.directory?.["renewalInfo"] === "string"
  }

  #renewalAt(): number {
    const cert = this.#current!
    this.#renewAt ??= renewalTime(
      new Date(cert.leaf.validFrom).getTime(),
      cert.notAfter.getTime(),
      {
        renewBeforeMs: this.#options.config.renew_before,
        window: this.#ari?.for === cert.fingerprint256 ? this.#ari.window : undefined,
      },
      this.#options.random,
    )
    return this.#renewAt
  }

  async #tick(): Promise<void> {
    if (this.#closed) return
    const cert = this.#current
    if (cert && this.#failures === 0) {
      if (this.#hasAri() || !this.#options.account.directory) await this.#refreshAri(cert)
      if (Date.now() < this.#renewalAt()) {
        this.#schedule()
        return
      }
    }
    await this.#run()
    this.#schedule()
  }

  /** refreshAri asks the CA's renewalInfo for the current certificate's window (RFC 9773 §4.2), when it is due. */
  async #refreshAri(cert: LoadedCertificate): Promise<void> {
    const ari = this.#ari
    if (ari && ari.for === cert.fingerprint256 && Date.now() < ari.fetchedAt + ari.retryAfterMs) return
    try {
      await this.#options.account.client()
      const base = this.#options.account.directory?.["renewalInfo"]
      const id = ariCertId(cert.leaf)
      if (typeof base !== "string" || !id) {
        // No ARI for this certificate (no AKI): the usual schedule, and no asking again for it.
        this.#keepSchedule(cert, Number.MAX_SAFE_INTEGER)
        return
      }
      const answer = await this.#options.account.get(`${base.replace(/\/$/, "")}/${id}`)
      const retry = answer.headers["retry-after"]
      const info =
        answer.status === 200 ? parseRenewalInfo(answer.body, Array.isArray(retry) ? retry[0] : retry) : undefined
      if (!info) {
        this.#options.log.warn(
          { names: this.names, status: answer.status },
          "acme renewalInfo unusable; keeping the schedule",
        )
        this.#keepSchedule(cert, ARI_RETRY_MS)
        return
      }
      const moved =
        !ari ||
        ari.for !== cert.fingerprint256 ||
        ari.window.start !== info.window.start ||
        ari.window.end !== info.window.end
      this.#ari = { ...info, fetchedAt: Date.now(), for: cert.fingerprint256 }
      if (moved) {
        this.#renewAt = undefined
        const window = {
          start: new Date(info.window.start).toISOString(),
          end: new Date(info.window.end).toISOString(),
        }
        this.#options.log.info({ names: this.names, window, explanation: info.explanationUrl }, "acme renewal window")
      }
    } catch (err) {
      this.#options.log.warn(
        { names: this.names, err: errorMessage(err) },
        "acme renewalInfo failed; keeping the schedule",
      )
      this.#keepSchedule(cert, ARI_RETRY_MS)
    }
  }

  /**
   * keepSchedule records that ARI gave nothing usable for `cert`: the window it gave before (if any) or the usual
   * schedule stands, and ARI is asked again after retryMs (not at once: a failing CA is not asked in a loop).
   */
  #keepSchedule(cert: LoadedCertificate, retryMs: number): void {
    const previous = this.#ari?.for === cert.fingerprint256 ? this.#ari.window : { start: 0, end: -1 }
    this.#ari = { window: previous, retryAfterMs: retryMs, fetchedAt: Date.now(), for: cert.fingerprint256 }
  }

  /** run places one order (one at a time) and adopts its certificate, or counts the failure. */
  #run(): Promise<void> {
    this.#running ??= this.#order().finally(() => {
      this.#running = undefined
    })
    return this.#running
  }

  async #order(): Promise<void> {
    const { account, log, counters, config } = this.#options
    const storage = account.storage
    const dir = storageDir(account.prefix, this.names, this.keyType)
    const previous = this.#current
    let release: (() => Promise<void>) | undefined
    try {
      release = await storage.lock(dir.replace(/\//g, "_"), LOCK_TTL_MS)
      // Another instance of the fleet may have renewed it while this one waited for the lock.
      const stored = await readStoredCertificate(storage, account.prefix, this.names, this.keyType)
      if (
        stored &&
        stored.fingerprint256 !== previous?.fingerprint256 &&
        (!previous || stored.notAfter > previous.notAfter)
      ) {
        this.#adopt(stored, "loaded")
        return
      }
      const client = await account.client()
      this.orders++
      const replaces = previous && this.#hasAri() ? ariCertId(previous.leaf) : undefined
      const issued = await orderCertificate({
        client,
        names: this.names,
        keyType: this.keyType,
        solvers: this.#options.solvers,
        profile: config.profile,
        directory: account.directory,
        replaces,
      })
      const cert = parseCertificate(issued.chainPem, issued.keyPem, `acme:${dir}`)
      await storage.store(`${dir}/key.pem`, Buffer.from(issued.keyPem), { secret: true })
      await storage.store(`${dir}/cert.pem`, Buffer.from(issued.chainPem))
      counters.event(previous ? "renewed" : "issued")
      this.#adopt(cert, previous ? "renewed" : "issued")
    } catch (err) {
      this.#failures++
      this.#lastError = errorMessage(err)
      counters.event("failed")
      const retryIn = backoffDelay(this.#failures, config.retry.initial, config.retry.max, () => 0)
      log.error(
        {
          names: this.names,
          key_type: this.keyType,
          code: (err as { code?: string }).code,
          problems: err instanceof AcmeError ? err.problems : undefined,
          attempt: this.#failures,
          retry_in_ms: retryIn,
          serving: previous ? "the previous certificate" : config.while_pending,
        },
        `acme order failed: ${this.#lastError}`,
      )
    } finally {
      await release?.().catch(() => {})
    }
  }

  #adopt(cert: LoadedCertificate, how: "issued" | "renewed" | "loaded"): void {
    this.#current = cert
    this.#failures = 0
    this.#lastError = undefined
    this.#renewAt = undefined
    this.#options.log.info(
      {
        names: this.names,
        key_type: this.keyType,
        not_after: cert.notAfter.toISOString(),
        serial: cert.leaf.serialNumber,
      },
      `acme certificate ${how}`,
    )
    for (const fn of this.#subscribers) fn(cert)
    this.#options.onAdopt?.(cert)
  }
}
