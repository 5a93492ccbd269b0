/**
 * @module stapler: keeps a fresh OCSP response for every served certificate whose issuer names a responder: fetched
 * in the background (never in a handshake), cached under data_dir, refreshed at half its validity, retried with
 * backoff. Listeners read `Staple.der` in a handshake: a field read, nothing else.
 */
import type { X509Certificate } from "node:crypto"
import { errorMessage } from "../../core/errors.ts"
import type { Logger } from "../../core/log.ts"
import type { CertificateEvent } from "../../state/instruments.ts"
import type { LoadedCertificate } from "../certificate.ts"
import { OcspCache, type OcspState } from "./cache.ts"
import { fetchOcsp } from "./fetch.ts"
import { buildOcspRequest, certIdOf, ocspUrlOf } from "./request.ts"
import { checkOcspResponse, type OcspAnswer } from "./response.ts"

/** Staple is what a listener holds for one certificate: the DER to staple now, if any. */
export interface Staple {
  readonly der: Buffer | undefined
}

/** OcspStatus is one certificate's OCSP state for `portcullis certs`, the admin API and /metrics. */
export interface OcspStatus {
  /** none: no responder named (or no issuer to ask about); failing: no usable answer lately */
  status: "good" | "revoked" | "unknown" | "failing" | "pending" | "none"
  url?: string | undefined
  thisUpdate?: string | undefined
  nextUpdate?: string | undefined
  nextRefreshAt?: string | undefined
  lastError?: string | undefined
  /** a response is being stapled now */
  stapled: boolean
}

/** OcspStaplerOptions: the logger, where events are counted, and the fetcher's timings (defaults in brackets). */
export interface OcspStaplerOptions {
  log: Logger
  count?: (name: string, event: CertificateEvent) => void
  /** the whole HTTP exchange with a responder [10 s] */
  timeoutMs?: number
  /** the first retry after a failure, doubled per failure [60 s] */
  retryMs?: number
  /** the longest wait between retries [1 h] */
  maxRetryMs?: number
}

/** The longest single timer: refresh and expiry times further out are reached by waking once a day. */
const MAX_TIMER_MS = 86_400_000

/** Without a nextUpdate (RFC 6960 §4.2.2.1: "newer information is always available") ask again after an hour. */
const NO_NEXT_UPDATE_REFRESH_MS = 3_600_000

/**
 * STAPLE_ONLY_GOOD: a `revoked` or `unknown` answer is logged and counted but not stapled, as nginx does
 * (ngx_ssl_stapling_ocsp_handler: "certificate status ... in the OCSP response", then no staple). Unlike nginx, a
 * good response stapled before is dropped too: it is known to be out of date.
 */
const STAPLE_ONLY_GOOD = true

/** Entry is one certificate's fetcher: shared by every generation and listener serving the certificate. */
class Entry implements Staple {
  der: Buffer | undefined
  status: OcspStatus["status"] = "pending"
  answer: OcspAnswer | undefined
  lastError: string | undefined
  failures = 0
  nextRefreshAt = 0
  refs = 1
  timer: ReturnType<typeof setTimeout> | undefined
  expiry: ReturnType<typeof setTimeout> | undefined
  inFlight = false
  readonly key: string
  readonly name: string
  readonly url: string
  readonly leaf: X509Certificate
  readonly issuer: X509Certificate
  readonly cache: OcspCache

  constructor(cert: LoadedCertificate, url: string, issuer: X509Certificate, cache: OcspCache) {
    this.key = OcspCache.keyOf(cert.fingerprint256)
    this.name = cert.names[0] ?? cert.leaf.subject
    this.url = url
    this.leaf = cert.leaf
    this.issuer = issuer
    this.cache = cache
  }
}

/** OcspStapler: the runtime's OCSP fetchers by certificate fingerprint (reloads keep them and their staples). */
export class OcspStapler {
  readonly #log: Logger
  readonly #count: (name: string, event: CertificateEvent) => void
  readonly #timeoutMs: number
  readonly #retryMs: number
  readonly #maxRetryMs: number
  readonly #entries = new Map<string, Entry>()
  /** Certificates seen without a usable issuer: warned about once each. */
  readonly #noIssuer = new Set<string>()
  #closed = false

  constructor(options: OcspStaplerOptions) {
    this.#log = options.log
    this.#count = options.count ?? (() => {})
    this.#timeoutMs = options.timeoutMs ?? 10_000
    this.#retryMs = options.retryMs ?? 60_000
    this.#maxRetryMs = options.maxRetryMs ?? 3_600_000
  }

