/** @module cert-store: a listener's certificates as SecureContexts, picked by SNI: exact name, wildcard, default. */
import { createHash } from "node:crypto"
import type net from "node:net"
import tls from "node:tls"
import { BuildError, type BuildProblem, keyOf, problemsOf } from "../config/problems.ts"
import type { CertificateConfig, ListenerTlsConfig } from "../config/schema.ts"
import type { ForwardFormat } from "../core/connection-info.ts"
import { errorMessage, TlsError } from "../core/errors.ts"
import { MemoryTicketKeyRing, type TicketKeyRing } from "../state/ticket-keys.ts"
import { listenerTickets } from "../state/ticket-rotation.ts"
import { type CertPick, certPickFor } from "./cert-pick.ts"
import { type CertificateStatus, certificateStatus, type LoadedCertificate, normalizeName } from "./certificate.ts"
import { type HelloScan, type HelloSink, type PeekDone, peekClientHello, peekClientHelloThen } from "./client-hello.ts"
import { type ServerTlsOptions, serverTlsOptions } from "./policy.ts"
import { type CertificateSource, loadEntries } from "./sources/index.ts"
import type { CertificateSourceStatus } from "./sources/source.ts"
import { ListenerTicketKeys, NoTickets } from "./ticket-callback.ts"

export type { CertificateStatus, LoadedCertificate } from "./certificate.ts"

/** ClientAuthPolicy: how a context treats client certificates (the listener's client_auth or its entry's). */
export interface ClientAuthPolicy {
  mode: "none" | "request" | "require"
  /** also send the PEM in X-Client-Cert */
  forwardCert: boolean
  /** the identity header format (client_auth.forward_format) */
  forwardFormat: ForwardFormat
}

const NO_CLIENT_AUTH: ClientAuthPolicy = { mode: "none", forwardCert: false, forwardFormat: "x-client" }

/** CertStoreOptions: what a store needs besides the listener's TLS config. */
export interface CertStoreOptions {
  dataDir: string
  engine: "http" | "tcp"
  /**
   * The session-ticket key ring (the runtime's, so tickets resume across reloads and rotations): every context of
   * the store seals and opens tickets from it at handshake time (ticket-callback.ts). Default: a ring of its own.
   */
  ticketKeys?: TicketKeyRing | undefined
  /** The listener's name: its tickets are sealed with a key derived for it, so they resume only there. */
  ticketScope?: string | undefined
  /** called when sealing or opening a ticket failed (that handshake went on without it) */
  onTicketError?: (err: unknown) => void
  /** the source of each entry (default: sources/index.ts's certificateSource) */
  sourceFor?: (entry: CertificateConfig, dataDir: string) => CertificateSource
  /** called when certificates a source pushed (its watch) could not be swapped in; the old ones stay */
  onWatchError?: (err: unknown, entry: number) => void
  /**
   * called after replace() swapped an entry's certificates in (a source's watch, an ACME renewal), with the
   * certificates it put in and the ones it took out: OCSP tracking and the self-check follow the swap from here.
   */
  onReplaced?: (entry: number, added: readonly LoadedCertificate[], removed: readonly LoadedCertificate[]) => void
  /** tls-alpn-01 (RFC 8737): the challenge context of a name, served to a ClientHello offering only acme-tls/1 */
  challenges?: { contextFor(name: string): tls.SecureContext | undefined } | undefined
  /**
   * on-demand TLS: asked in a handshake for a name no certificate covers; a promise means "wait: a certificate may
   * come", and the handshake then takes whatever the store holds for the name when it settles.
   */
  onDemand?: ((name: string) => Promise<unknown> | undefined) | undefined
}

/** The ALPN protocol of tls-alpn-01 validation handshakes (RFC 8737 §6.2). */
const ACME_TLS_ALPN = "acme-tls/1"

/** Policy is one client_auth policy's TLS options and session scope, shared by the entries that have it. */
interface Policy {
  options: ServerTlsOptions
  session: SessionOptions
  /** undefined: session_tickets is false */
  ticketKeys: ListenerTicketKeys | undefined
  auth: ClientAuthPolicy
  /** JSON of the client_auth: entries serving one name must agree on it */
  key: string
}

