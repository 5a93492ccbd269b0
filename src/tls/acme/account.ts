/** @module account: the ACME account (RFC 8555 §7.3): its key and URL kept in storage, and the acme-client for it. */
import { readFileSync } from "node:fs"
import https from "node:https"
import tls from "node:tls"
import acme from "acme-client"
import type { AcmeConfig } from "../../config/schema.ts"
import { errorCode, errorMessage, PortcullisError } from "../../core/errors.ts"
import type { CertificateStorage } from "./storage.ts"

/** AcmeError: talking to the CA failed (the directory, the account, an order); `problems` are its problem documents. */
export class AcmeError extends PortcullisError {
  readonly problems: readonly unknown[]

  constructor(code: string, message: string, options: { cause?: unknown; problems?: readonly unknown[] } = {}) {
    super(code, message, { source: "backend", cause: options.cause })
    this.name = "AcmeError"
    this.problems = options.problems ?? []
  }
}

/**
 * Agents by URL origin for acme-client's requests. acme-client sends every request through one module-level axios
 * instance, so trust for a CA's HTTPS (acme.ca_bundle) can only be added there: one interceptor, installed once,
 * picks the agent registered for the request's origin (an account registers its directory's).
 */
const agents = new Map<string, https.Agent>()
let intercepting = false

function useAgentFor(origin: string, agent: https.Agent): void {
  agents.set(origin, agent)
  if (intercepting) return
  intercepting = true
  acme.axios.interceptors.request.use((config) => {
    try {
      const agent = config.url ? agents.get(new URL(config.url).origin) : undefined
      if (agent) config.httpsAgent = agent
    } catch {
      // not a URL: axios reports it
    }
    return config
  })
}

/** storagePrefix is the storage folder of a directory's account and certificates: `acme/<host>[_<port>]`. */
export function storagePrefix(directory: string): string {
  const url = new URL(directory)
  return `acme/${url.hostname.replace(/[^A-Za-z0-9.-]/g, "_")}${url.port ? `_${url.port}` : ""}`
}

/** HttpAnswer: a small HTTPS GET's result (the directory, an ARI renewalInfo). */
export interface HttpAnswer {
  status: number
  headers: Record<string, string | string[] | undefined>
  body: string
}

/**
 * AcmeAccount owns one directory's account: the account key (ECDSA P-256, stored 0600 under
 * `acme/<directory host>/account.key`) and its URL, made once and reused across restarts. `client()` probes the
 * directory first, so a CA whose HTTPS is not trusted fails at once with the TLS error (acme-client would retry for
 * over a minute and then fail with an unrelated TypeError).
 */
export class AcmeAccount {
  readonly config: AcmeConfig
  readonly storage: CertificateStorage
  /** The storage folder of this directory: `acme/<host>[_<port>]`. */
  readonly prefix: string
  readonly #agent: https.Agent
  #client: Promise<acme.Client> | undefined
  #directory: Record<string, unknown> | undefined

