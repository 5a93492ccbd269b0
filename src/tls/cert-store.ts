/** @module cert-store: a listener's certificates as SecureContexts, picked by SNI: exact name, wildcard, default. */
import { constants, createHash, randomBytes } from "node:crypto"
import type net from "node:net"
import tls from "node:tls"
import type { ListenerTlsConfig } from "../config/schema.ts"
import { errorMessage, TlsError } from "../core/errors.ts"
import { deriveTicketKey, type TicketKeyRing } from "../state/ticket-keys.ts"
import { type CertificateStatus, certificateStatus, type LoadedCertificate, normalizeName } from "./certificate.ts"
import { peekServerName } from "./client-hello.ts"
import { type ServerTlsOptions, serverTlsOptions } from "./policy.ts"
import { loadFileCertificate } from "./sources/file.ts"
import { loadSelfSigned } from "./sources/self-signed.ts"

export type { CertificateStatus, LoadedCertificate } from "./certificate.ts"

/** ClientAuthPolicy: how a context treats client certificates (the listener's client_auth or its entry's). */
export interface ClientAuthPolicy {
  mode: "none" | "request" | "require"
  /** also send the PEM in X-Client-Cert */
  forwardCert: boolean
}

const NO_CLIENT_AUTH: ClientAuthPolicy = { mode: "none", forwardCert: false }

/** CertStoreOptions: what a store needs besides the listener's TLS config. */
export interface CertStoreOptions {
  dataDir: string
  engine: "http" | "tcp"
  /**
   * The session-ticket key ring (the runtime's, so tickets resume across reloads): every context of the store
   * takes its current key when built. Default: a random key per store.
   */
  ticketKeys?: TicketKeyRing | undefined
  /** The listener's name: its tickets are sealed with a key derived for it, so they resume only there. */
  ticketScope?: string | undefined
}

/**
 * CertStore holds every SecureContext of one listener, all built in load(). Lookups (sniCallback, contextFor) run
 * in every handshake: they are map reads and never build or block.
 */
export class CertStore {
  /** secureOptions are the policy options plus the default certificate: pass them to tls.createServer. */
  readonly secureOptions: tls.TlsOptions
  readonly #certs: readonly LoadedCertificate[]
  readonly #exact: Map<string, tls.SecureContext>
  /** "*.example.com" is kept under "example.com" */
  readonly #wildcard: Map<string, tls.SecureContext>
  readonly #default: tls.SecureContext
  readonly #auths: Map<tls.SecureContext, ClientAuthPolicy>
  /** Every name is served by one context: no ClientHello peek is needed to choose it. */
  readonly single: boolean

  private constructor(
    certs: LoadedCertificate[],
    secureOptions: tls.TlsOptions,
    exact: Map<string, tls.SecureContext>,
    wildcard: Map<string, tls.SecureContext>,
    fallback: tls.SecureContext,
    auths: Map<tls.SecureContext, ClientAuthPolicy>,
  ) {
    this.#certs = certs
    this.secureOptions = secureOptions
    this.#exact = exact
    this.#wildcard = wildcard
    this.#default = fallback
    this.#auths = auths
    this.single = new Set([...exact.values(), ...wildcard.values(), fallback]).size === 1
  }

