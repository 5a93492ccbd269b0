/**
 * @module messages: what the cluster primary and its workers say over the IPC channel (child_process with
 * `serialization: "advanced"`, so a Config, Buffers and Infinity cross as they are).
 */
import type { Config, HostPort } from "../config/schema.ts"
import type { AcmeSnapshot, ChallengeChange, WireCertificate } from "../tls/acme/feed.ts"
import type { HealthRecord } from "../upstreams/health/active.ts"
import type { WireTicketKey } from "./ipc-ticket-ring.ts"
import type { SpendMessage } from "./primary-rates.ts"
import type { RatesMessage } from "./worker-rates.ts"

/**
 * QueryKind: what the primary asks a worker for an admin answer: its /status snapshot, its metric families, its
 * recent handshake failures, its ClientHello census (counts), its dashboard snapshot (totals), its certificate rows.
 * Each is asked when an admin request needs it (never per handshake) and answered once.
 */
export type QueryKind = "status" | "metrics" | "failures" | "census" | "dashboard" | "certificates"

/** HealthSnapshot: every upstream's active health records, by upstream name then backend id. */
export type HealthSnapshot = Record<string, Record<string, HealthRecord>>

/** AcmeFeedStart: what a worker's feed of one primary manager starts from (its epoch, what it holds now). */
export interface AcmeFeedStart {
  epoch: number
  snapshot: AcmeSnapshot
}

/** ToWorker is what the primary sends a worker. */
export type ToWorker =
  | {
      type: "start"
      config: Config
      health: HealthSnapshot
      keys: WireTicketKey[]
      drains: [upstream: string, backend: string][]
      /** the primary's ACME certificates and pending challenges, and its manager's epoch (none without acme) */
      acme: AcmeFeedStart | undefined
    }
  /** A handle message carries the bound server handle for `key` (or `error`). */
  | { type: "handle"; id: number; key: string; error?: string }
  /** `acme`: the config has a new acme section, so a new manager: build the generation on a new feed of its own */
  | { type: "prepare"; id: number; config: Config; health: HealthSnapshot; acme?: AcmeFeedStart | undefined }
  | { type: "commit"; id: number }
  | { type: "abort"; id: number }
  | { type: "health"; upstream: string; backend: string; record: HealthRecord }
  | { type: "keys"; keys: WireTicketKey[] }
  /** With an id the worker answers a reply (`{ draining }`, or `{ error }`); a start message carries drains too. */
  | { type: "drain"; id?: number; upstream: string; backend: string; on: boolean }
  | { type: "query"; id: number; what: QueryKind }
  | { type: "reopen-log" }
  /** What the other workers and instances accepted from a listener's clients (spent from this worker's buckets). */
  | SpendMessage
  /** ACME certificates the primary's manager of `epoch` took (issued, renewed, read from storage): swap them in place. */
  | { type: "acme-cert"; epoch: number; certs: WireCertificate[] }
  /** a challenge answer made or withdrawn; answered with acme-ack once it is in effect */
  | { type: "acme-challenge"; id: number; change: ChallengeChange }
  /** the primary's answer to an on-demand request: ok, the certificate was pushed before this */
  | { type: "acme-on-demand"; id: number; ok: boolean }
  /** handover: other processes accept on the sockets now (idle keep-alive connections are not cut). */
  | { type: "stop"; handover: boolean }

/** FromWorker is what a worker sends the primary. */
export type FromWorker =
  | { type: "ready"; ports: Record<string, number> }
  | { type: "failed"; error: string }
  | { type: "listen"; id: number; key: string; address: HostPort }
  | { type: "prepared"; id: number }
  | { type: "committed"; id: number }
  | { type: "refused"; id: number; error: string; problems?: unknown }
  | { type: "reply"; id: number; value: unknown }
  | { type: "rotate" }
  /** What this worker accepted per client of a listener since its last such message. */
  | RatesMessage
  | { type: "acme-ack"; id: number }
  /** on-demand TLS: a handshake for a matching name no certificate covers asks the primary for one */
  | { type: "acme-on-demand"; id: number; name: string }