  constructor(config: AcmeConfig, storage: CertificateStorage) {
    this.config = config
    this.storage = storage
    const url = new URL(config.directory)
    this.prefix = storagePrefix(config.directory)
    const ca = config.ca_bundle ? [...tls.rootCertificates, readFileSync(config.ca_bundle, "utf8")] : undefined
    this.#agent = new https.Agent({ keepAlive: true, ...(ca ? { ca } : {}) })
    useAgentFor(url.origin, this.#agent)
  }

  /** directory is the CA's directory object (read by client()); undefined before the first client(). */
  get directory(): Record<string, unknown> | undefined {
    return this.#directory
  }

  /** client resolves with a client for the registered account; a failure is retried by the next call. */
  client(): Promise<acme.Client> {
    this.#client ??= this.#connect().catch((err: unknown) => {
      this.#client = undefined
      throw err
    })
    return this.#client
  }

  /** get fetches a URL of the CA with the account's trust (the directory, renewalInfo): 10 s at most. */
  get(url: string): Promise<HttpAnswer> {
    return new Promise((resolve, reject) => {
      const req = https.get(url, { agent: this.#agent, timeout: 10_000 }, (res) => {
        const chunks: Buffer[] = []
        let size = 0
        res.on("data", (chunk: Buffer) => {
          size += chunk.length
          if (size > 1 << 20) req.destroy(new Error("answer larger than 1 MiB"))
          else chunks.push(chunk)
        })
        res.on("end", () =>
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString("utf8") }),
        )
        res.on("error", reject)
      })
      req.on("timeout", () => req.destroy(new Error("timed out after 10 s")))
      req.on("error", reject)
    })
  }

  async #connect(): Promise<acme.Client> {
    const url = this.config.directory
    let answer: HttpAnswer
    try {
      answer = await this.get(url)
    } catch (err) {
      const code = errorCode(err)
      const hint = code.includes("CERT") || code.includes("SELF_SIGNED") ? "; set acme.ca_bundle to the CA's root" : ""
      throw new AcmeError("PC_ACME_DIRECTORY", `reaching the ACME directory ${url}: ${errorMessage(err)}${hint}`, {
        cause: err,
      })
    }
    try {
      if (answer.status !== 200) throw new Error(`status ${answer.status}`)
      this.#directory = JSON.parse(answer.body) as Record<string, unknown>
      if (typeof this.#directory["newOrder"] !== "string") throw new Error("no newOrder URL in it")
      // The directory's resources may live on other hosts than the directory itself: trust them the same way.
      for (const value of Object.values(this.#directory)) {
        if (typeof value === "string" && value.startsWith("https://")) useAgentFor(new URL(value).origin, this.#agent)
      }
    } catch (err) {
      throw new AcmeError("PC_ACME_DIRECTORY", `reading the ACME directory ${url}: ${errorMessage(err)}`)
    }
    // One account for a fleet sharing the storage: the first instance creates and registers it under the lock, the
    // others wait and load it.
    const release = await this.storage.lock(`${this.prefix.replace(/\//g, "_")}_account`, 120_000)
    try {
      return await this.#register(url)
    } finally {
      await release().catch(() => {})
    }
  }

  async #register(url: string): Promise<acme.Client> {
    const keyKey = `${this.prefix}/account.key`
    const urlKey = `${this.prefix}/account.json`
    const contact = this.config.email ? [`mailto:${this.config.email}`] : []
    const stored = await this.storage.load(urlKey)
    const record = stored ? (JSON.parse(stored.value.toString("utf8")) as { url?: string; contact?: string[] }) : {}
    // An account is one contact's (as Caddy keeps one per email): a changed acme.email registers a new account, with
    // a new key, at the next order. A record from before contacts were kept is taken as this contact's.
    const sameContact = record.contact === undefined || record.contact.join(",") === contact.join(",")
    let key = sameContact ? (await this.storage.load(keyKey))?.value : undefined
    if (!key) {
      key = await acme.crypto.createPrivateEcdsaKey("P-256")
      await this.storage.store(keyKey, key, { secret: true })
    }
    const known = sameContact ? record.url : undefined
    const eab = this.config.eab
    const client = new acme.Client({
      directoryUrl: url,
      accountKey: key,
      ...(known ? { accountUrl: known } : {}),
      ...(eab
        ? { externalAccountBinding: { kid: eab.kid, hmacKey: readFileSync(eab.hmac_key_file, "utf8").trim() } }
        : {}),
      // Poll an order or challenge from 250 ms on, doubling to 5 s: Pebble validates at once, real CAs in seconds.
      backoffAttempts: 12,
      backoffMin: 250,
      backoffMax: 5_000,
    })
    if (!known) {
      try {
        await client.createAccount({ termsOfServiceAgreed: true, ...(contact.length > 0 ? { contact } : {}) })
      } catch (err) {
        throw new AcmeError("PC_ACME_ACCOUNT", `registering the ACME account at ${url}: ${errorMessage(err)}`, {
          cause: err,
        })
      }
      await this.storage.store(urlKey, Buffer.from(JSON.stringify({ url: client.getAccountUrl(), contact })))
    } else if (record.contact === undefined) {
      await this.storage.store(urlKey, Buffer.from(JSON.stringify({ url: known, contact })))
    }
    return client
  }

  close(): void {
    this.#agent.destroy()
  }
}
