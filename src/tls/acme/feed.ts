/**
 * @module feed: CertificateFeed, what a runtime's ACME certificate sources, challenge answers and on-demand TLS read
 * from: the AcmeManager itself in one process, the primary's manager over IPC in a cluster worker
 * (src/cluster/ipc-certificate-feed.ts).
 */
import type tls from "node:tls"
import type { AcmeConfig } from "../../config/schema.ts"
import { type LoadedCertificate, normalizeName } from "../certificate.ts"

/**
 * FedCertificate is one ACME certificate (names, key type) as a source serves it: `load` resolves with the current
 * certificate (undefined while the first one is pending), `subscribe` calls fn with each new one (issued, renewed,
 * loaded from a fleet's storage), `start` begins its schedule (a worker's copy has none: the primary's runs).
 */
export interface FedCertificate {
  readonly names: readonly string[]
  readonly keyType: "ecdsa" | "rsa"
  load(): Promise<LoadedCertificate | undefined>
  subscribe(fn: (cert: LoadedCertificate) => void): () => void
  start(): void
  readonly subscribers: number
  readonly nextRenewalAt: number | undefined
  readonly lastError: string | undefined
}

/** OnDemandRequests is on-demand TLS as the cert store asks it in a handshake (tls/acme/on-demand.ts has the contract). */
export interface OnDemandRequests {
  request(servername: string): Promise<boolean> | undefined
}

/**
 * CertificateFeed: everything of ACME that a generation reads. `http01.answer` and `tlsAlpn.contextFor` run in
 * requests and handshakes (map reads); nothing else does.
 */
export interface CertificateFeed {
  readonly config: AcmeConfig
  readonly http01: { answer(path: string): string | undefined }
  readonly tlsAlpn: { contextFor(name: string): tls.SecureContext | undefined }
  readonly onDemand: OnDemandRequests | undefined
  /** managed is the one certificate for these names and key type (made on first use). */
  managed(names: readonly string[], keyType: "ecdsa" | "rsa"): FedCertificate
  /** onDemandCertificates lists the certificates on-demand TLS obtained so far. */
  onDemandCertificates(): LoadedCertificate[]
  /** subscribeOnDemand calls fn whenever an on-demand certificate is added or renewed (see AcmeManager). */
  subscribeOnDemand(fn: () => Promise<void>): () => void
  /** prune forgets the certificates no running store serves any more. */
  prune(): void
  close(): void
}

/** managedKey is the key of one certificate by its names (normalised, deduplicated, in order) and key type. */
export function managedKey(names: readonly string[], keyType: "ecdsa" | "rsa"): { key: string; names: string[] } {
  const wanted = [...new Set(names.map(normalizeName))]
  return { key: `${keyType}\n${wanted.join("\n")}`, names: wanted }
}

/**
 * WireCertificate is one certificate as the primary pushes it to its workers (chain and key PEM over the IPC
 * channel, a local socketpair; never logged). `onDemand`: on-demand TLS obtained it.
 */
export interface WireCertificate {
  /** where it came from, for messages and `portcullis certs` (acme:<storage dir>) */
  source: string
  names: string[]
  keyType: "ecdsa" | "rsa"
  chainPem: string
  keyPem: string
  onDemand: boolean
}

/**
 * ChallengeChange is a pending challenge answer made (with its answer) or withdrawn (without): an http-01 token's
 * key authorisation, or the tls-alpn-01 challenge certificate of a name (RFC 8737 §3).
 */
export type ChallengeChange =
  | { type: "http-01"; token: string; keyAuthorization?: string }
  | { type: "tls-alpn-01"; name: string; cert?: string; key?: string }

/** ChallengeRelay is told of each change; `present` waits for its promise before the CA is asked to validate. */
export type ChallengeRelay = (change: ChallengeChange) => Promise<void>

/** AcmeSnapshot is what a worker that starts gets: every certificate held and every challenge answered now. */
export interface AcmeSnapshot {
  certs: WireCertificate[]
  challenges: ChallengeChange[]
}