/** Index is what lookups read: built whole from the entries' certificates, then swapped in by one assignment. */
interface Index {
  certs: readonly LoadedCertificate[]
  exact: Map<string, tls.SecureContext>
  /** "*.example.com" is kept under "example.com" */
  wildcard: Map<string, tls.SecureContext>
  fallback: tls.SecureContext
  auths: Map<tls.SecureContext, ClientAuthPolicy>
  /** the certificates each context holds */
  members: Map<tls.SecureContext, readonly LoadedCertificate[]>
  /** how to tell which certificate of an ECDSA+RSA context OpenSSL serves (cert-pick.ts) */
  picks: Map<tls.SecureContext, CertPick>
  /** contexts of names waiting for their first ACME certificate with while_pending: refuse */
  refused: Set<tls.SecureContext>
  /** contexts by the certificates in them (ids joined), reused by the next index when those certificates stay */
  built: Map<string, tls.SecureContext>
  secureOptions: tls.TlsOptions
  single: boolean
}

/**
 * CertStore holds every SecureContext of one listener, built in load(). Lookups (sniCallback, contextFor) run in
 * every handshake: they are map reads and never build or block. replace() swaps one entry's certificates: it builds
 * the new contexts first and then swaps the whole index in one assignment, so a handshake sees the old index or the
 * new one, never a half-built one; sockets already made keep the context they started with.
 */
export class CertStore {
  readonly #policies: readonly Policy[]
  #entries: readonly (readonly LoadedCertificate[])[]
  #index: Index
  /** Ids for certificates, so an index can tell which contexts it may keep (a WeakMap: swapped-out ones go). */
  readonly #ids = new WeakMap<LoadedCertificate, number>()
  #nextId = 0
  readonly #unwatch: (() => void)[] = []
  #onReplaced: CertStoreOptions["onReplaced"]
  #sources: readonly CertificateSource[] = []
  readonly #challenges: CertStoreOptions["challenges"]
  readonly #onDemand: CertStoreOptions["onDemand"]
  /** Challenge contexts handed out by contextForSocket (the listener serves them with ALPN acme-tls/1 only). */
  readonly #challengeContexts = new WeakSet<tls.SecureContext>()

  private constructor(
    policies: readonly Policy[],
    entries: readonly (readonly LoadedCertificate[])[],
    options: Pick<CertStoreOptions, "challenges" | "onDemand"> = {},
  ) {
    this.#policies = policies
    this.#entries = entries
    this.#challenges = options.challenges
    this.#onDemand = options.onDemand
    this.#index = this.#build(entries, new Map())
  }

  /** secureOptions are the policy options plus the default certificate: pass them to tls.createServer. */
  get secureOptions(): tls.TlsOptions {
    return this.#index.secureOptions
  }

  /** Every name is served by one context: no ClientHello peek is needed to choose it. */
  get single(): boolean {
    return this.#index.single && !this.#challenges && !this.#onDemand
  }

  /**
   * load reads every certificate of the listener through its source and builds its SecureContexts; throws a
   * BuildError listing every failure (each at its path under the tls section), or nothing.
   */
  static async load(config: ListenerTlsConfig, options: CertStoreOptions): Promise<CertStore> {
    const loaded = await loadEntries(config, options.dataDir, options.sourceFor)
    const problems: BuildProblem[] = [...loaded.problems]
    // Each entry's client_auth (or the listener's) is its policy; a policy's options and session scope are built
    // once, and every context of the store seals its tickets through one ListenerTicketKeys, which reads the ring
    // (keys derived for the listener) in the handshake: rotations and reloads keep resumption working.
    const tickets = listenerTickets(config)
    const ticketKeys = tickets.enabled
      ? new ListenerTicketKeys(options.ticketKeys ?? new MemoryTicketKeyRing(), options.ticketScope ?? "", {
          graceMs: tickets.graceMs,
          onError: options.onTicketError,
        })
      : undefined
    const entryConfig = config.certificates.map((entry) => ({
      ...config,
      client_auth: entry.client_auth ?? config.client_auth,
    }))
    const policyKey = (i: number) => JSON.stringify(entryConfig[i]!.client_auth ?? { mode: "none" })
    const policies = new Map<string, Policy>()
    const failed = new Set<string>()
    const entryPolicies: Policy[] = []
    for (const [i, listenerConfig] of entryConfig.entries()) {
      const key = policyKey(i)
      let policy = policies.get(key)
      if (!policy && !failed.has(key)) {
        try {
          const tlsOptions = serverTlsOptions(listenerConfig, options.engine)
          const auth = listenerConfig.client_auth
          policy = {
            options: tlsOptions,
            session: sessionOptions(listenerConfig, tlsOptions, tickets.lifetimeS),
            ticketKeys,
            auth: {
              mode: auth?.mode ?? "none",
              forwardCert: auth?.forward_cert ?? false,
              forwardFormat: auth?.forward_format ?? "x-client",
            },
            key,
          }
          policies.set(key, policy)
        } catch (err) {
          failed.add(key)
          // client_auth.ca of an entry's own client_auth belongs to that entry; the rest is the listener's.
          const own = config.certificates[i]!.client_auth !== undefined && keyOf(err)?.startsWith("client_auth.")
          problems.push(...problemsOf(err, own ? ["certificates", i] : []))
        }
      }
      if (policy) entryPolicies.push(policy)
    }
    if (problems.length > 0) throw new BuildError(problems)
    const store = new CertStore(
      entryPolicies,
      loaded.certificates.map((list) => list!),
      { challenges: options.challenges, onDemand: options.onDemand },
    )
    store.#onReplaced = options.onReplaced
    store.#sources = loaded.sources
    // A source that pushes renewed certificates has them swapped in for its entry until the store is closed.
    for (const [i, source] of loaded.sources.entries()) {
      const unwatch = source.watch?.((certificates) => {
        try {
          store.replace(i, certificates)
        } catch (err) {
          options.onWatchError?.(err, i)
        }
      })
      if (unwatch) store.#unwatch.push(unwatch)
    }
    return store
  }