  /**
   * track starts keeping a staple for `cert` (or shares the one kept already) and returns it; undefined when the
   * certificate names no OCSP responder (skipped silently: Let's Encrypt's certificates since 2025) or its file
   * holds no issuer to build the request from (warned once). Pair every track with a release.
   */
  track(cert: LoadedCertificate, dataDir: string): Staple | undefined {
    const key = OcspCache.keyOf(cert.fingerprint256)
    const known = this.#entries.get(key)
    if (known) {
      known.refs++
      return known
    }
    const url = ocspUrlOf(cert.leaf)
    if (!url) return undefined
    const issuer = cert.chain.find((c) => c !== cert.leaf && cert.leaf.checkIssued(c))
    if (!issuer) {
      if (!this.#noIssuer.has(key)) {
        this.#noIssuer.add(key)
        this.#log.warn(
          { certificate: cert.names[0], source: cert.source, ocsp_url: url },
          "no OCSP staple: the certificate file holds no issuer certificate to build the request (append it after the leaf)",
        )
      }
      return undefined
    }
    const entry = new Entry(cert, url, issuer, new OcspCache(dataDir))
    this.#entries.set(key, entry)
    this.#fromCache(entry)
    return entry
  }

  /** staple is the staple kept for `cert` (tracked already), for a listener to read in its handshakes. */
  staple(cert: LoadedCertificate): Staple | undefined {
    return this.#entries.get(OcspCache.keyOf(cert.fingerprint256))
  }

  /** release drops one use of `cert`'s staple; the last one stops its timers. */
  release(cert: LoadedCertificate): void {
    const key = OcspCache.keyOf(cert.fingerprint256)
    const entry = this.#entries.get(key)
    if (!entry || --entry.refs > 0) return
    clearTimeout(entry.timer)
    clearTimeout(entry.expiry)
    this.#entries.delete(key)
  }

  /** status is the certificate's OCSP state; "none" when it is not tracked (no responder, or stapling off). */
  status(cert: LoadedCertificate): OcspStatus {
    const entry = this.#entries.get(OcspCache.keyOf(cert.fingerprint256))
    if (!entry) return { status: "none", stapled: false }
    return entryStatus(entry)
  }

  /** close stops every timer; responses being fetched are dropped when they arrive. */
  close(): void {
    this.#closed = true
    for (const entry of this.#entries.values()) {
      clearTimeout(entry.timer)
      clearTimeout(entry.expiry)
    }
    this.#entries.clear()
  }

  /** fromCache staples a cached response that is still valid and schedules its refresh; else fetches now. */
  #fromCache(entry: Entry): void {
    const der = entry.cache.readResponse(entry.key)
    if (der) {
      try {
        const answer = checkOcspResponse(der, entry.leaf, entry.issuer)
        this.#log.debug({ certificate: entry.name, status: answer.status }, "ocsp response from the cache")
        this.#accept(entry, der, answer, false)
        return
      } catch (err) {
        this.#log.debug({ certificate: entry.name, err: errorMessage(err) }, "cached ocsp response not usable")
      }
    }
    this.#schedule(entry, 0)
  }

  #schedule(entry: Entry, delayMs: number): void {
    clearTimeout(entry.timer)
    entry.nextRefreshAt = Date.now() + delayMs
    const arm = () => {
      // setTimeout holds at most 2^31-1 ms (24.8 days); half of a 60-day validity is more: wake daily and look.
      const left = entry.nextRefreshAt - Date.now()
      entry.timer = setTimeout(
        () => (left > MAX_TIMER_MS ? arm() : void this.#refresh(entry)),
        Math.min(Math.max(0, left), MAX_TIMER_MS),
      )
      entry.timer.unref()
    }
    arm()
  }

  async #refresh(entry: Entry): Promise<void> {
    if (entry.inFlight || this.#closed) return
    entry.inFlight = true
    let der: Buffer
    let answer: OcspAnswer
    try {
      der = await fetchOcsp(entry.url, buildOcspRequest(certIdOf(entry.leaf, entry.issuer)), this.#timeoutMs)
      answer = checkOcspResponse(der, entry.leaf, entry.issuer)
    } catch (err) {
      entry.inFlight = false
      if (this.#entries.get(entry.key) === entry) this.#failed(entry, errorMessage(err))
      return
    }
    entry.inFlight = false
    if (this.#entries.get(entry.key) !== entry) return
    this.#accept(entry, der, answer, true)
  }

  /** accept takes a checked answer: staples it (if good), caches it, logs a change, and schedules the refresh. */
  #accept(entry: Entry, der: Buffer, answer: OcspAnswer, fetched: boolean): void {
    const recovered = entry.failures > 0
    const changed = entry.status !== answer.status
    entry.failures = 0
    entry.lastError = undefined
    entry.answer = answer
    entry.status = answer.status
    entry.der = answer.status === "good" || !STAPLE_ONLY_GOOD ? der : undefined
    if (fetched) {
      this.#count(entry.name, "ocsp_fetched")
      try {
        entry.cache.writeResponse(entry.key, der)
      } catch (err) {
        this.#log.warn({ certificate: entry.name, err: errorMessage(err) }, "writing the ocsp cache")
      }
    }
    const fields = {
      certificate: entry.name,
      ocsp_url: entry.url,
      this_update: answer.thisUpdate.toISOString(),
      next_update: answer.nextUpdate?.toISOString(),
    }
    if (answer.status === "revoked") {
      this.#count(entry.name, "ocsp_revoked")
      this.#log.error(
        { ...fields, revoked_at: answer.revokedAt?.toISOString() },
        "certificate revoked according to its OCSP responder: not stapled; replace the certificate",
      )
    } else if (answer.status === "unknown") {
      this.#log.warn(fields, "the OCSP responder does not know this certificate: not stapled")
    } else if (recovered) this.#log.info(fields, "ocsp responder answers again; stapling")
    else if (changed) this.#log.info(fields, "ocsp response stapled")
    // RFC 6960 §4.2.2.1 gives the window thisUpdate..nextUpdate; ask again halfway through it.
    const now = Date.now()
    const next = answer.nextUpdate?.getTime()
    const refreshAt =
      next === undefined
        ? now + NO_NEXT_UPDATE_REFRESH_MS
        : answer.thisUpdate.getTime() + (next - answer.thisUpdate.getTime()) / 2
    this.#schedule(entry, Math.max(0, refreshAt - now))
    clearTimeout(entry.expiry)
    if (next !== undefined) {
      // If every refresh fails, the staple goes when its nextUpdate passes: an expired staple fails clients.
      const expire = () => {
        const left = next - Date.now()
        if (left > 0) {
          entry.expiry = setTimeout(expire, Math.min(left, MAX_TIMER_MS))
          entry.expiry.unref()
          return
        }
        if (entry.der === undefined) return
        entry.der = undefined
        entry.status = "failing"
        this.#log.warn({ certificate: entry.name }, "ocsp response expired without a new one: no staple")
      }
      expire()
    }
    this.#saveState(entry)
  }

  /** failed logs the first failure of a streak (the rest at debug) and retries with exponential backoff. */
  #failed(entry: Entry, error: string): void {
    entry.failures++
    entry.lastError = error
    if (!entry.der) entry.status = "failing"
    this.#count(entry.name, "ocsp_failed")
    const delay = Math.min(this.#retryMs * 2 ** Math.min(entry.failures - 1, 30), this.#maxRetryMs)
    const fields = { certificate: entry.name, ocsp_url: entry.url, err: error, retry_in_ms: delay }
    if (entry.failures === 1) this.#log.warn(fields, "ocsp fetch failed; handshakes go on without a new staple")
    else this.#log.debug({ ...fields, failures: entry.failures }, "ocsp fetch failed again")
    this.#schedule(entry, delay)
    this.#saveState(entry)
  }

  #saveState(entry: Entry): void {
    const s = entryStatus(entry)
    const state: OcspState = {
      url: entry.url,
      status: s.status === "none" ? "pending" : s.status,
      thisUpdate: s.thisUpdate,
      nextUpdate: s.nextUpdate,
      nextRefreshAt: s.nextRefreshAt,
      lastError: s.lastError,
      updatedAt: new Date().toISOString(),
    }
    try {
      entry.cache.writeState(entry.key, state)
    } catch {
      // the response write above already warned; the state file is only for `portcullis certs`
    }
  }
}

function entryStatus(entry: Entry): OcspStatus {
  return {
    status: entry.failures > 0 && entry.status !== "revoked" ? "failing" : entry.status,
    url: entry.url,
    thisUpdate: entry.answer?.thisUpdate.toISOString(),
    nextUpdate: entry.answer?.nextUpdate?.toISOString(),
    nextRefreshAt: entry.nextRefreshAt ? new Date(entry.nextRefreshAt).toISOString() : undefined,
    lastError: entry.lastError,
    stapled: entry.der !== undefined,
  }
}