  /** load reads every certificate of the listener and builds its SecureContexts; throws TlsError on any failure. */
  static async load(config: ListenerTlsConfig, options: CertStoreOptions): Promise<CertStore> {
    const certs: LoadedCertificate[] = []
    for (const entry of config.certificates) {
      if ("cert" in entry) certs.push(loadFileCertificate(entry.cert, entry.key))
      else certs.push(await loadSelfSigned(entry.self_signed, entry.key_type, options.dataDir))
    }
    // Each entry's client_auth (or the listener's) is its policy; a policy's options and session scope are built
    // once, and every context of the store shares one set of ticket keys.
    // Node keeps one key per SecureContext and discards a ticket sealed under any other (state/ticket-keys.ts):
    // every context takes the ring's current key (derived for the listener), so a reload keeps resumption working.
    const ring = options.ticketKeys
    const ticketKeys = ring ? deriveTicketKey(ring.current(), options.ticketScope ?? "") : randomBytes(48)
    const entryConfig = config.certificates.map((entry) => ({
      ...config,
      client_auth: entry.client_auth ?? config.client_auth,
    }))
    const policyKey = (i: number) => JSON.stringify(entryConfig[i]!.client_auth ?? { mode: "none" })
    const policies = new Map<string, { options: ServerTlsOptions; session: SessionOptions; auth: ClientAuthPolicy }>()
    const policyOf = (i: number) => {
      const key = policyKey(i)
      let policy = policies.get(key)
      if (!policy) {
        const listenerConfig = entryConfig[i]!
        const tlsOptions = serverTlsOptions(listenerConfig, options.engine)
        const auth = listenerConfig.client_auth
        policy = {
          options: tlsOptions,
          session: sessionOptions(listenerConfig, tlsOptions, ticketKeys),
          auth: { mode: auth?.mode ?? "none", forwardCert: auth?.forward_cert ?? false },
        }
        policies.set(key, policy)
      }
      return policy
    }

    // name -> certificates for it, at most one per key type (the first listed wins), in config order.
    const byName = new Map<string, LoadedCertificate[]>()
    for (const cert of certs) {
      for (const name of cert.names) {
        const list = byName.get(name) ?? []
        if (!list.some((c) => c.keyType === cert.keyType)) list.push(cert)
        byName.set(name, list)
      }
    }
    for (const [name, list] of byName) {
      const keys = new Set(list.map((c) => policyKey(certs.indexOf(c))))
      if (keys.size > 1) {
        throw new TlsError("PC_TLS_POLICY", `the certificates for ${name} have different client_auth; give them one`)
      }
    }
    // One SecureContext per distinct set of certificates: ECDSA and RSA for one name share a context, and OpenSSL
    // picks between them by the client's signature algorithms. Node's SNICallback installs only the context's last
    // certificate, so ECDSA goes last: SNI-switched handshakes serve ECDSA, and contextForSocket() serves both.
    for (const list of byName.values())
      list.sort((a, b) => Number(a.keyType === "ecdsa") - Number(b.keyType === "ecdsa"))
    const built = new Map<string, tls.SecureContext>()
    const auths = new Map<tls.SecureContext, ClientAuthPolicy>()
    const contextOf = (list: LoadedCertificate[]): tls.SecureContext => {
      const id = list.map((c) => certs.indexOf(c)).join(",")
      let context = built.get(id)
      if (!context) {
        const policy = policyOf(certs.indexOf(list[0]!))
        context = buildContext(list, policy.options, policy.session)
        built.set(id, context)
        auths.set(context, policy.auth)
      }
      return context
    }
    const exact = new Map<string, tls.SecureContext>()
    const wildcard = new Map<string, tls.SecureContext>()
    for (const [name, list] of byName) {
      const context = contextOf(list)
      if (name.startsWith("*.")) wildcard.set(name.slice(2), context)
      else exact.set(name, context)
    }
    const first = certs[0]!
    const defaultList = (first.names[0] !== undefined && byName.get(first.names[0])) || [first]
    const fallback = contextOf(defaultList)
    const defaultPolicy = policyOf(certs.indexOf(defaultList[0]!))
    const secureOptions: tls.TlsOptions = {
      ...defaultPolicy.options,
      ...defaultPolicy.session,
      cert: defaultList.map((c) => c.chainPem),
      key: defaultList.map((c) => c.key.reveal()),
    }
    return new CertStore(certs, secureOptions, exact, wildcard, fallback, auths)
  }

  /** sniCallback is tls.Server's SNICallback: answers synchronously from the maps built in load(). */
  readonly sniCallback = (servername: string, cb: (err: Error | null, ctx?: tls.SecureContext) => void): void => {
    cb(null, this.contextFor(servername))
  }