  /** close stops watching the sources: a generation that is retired takes no more pushed certificates. */
  close(): void {
    for (const unwatch of this.#unwatch.splice(0)) unwatch()
  }

  /**
   * replace swaps entry `entry`'s certificates (a renewed certificate, a new staple) for `certificates`, with the
   * entry's policy, ticket keys and session id context as before. New handshakes get the new contexts at once; open
   * connections keep theirs. Contexts of the other entries are kept as they are. Throws a BuildError (and changes
   * nothing) when the new certificates cannot be built or disagree on client_auth with another entry for a name.
   * It builds SecureContexts synchronously (0.6-0.7 ms each, measured for P-256 and RSA-2048 on a loaded 2-core
   * machine): call it at renewal time, not per request.
   */
  replace(entry: number, certificates: readonly LoadedCertificate[]): void {
    if (!Number.isInteger(entry) || entry < 0 || entry >= this.#entries.length || certificates.length === 0) {
      throw new TlsError(
        "PC_TLS_REPLACE",
        `replacing certificates: no entry ${entry} with ${certificates.length} certificate(s) (the store has ${this.#entries.length} entries)`,
      )
    }
    const entries = this.#entries.map((list, i) => (i === entry ? [...certificates] : list))
    const index = this.#build(entries, this.#index.built)
    const removed = this.#entries[entry]!.filter((c) => !certificates.includes(c))
    this.#entries = entries
    this.#index = index
    this.#onReplaced?.(entry, certificates, removed)
  }

  /** entries lists each config entry's certificates, in config order (the self-check tests one entry at a time). */
  entries(): readonly (readonly LoadedCertificate[])[] {
    return this.#entries
  }

  /** sourceStatus is what entry `entry`'s source says of itself (kind, next renewal, last error), if it says. */
  sourceStatus(entry: number): CertificateSourceStatus | undefined {
    return this.#sources[entry]?.status?.()
  }

  /** certificatesOf lists the certificates a context of this store holds (one, or ECDSA and RSA for a name). */
  certificatesOf(context: tls.SecureContext): readonly LoadedCertificate[] {
    return this.#index.members.get(context) ?? []
  }

  /**
   * certPickOf predicts, for a context holding an ECDSA and an RSA certificate, which one OpenSSL serves to a
   * ClientHello (the OCSP staple is set before OpenSSL chooses); undefined for other contexts.
   */
  certPickOf(context: tls.SecureContext): CertPick | undefined {
    return this.#index.picks.get(context)
  }

  /** build makes the lookup maps for these entries, reusing the contexts of `previous` whose certificates stay. */
  #build(entries: readonly (readonly LoadedCertificate[])[], previous: Map<string, tls.SecureContext>): Index {
    const problems: BuildProblem[] = []
    const entryOf = new Map<LoadedCertificate, number>()
    for (const [i, list] of entries.entries()) for (const cert of list) if (!entryOf.has(cert)) entryOf.set(cert, i)
    const certs = [...entryOf.keys()]
    const idOf = (cert: LoadedCertificate) => {
      let id = this.#ids.get(cert)
      if (id === undefined) {
        id = this.#nextId++
        this.#ids.set(cert, id)
      }
      return id
    }
    const policyOf = (cert: LoadedCertificate) => this.#policies[entryOf.get(cert)!]!

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
      const other = list.find((c) => policyOf(c).key !== policyOf(list[0]!).key)
      if (other) {
        const i = entryOf.get(other)!
        problems.push({
          path: ["certificates", i, ...(this.#policies[i]!.key === policyOf(list[0]!).key ? [] : ["client_auth"])],
          message: `the certificates for ${name} have different client_auth; give them one`,
          code: "PC_TLS_POLICY",
        })
      }
    }
    // One SecureContext per distinct set of certificates: ECDSA and RSA for one name share a context, and OpenSSL
    // picks between them by the client's signature algorithms. Node's SNICallback installs only the context's last
    // certificate, so ECDSA goes last: SNI-switched handshakes serve ECDSA, and contextForSocket() serves both.
    for (const list of byName.values())
      list.sort((a, b) => Number(a.keyType === "ecdsa") - Number(b.keyType === "ecdsa"))
    const built = new Map<string, tls.SecureContext>()
    const auths = new Map<tls.SecureContext, ClientAuthPolicy>()
    const members = new Map<tls.SecureContext, readonly LoadedCertificate[]>()
    const picks = new Map<tls.SecureContext, CertPick>()
    const refused = new Set<tls.SecureContext>()
    const contextOf = (list: LoadedCertificate[]): tls.SecureContext | undefined => {
      const id = list.map(idOf).join(",")
      let context = built.get(id)
      if (!context) {
        const policy = policyOf(list[0]!)
        try {
          context = previous.get(id) ?? buildContext(list, policy)
        } catch (err) {
          problems.push(...problemsOf(err, ["certificates", entryOf.get(list[0]!)!]))
          return undefined
        }
        built.set(id, context)
        auths.set(context, policy.auth)
        members.set(context, [...list])
        const pick = certPickFor(list, policy.options)
        if (pick) picks.set(context, pick)
        if (list.every((c) => c.pending === "refuse")) refused.add(context)
      }
      return context
    }
    const exact = new Map<string, tls.SecureContext>()
    const wildcard = new Map<string, tls.SecureContext>()
    for (const [name, list] of byName) {
      const context = contextOf(list)
      if (!context) continue
      if (name.startsWith("*.")) wildcard.set(name.slice(2), context)
      else exact.set(name, context)
    }
    const first = certs[0]!
    const defaultList = (first.names[0] !== undefined && byName.get(first.names[0])) || [first]
    const fallback = contextOf(defaultList)
    if (problems.length > 0 || !fallback) throw new BuildError(problems)
    const defaultPolicy = policyOf(defaultList[0]!)
    const secureOptions: tls.TlsOptions = {
      ...defaultPolicy.options,
      ...defaultPolicy.session,
      cert: defaultList.map((c) => c.chainPem),
      key: defaultList.map((c) => c.key.reveal()),
    }
    const single = new Set([...exact.values(), ...wildcard.values(), fallback]).size === 1
    return { certs, exact, wildcard, fallback, auths, members, picks, refused, built, secureOptions, single }
  }

  /** sniCallback is tls.Server's SNICallback: answers synchronously from the maps built in load(). */
  readonly sniCallback = (servername: string, cb: (err: Error | null, ctx?: tls.SecureContext) => void): void => {
    cb(null, this.contextFor(servername))
  }

  /** contextFor picks the context for an SNI name: exact, then wildcard one level down, then the default. */
  contextFor(servername: string | undefined): tls.SecureContext {
    const index = this.#index
    if (!servername) return index.fallback
    const name = normalizeName(servername)
    const exact = index.exact.get(name)
    if (exact) return exact
    const dot = name.indexOf(".")
    if (dot > 0) {
      const wild = index.wildcard.get(name.slice(dot + 1))
      if (wild) return wild
    }
    return index.fallback
  }

  /**
   * contextForSocket reads the ClientHello's SNI name off a fresh socket (putting the bytes back) and returns its
   * context. Build the TLSSocket on it (`new tls.TLSSocket(socket, { isServer: true, secureContext })`) to offer
   * every certificate of the name, ECDSA and RSA alike; the SNICallback path installs only one of them.
   */
  async contextForSocket(socket: net.Socket, timeoutMs: number, sink?: HelloSink): Promise<tls.SecureContext> {
    return this.contextForHello(await this.peek(socket, timeoutMs, sink))
  }

  /**
   * peek reads the ClientHello off a fresh socket and puts the bytes back: its SNI name, its ALPN list when the
   * store answers tls-alpn-01 challenges, and its body (for certPickOf). Never rejects (see peekClientHello).
   */
  peek(socket: net.Socket, timeoutMs: number, sink?: HelloSink): Promise<HelloScan> {
    return peekClientHello(socket, timeoutMs, this.#challenges !== undefined, sink)
  }

  /** peekThen is peek for the accept path: `done(socket, hello, arg)` instead of a promise (peekClientHelloThen). */
  peekThen(socket: net.Socket, timeoutMs: number, sink: HelloSink | undefined, done: PeekDone, arg?: unknown): void {
    peekClientHelloThen(socket, timeoutMs, this.#challenges !== undefined, sink, done, arg)
  }

  /**
   * contextForHello is the context for a peeked ClientHello: a tls-alpn-01 challenge's, else the name's. A promise
   * only while an on-demand certificate for the name is being fetched (it then resolves to whatever the store holds).
   */
  contextForHello(hello: HelloScan): tls.SecureContext | Promise<tls.SecureContext> {
    const name = hello.servername
    if (name && this.#challenges && hello.alpn?.length === 1 && hello.alpn[0] === ACME_TLS_ALPN) {
      const challenge = this.#challenges.contextFor(name)
      if (challenge) {
        this.#challengeContexts.add(challenge)
        return challenge
      }
    }
    if (name && this.#onDemand && !this.covers(name)) {
      const waiting = this.#onDemand(name)
      if (waiting) {
        const settled = () => this.contextFor(name)
        return waiting.then(settled, settled)
      }
    }
    return this.contextFor(name)
  }

  /** isChallenge: a tls-alpn-01 challenge context (serve it with ALPN acme-tls/1 only, then close; RFC 8737 §3). */
  isChallenge(context: tls.SecureContext): boolean {
    return this.#challengeContexts.has(context)
  }

  /** refuses: the context stands in for names still waiting for their first ACME certificate, to be refused. */
  refuses(context: tls.SecureContext): boolean {
    return this.#index.refused.has(context)
  }

  /** clientAuthOf is the client-certificate policy of one of this store's contexts. */
  clientAuthOf(context: tls.SecureContext): ClientAuthPolicy {
    return this.#index.auths.get(context) ?? NO_CLIENT_AUTH
  }

  /** covers says whether some certificate's name matches host (exact, or a wildcard one level up). */
  covers(host: string): boolean {
    const { exact, wildcard } = this.#index
    const name = normalizeName(host)
    if (exact.has(name)) return true
    if (name.startsWith("*.")) return wildcard.has(name.slice(2))
    const dot = name.indexOf(".")
    return dot > 0 && wildcard.has(name.slice(dot + 1))
  }

  /** certificates lists every certificate in use, in config order (after a replace, the new ones). */
  certificates(): readonly LoadedCertificate[] {
    return this.#index.certs
  }

  /** status lists the certificates without key material. */
  status(): CertificateStatus[] {
    return this.#index.certs.map(certificateStatus)
  }
}

interface SessionOptions {
  sessionIdContext: string
  sessionTimeout?: number
}

/**
 * sessionOptions scopes session resumption to this listener's policy (nginx CVE-2025-23419): the session id
 * context is a hash of the client-certificate policy and the served names, so a session made under a policy that
 * did not ask for a client certificate cannot resume where one is required, even with shared ticket keys.
 */
function sessionOptions(
  config: ListenerTlsConfig,
  policy: ServerTlsOptions,
  lifetimeS: number | undefined,
): SessionOptions {
  const scope = createHash("sha256")
  scope.update(`mode=${config.client_auth?.mode ?? "none"}\n`)
  scope.update(`ca=${String(policy.ca ?? "")}\ncrl=${String(policy.crl ?? "")}\n`)
  scope.update(`min=${policy.minVersion}\nmax=${policy.maxVersion}\n`)
  for (const entry of config.certificates) scope.update(`${JSON.stringify(entry)}\n`)
  const options: SessionOptions = {
    // OpenSSL takes at most 32 bytes of session id context.
    sessionIdContext: scope.digest("hex").slice(0, 32),
  }
  // The ticket lifetime hint (RFC 5077 §3.3, RFC 8446 §4.6.1) and OpenSSL's own session timeout: no longer than
  // the ring's schedule honours a ticket (state/ticket-rotation.ts).
  if (lifetimeS !== undefined) options.sessionTimeout = lifetimeS
  // session_tickets: false is the NoTickets callback (buildContext; ticket-callback.ts), not SSL_OP_NO_TICKET.
  return options
}

function buildContext(list: LoadedCertificate[], policy: Policy): tls.SecureContext {
  try {
    const context = tls.createSecureContext({
      ...policy.options,
      ...policy.session,
      cert: list.map((c) => c.chainPem),
      key: list.map((c) => c.key.reveal()),
    })
    ;(policy.ticketKeys ?? NoTickets).install(context)
    return context
  } catch (err) {
    const names = list[0]?.names.join(", ") ?? ""
    throw new TlsError("PC_TLS_POLICY", `building the tls context for ${names}: ${errorMessage(err)}`, { cause: err })
  }
}