  /** contextFor picks the context for an SNI name: exact, then wildcard one level down, then the default. */
  contextFor(servername: string | undefined): tls.SecureContext {
    if (!servername) return this.#default
    const name = normalizeName(servername)
    const exact = this.#exact.get(name)
    if (exact) return exact
    const dot = name.indexOf(".")
    if (dot > 0) {
      const wild = this.#wildcard.get(name.slice(dot + 1))
      if (wild) return wild
    }
    return this.#default
  }

  /**
   * contextForSocket reads the ClientHello's SNI name off a fresh socket (putting the bytes back) and returns its
   * context. Build the TLSSocket on it (`new tls.TLSSocket(socket, { isServer: true, secureContext })`) to offer
   * every certificate of the name, ECDSA and RSA alike; the SNICallback path installs only one of them.
   */
  async contextForSocket(socket: net.Socket, timeoutMs: number): Promise<tls.SecureContext> {
    return this.contextFor(await peekServerName(socket, timeoutMs))
  }

  /** clientAuthOf is the client-certificate policy of one of this store's contexts. */
  clientAuthOf(context: tls.SecureContext): ClientAuthPolicy {
    return this.#auths.get(context) ?? NO_CLIENT_AUTH
  }

  /** covers says whether some certificate's name matches host (exact, or a wildcard one level up). */
  covers(host: string): boolean {
    const name = normalizeName(host)
    if (this.#exact.has(name)) return true
    if (name.startsWith("*.")) return this.#wildcard.has(name.slice(2))
    const dot = name.indexOf(".")
    return dot > 0 && this.#wildcard.has(name.slice(dot + 1))
  }

  certificates(): readonly LoadedCertificate[] {
    return this.#certs
  }

  /** status lists the certificates without key material. */
  status(): CertificateStatus[] {
    return this.#certs.map(certificateStatus)
  }
}

interface SessionOptions {
  sessionIdContext: string
  ticketKeys: Buffer
  secureOptions?: number
}

/**
 * sessionOptions scopes session resumption to this listener's policy (nginx CVE-2025-23419): the session id
 * context is a hash of the client-certificate policy and the served names, so a session made under a policy that
 * did not ask for a client certificate cannot resume where one is required, even with shared ticket keys.
 */
function sessionOptions(config: ListenerTlsConfig, policy: ServerTlsOptions, ticketKeys: Buffer): SessionOptions {
  const scope = createHash("sha256")
  scope.update(`mode=${config.client_auth?.mode ?? "none"}\n`)
  scope.update(`ca=${String(policy.ca ?? "")}\ncrl=${String(policy.crl ?? "")}\n`)
  scope.update(`min=${policy.minVersion}\nmax=${policy.maxVersion}\n`)
  for (const entry of config.certificates) scope.update(`${JSON.stringify(entry)}\n`)
  const options: SessionOptions = {
    // OpenSSL takes at most 32 bytes of session id context.
    sessionIdContext: scope.digest("hex").slice(0, 32),
    ticketKeys,
  }
  // Spread after the policy's options: keep its secureOptions flags (no renegotiation) and add ours.
  if (!config.session_tickets) options.secureOptions = (policy.secureOptions ?? 0) | constants.SSL_OP_NO_TICKET
  return options
}

function buildContext(list: LoadedCertificate[], policy: ServerTlsOptions, session: SessionOptions): tls.SecureContext {
  try {
    return tls.createSecureContext({
      ...policy,
      ...session,
      cert: list.map((c) => c.chainPem),
      key: list.map((c) => c.key.reveal()),
    })
  } catch (err) {
    const names = list[0]?.names.join(", ") ?? ""
    throw new TlsError("PC_TLS_POLICY", `building the tls context for ${names}: ${errorMessage(err)}`, { cause: err })
  }
}
