/** @module schema: the whole config surface as a zod schema; each field's .describe() states its default. */
import { isIP } from "node:net"
import { z } from "zod"
import { parseDuration, parseSize } from "../core/units.ts"

/** A duration ("30s", "250ms", "1m30s"), parsed to milliseconds. */
export function duration() {
  return z.union([z.string(), z.number()]).transform((value, ctx) => {
    const ms = parseDuration(value)
    if (ms === undefined) {
      ctx.addIssue({
        code: "custom",
        message: `expected a duration like "30s" or "250ms", got ${JSON.stringify(value)}`,
      })
      return z.NEVER
    }
    return ms
  })
}

/** A size ("1MiB", "64KiB", "16384"), parsed to bytes. */
export function size() {
  return z.union([z.string(), z.number()]).transform((value, ctx) => {
    const bytes = parseSize(value)
    if (bytes === undefined) {
      ctx.addIssue({ code: "custom", message: `expected a size like "64KiB" or "1MiB", got ${JSON.stringify(value)}` })
      return z.NEVER
    }
    return bytes
  })
}

/** HostPort is a parsed "host:port" ("[::1]:8443" for IPv6). */
export interface HostPort {
  host: string
  port: number
}

/** parseHostPort splits "127.0.0.1:8443" or "[::]:8443"; undefined when the port is missing or out of range. */
export function parseHostPort(text: string): HostPort | undefined {
  const match = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]\s]+)):(\d{1,5})$/.exec(text.trim())
  if (!match) return undefined
  const host = match[1] ?? match[2]!
  const port = Number(match[3])
  if (port > 65535) return undefined
  if (match[1] !== undefined && isIP(host) !== 6) return undefined
  return { host, port }
}

function hostPort() {
  return z.string().transform((value, ctx) => {
    const parsed = parseHostPort(value)
    if (!parsed) {
      ctx.addIssue({
        code: "custom",
        message: `expected "host:port", got ${JSON.stringify(value)}${addressHint(value)}`,
      })
      return z.NEVER
    }
    return parsed
  })
}

/**
 * A file path. PEM text pasted where its path belongs (a private key, most often) is refused, and the message never
 * repeats the value: config errors reach terminals, logs and the admin API. A path has no line breaks either.
 */
export function filePath() {
  return z
    .string()
    .min(1)
    .superRefine((value, ctx) => {
      if (/-----BEGIN[ A-Z0-9]*-----/.test(value)) {
        ctx.addIssue({
          code: "custom",
          message: "expected a file path, got PEM text (not shown); put it in a file and give that file's path",
        })
      } else if (/[\r\n]/.test(value)) {
        ctx.addIssue({ code: "custom", message: "expected a file path, got text with line breaks (not shown)" })
      }
    })
}

/** addressHint says how to mend an address parseHostPort refused: a missing port, a port that is no number. */
function addressHint(value: string): string {
  const text = value.trim()
  if (isIP(text) === 6) return `; put an IPv6 address in brackets and add a port, e.g. "[${text}]:8080"`
  const colon = text.lastIndexOf(":")
  if (colon < 0 || (text.startsWith("[") && !text.includes("]:"))) return `; add a port, e.g. "${text}:8080"`
  const host = text.slice(0, colon)
  const port = text.slice(colon + 1)
  if (/^\d+$/.test(port)) return Number(port) > 65535 ? "; the port must be at most 65535" : ""
  return `; the port must be a number, e.g. "${host || "127.0.0.1"}:8080"`
}

/** A CIDR block or a single address, e.g. "10.0.0.0/8" or "127.0.0.1". */
const cidr = z.string().refine(
  (value) => {
    const [addr, bits, ...rest] = value.split("/")
    const family = isIP(addr ?? "")
    if (family === 0 || rest.length > 0) return false
    if (bits === undefined) return true
    const n = Number(bits)
    return Number.isInteger(n) && n >= 0 && n <= (family === 4 ? 32 : 128)
  },
  { message: 'expected an address or CIDR block like "10.0.0.0/8"' },
)

const hostname = z
  .string()
  .regex(/^(\*\.)?[a-zA-Z0-9_]([a-zA-Z0-9_-]{0,62})(\.[a-zA-Z0-9_]([a-zA-Z0-9_-]{0,62}))*\.?$|^\*$/, {
    message: 'expected a host name like "example.com" or "*.example.com"',
  })

const clientAuth = z
  .object({
    mode: z.enum(["none", "request", "require"]).default("none").describe("client certificate mode (default none)"),
    ca: filePath().optional().describe("PEM file of the CAs that sign client certificates (required unless mode none)"),
    crl: filePath().optional().describe("PEM file of certificate revocation lists (default none)"),
    forward_cert: z
      .boolean()
      .default(false)
      .describe(
        "also send the whole certificate: the URL-encoded PEM in X-Client-Cert (x-client) or Cert (xfcc); rfc9440 always sends it (default false)",
      ),
    forward_format: z
      .enum(["x-client", "rfc9440", "xfcc"])
      .default("x-client")
      .describe(
        "how the client's identity reaches backends: x-client (X-Client-Verify, -Cert-Subject, -Cert-Fingerprint, -Cert), rfc9440 (Client-Cert: the DER certificate as a structured-field byte sequence; no Client-Cert-Chain) or xfcc (Envoy's X-Forwarded-Client-Cert); clients' own copies of all of these are always removed (default x-client)",
      ),
  })
  .strict()
  .superRefine((value, ctx) => {
    if (value.mode !== "none" && !value.ca) {
      ctx.addIssue({ code: "custom", path: ["ca"], message: `client_auth mode ${value.mode} needs a ca file` })
    }
  })

/** A certificate entry's own client_auth, like a line of HAProxy's crt-list: it governs the names it serves. */
const certificateClientAuth = clientAuth
  .optional()
  .describe("mTLS for this certificate's names, in place of the listener's client_auth (default: the listener's)")

const fileCertificate = z
  .object({
    cert: filePath().describe("PEM file with the certificate, then its chain (required)"),
    key: filePath().describe("PEM file with the private key (required)"),
    client_auth: certificateClientAuth,
  })
  .strict()

const selfSignedCertificate = z
  .object({
    self_signed: z
      .array(hostname)
      .min(1)
      .describe("names to put in a self-signed certificate made at start (development)"),
    key_type: z.enum(["ecdsa", "rsa"]).default("ecdsa").describe("key type of the made certificate (default ecdsa)"),
    client_auth: certificateClientAuth,
  })
  .strict()

const acmeCertificate = z
  .object({
    acme: z
      .array(hostname)
      .min(1)
      .describe(
        "names to get one certificate for from the ACME CA of the top-level acme section; a wildcard (*.example.com) needs dns-01",
      ),
    key_type: z
      .enum(["ecdsa", "rsa", "both"])
      .default("ecdsa")
      .describe("ecdsa (P-256), rsa (2048) or both: two certificates, OpenSSL picks by the client (default ecdsa)"),
    client_auth: certificateClientAuth,
  })
  .strict()

const certificate = z.union([fileCertificate, selfSignedCertificate, acmeCertificate], {
  error: () => "expected { cert: FILE, key: FILE }, { self_signed: [NAMES] } or { acme: [NAMES] }",
})

export const TLS_VERSIONS = ["TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"] as const

const hsts = z
  .object({
    max_age: duration().prefault("365d").describe("max-age (default 365d)"),
    include_subdomains: z.boolean().default(false).describe("add includeSubDomains (default false)"),
    preload: z.boolean().default(false).describe("add preload (default false)"),
  })
  .strict()

/** The session-ticket key schedule: the runtime's ring rotates every `rotate`; `keep` previous keys still open. */
const sessionTickets = z
  .object({
    rotate: duration()
      .prefault("12h")
      .refine((ms) => ms >= 1000, "rotate must be at least 1s")
      .describe("how often a new ticket key is made (default 12h)"),
    keep: z
      .number()
      .int()
      .min(0)
      .max(16)
      .default(2)
      .describe("previous keys whose tickets still resume, each for one more rotate period (default 2)"),
  })
  .strict()

const listenerTls = z
  .object({
    certificates: z.array(certificate).min(1).describe("one or more certificates; SNI picks among them (required)"),
    profile: z
      .enum(["modern", "intermediate", "old"])
      .default("intermediate")
      .describe("TLS policy (default intermediate)"),
    min_version: z.enum(TLS_VERSIONS).optional().describe("lowest TLS version (default from the profile)"),
    max_version: z.enum(TLS_VERSIONS).optional().describe("highest TLS version (default TLSv1.3)"),
    ciphers: z.string().optional().describe("OpenSSL cipher list for TLS 1.2 and below (default from the profile)"),
    ciphersuites: z.string().optional().describe("TLS 1.3 cipher suites (default from the profile)"),
    groups: z.array(z.string()).optional().describe("key exchange groups (default X25519MLKEM768:X25519:P-256:P-384)"),
    alpn: z
      .array(z.enum(["h2", "http/1.1"]))
      .optional()
      .describe("ALPN protocols (default [h2, http/1.1] for http)"),
    client_auth: clientAuth.optional().describe("mTLS from clients (default none)"),
    handshake_timeout: duration().prefault("10s").describe("time allowed for the TLS handshake (default 10s)"),
    hsts: hsts.optional().describe("Strict-Transport-Security on responses (default off)"),
    session_tickets: z
      .union([z.boolean(), sessionTickets])
      .default(true)
      .describe(
        "TLS 1.3/1.2 session resumption by tickets: true, false or a rotation schedule; false: no tickets (TLS 1.3 sends no NewSessionTicket, TLS 1.2 an empty one and no session id) and, as Portcullis keeps no session cache, no resumption by session id either: every handshake is full (default true)",
      ),
    ocsp_stapling: z
      .boolean()
      .default(true)
      .describe(
        "staple OCSP responses to clients that ask (status_request) for certificates whose issuer names a responder; fetched in the background, cached under data_dir, refreshed at half validity; false: off (default true)",
      ),
  })
  .strict()

const route = z
  .object({
    hosts: z
      .array(hostname)
      .optional()
      .describe("Host names (or SNI on a tcp listener) this route takes (default any)"),
    path_prefix: z.string().startsWith("/").optional().describe("path prefix this route takes (default any)"),
    upstream: z.string().min(1).describe("the upstream that serves this route (required)"),
  })
  .strict()

const listenerLimits = z
  .object({
    max_connections: z.number().int().positive().default(10_000).describe("open client connections (default 10000)"),
    max_header_size: size().prefault("16KiB").describe("request line plus headers (default 16KiB)"),
    max_headers: z.number().int().positive().default(100).describe("request header count (default 100)"),
    header_timeout: duration().prefault("10s").describe("time to receive the request headers (default 10s)"),
    idle_timeout: duration().prefault("60s").describe("keep-alive idle time between requests (default 60s)"),
    request_timeout: duration().prefault("5m").describe("time to receive the whole request (default 5m)"),
    body_buffer: size()
      .prefault("64KiB")
      .describe(
        "request body read before a backend connection is taken (the rest is streamed), so slow uploads do not hold backends; 0 = off (default 64KiB)",
      ),
    body_timeout: duration()
      .prefault("60s")
      .describe(
        "longest pause between reads of a request body (then 408 and close), and of a client reading a response (then closed) (default 60s)",
      ),
    per_client_connections: z
      .number()
      .int()
      .positive()
      .optional()
      .describe("open connections one client IP (IPv6: its /64) may hold (default unlimited)"),
    rate: z
      .object({
        per_second: z.number().positive().describe("requests per second one client IP may make (required)"),
        burst: z
          .number()
          .int()
          .min(1)
          .optional()
          .describe("requests allowed at once above the rate (default per_second)"),
        scope: z
          .enum(["local", "fleet"])
          .default("local")
          .describe(
            "local: this instance counts (with cluster.workers, all its workers together, as nginx's limit_req zone and HAProxy's stick tables do: each worker decides with its own bucket and the primary passes each the others' counts every 250 ms); fleet: the instances sharing cluster.store count together (each decides locally and reconciles with Redis in the background; while Redis is down each instance counts alone) (default local)",
          ),
      })
      .strict()
      .optional()
      .describe("per client IP request rate (token bucket); over it: 429 with Retry-After (default off)"),
  })
  .strict()

const listener = z
  .object({
    name: z.string().min(1).describe("a unique name, used in logs and metrics (required)"),
    address: hostPort().describe('"host:port" to bind (required)'),
    engine: z.enum(["http", "tcp"]).default("http").describe("http (L7) or tcp (L4) (default http)"),
    proxy_protocol: z.enum(["accept"]).optional().describe("read a PROXY v1/v2 header before TLS (default off)"),
    trusted_proxies: z.array(cidr).default([]).describe("peers whose X-Forwarded-* and PROXY headers are believed"),
    tls: listenerTls.optional().describe("TLS settings (required unless redirect_https)"),
    routes: z.array(route).optional().describe("host/path routes, first match wins"),
    upstream: z.string().optional().describe("the upstream for every connection (tcp engine; shorthand for one route)"),
    send_proxy_protocol: z.enum(["v1", "v2"]).optional().describe("send a PROXY header to backends (default off)"),
    redirect_https: z.number().int().min(1).max(65535).optional().describe("plain HTTP listener that only redirects"),
    limits: listenerLimits.prefault({}).describe("client-side limits and timeouts"),
  })
  .strict()
  .superRefine((value, ctx) => {
    if (value.redirect_https !== undefined) {
      for (const key of ["tls", "routes", "upstream"] as const) {
        if (value[key] !== undefined) {
          ctx.addIssue({ code: "custom", path: [key], message: `a redirect_https listener takes no ${key}` })
        }
      }
      return
    }
    if (!value.tls) ctx.addIssue({ code: "custom", path: ["tls"], message: "missing tls (or set redirect_https)" })
    if (!value.routes && !value.upstream) {
      ctx.addIssue({
        code: "custom",
        path: ["routes"],
        message: "missing routes (or upstream): where should traffic go?",
      })
    }
    if (value.routes && value.upstream) {
      ctx.addIssue({ code: "custom", path: ["upstream"], message: "give either routes or upstream, not both" })
    }
  })

const backend = z.preprocess(
  (value) => (typeof value === "string" ? { address: value } : value),
  z
    .object({
      address: hostPort().describe('"host:port" of the backend (required)'),
      weight: z.number().int().min(1).max(1000).default(1).describe("relative share of requests (default 1)"),
      backup: z.boolean().default(false).describe("only used when no primary backend is up (default false)"),
      max_connections: z
        .number()
        .int()
        .positive()
        .optional()
        .describe("requests in flight at once; more wait in the upstream queue (default unlimited)"),
    })
    .strict(),
)

const health = z
  .object({
    type: z
      .enum(["http", "tcp", "grpc"])
      .default("http")
      .describe(
        "http request (in the upstream's protocol: HTTP/1.1, or HTTP/2 for h2/h2c), tcp connect, or grpc: the standard grpc.health.v1.Health/Check (needs protocol h2 or h2c) (default http)",
      ),
    grpc_service: z.string().optional().describe("type grpc: the service asked about (default none: the whole server)"),
    path: z.string().startsWith("/").default("/").describe("path to GET (default /)"),
    host: z.string().optional().describe("Host header of the check (default the backend address)"),
    expect_status: z
      .string()
      .regex(/^\d{3}(-\d{3})?$/)
      .default("200-399")
      .describe("healthy status range (default 200-399)"),
    expect_body: z.string().optional().describe("substring the body must contain (default none)"),
    interval: duration().prefault("5s").describe("time between checks (default 5s)"),
    timeout: duration().prefault("2s").describe("time one check may take (default 2s)"),
    rise: z.number().int().positive().default(2).describe("passes that bring a backend up (default 2)"),
    fall: z.number().int().positive().default(3).describe("failures that take a backend down (default 3)"),
  })
  .strict()

const passive = z
  .object({
    enabled: z.boolean().default(true).describe("watch real requests and eject failing backends (default true)"),
    consecutive_errors: z
      .number()
      .int()
      .positive()
      .default(5)
      .describe("failures in a row (connect error, reset, timeout, 5xx) that eject a backend (default 5)"),
    base_ejection: duration().prefault("30s").describe("first ejection; each further one doubles (default 30s)"),
    max_ejection: duration().prefault("5m").describe("longest ejection (default 5m)"),
    count_5xx: z.boolean().default(true).describe("count 5xx responses as failures (default true)"),
    max_ejected_percent: z
      .number()
      .int()
      .min(0)
      .max(100)
      .default(50)
      .describe("most backends ejected at once, in percent; one may always be (default 50)"),
  })
  .strict()

const queue = z
  .object({
    size: z.number().int().min(0).default(100).describe("requests that may wait; more get 503 at once (default 100)"),
    timeout: duration().prefault("10s").describe("longest wait before 503 (default 10s)"),
  })
  .strict()

const upstreamTls = z
  .object({
    ca: filePath().optional().describe("PEM file of CAs to verify backends with (default the system store)"),
    servername: z.string().optional().describe("SNI and the name checked on the backend certificate (default host)"),
    cert: filePath().optional().describe("client certificate for mTLS to the backend (default none)"),
    key: filePath().optional().describe("its private key"),
    insecure_skip_verify: z.boolean().default(false).describe("do not verify backends (default false; warns)"),
  })
  .strict()
  .superRefine((value, ctx) => {
    if ((value.cert === undefined) !== (value.key === undefined)) {
      ctx.addIssue({ code: "custom", path: [value.cert ? "key" : "cert"], message: "cert and key go together" })
    }
  })

const upstreamTimeouts = z
  .object({
    connect: duration().prefault("5s").describe("backend connect (default 5s)"),
    response: duration().prefault("60s").describe("wait for the response headers (default 60s)"),
    idle: duration()
      .prefault("60s")
      .describe("body inactivity, and keep-alive idle of pooled connections (default 60s)"),
    total: duration()
      .prefault("0s")
      .describe(
        "whole request, first try to last response byte; before the response began: 504, after: the response is cut; 0 = off (default 0s)",
      ),
  })
  .strict()

const upstream = z
  .object({
    backends: z.array(backend).min(1).describe("backends as host:port or objects (required)"),
    balance: z.enum(["round_robin", "least_conn", "p2c", "hash"]).default("p2c").describe("balancer (default p2c)"),
    hash_key: z
      .string()
      .regex(/^(client_ip|path|header:[A-Za-z0-9-]+|cookie:[A-Za-z0-9_-]+)$/)
      .default("client_ip")
      .describe("what the hash balancer hashes (default client_ip)"),
    sticky: z
      .object({
        cookie: z
          .string()
          .regex(/^[A-Za-z0-9_-]+$/)
          .default("pc_sticky")
          .describe("cookie naming the client's backend (default pc_sticky)"),
      })
      .strict()
      .optional()
      .describe("pin a client to a backend by cookie until it goes down; `balance` picks the first (default off)"),
    health: health.optional().describe("active health checks (default off)"),
    passive: passive.prefault({}).describe("passive health: eject backends that keep failing real requests"),
    slow_start: duration()
      .prefault("0s")
      .describe("ramp a returning backend's weight from 10% to full over this time; 0 = off (default 0s)"),
    queue: queue.prefault({}).describe("requests waiting when every backend is at max_connections"),
    timeouts: upstreamTimeouts.prefault({}).describe("backend timeouts"),
    retries: z
      .number()
      .int()
      .min(0)
      .max(10)
      .default(2)
      .describe("extra tries on another backend after a connect failure or reset before any response byte (default 2)"),
    try_duration: duration()
      .prefault("0s")
      .describe("time budget for a request's tries together; 0 = no limit beyond the timeouts (default 0s)"),
    retry_body_limit: size()
      .prefault("64KiB")
      .describe(
        "request bodies up to this size are held so the request can be retried; larger ones never are (default 64KiB)",
      ),
    tls: upstreamTls.optional().describe("re-encrypt to backends (default plain)"),
    send_proxy_protocol: z.enum(["v1", "v2"]).optional().describe("PROXY header on backend connections (default off)"),
    keepalive: z
      .number()
      .int()
      .min(0)
      .default(64)
      .describe(
        "idle keep-alive connections kept per backend beyond what the load uses: connections in use are never closed for it; idle ones above it are closed gradually, longest idle first (each second, half the excess); 0 = no reuse (default 64)",
      ),
    protocol: z
      .enum(["http1", "h2", "h2c", "auto"])
      .default("http1")
      .describe(
        "what the backends speak: http1 (HTTP/1.1, keep-alive pool), h2 (HTTP/2 over TLS: needs tls; ALPN h2), h2c (HTTP/2 over plain TCP, prior knowledge; e.g. gRPC servers) or auto (TLS upstreams: ALPN h2,http/1.1 on the first connection to each backend decides; plain ones: http1); HTTP/2 is multiplexed over a few connections per backend (default http1)",
      ),
  })
  .strict()
  .superRefine((value, ctx) => {
    if (value.protocol === "h2" && !value.tls) {
      ctx.addIssue({
        code: "custom",
        path: ["protocol"],
        message: "protocol h2 is HTTP/2 over TLS: add tls, or use h2c for plain-TCP HTTP/2 backends",
      })
    }
    if (value.protocol === "h2c" && value.tls) {
      ctx.addIssue({
        code: "custom",
        path: ["protocol"],
        message: "protocol h2c is HTTP/2 without TLS: remove tls, or use h2 for HTTP/2 over TLS",
      })
    }
    if (value.health?.type === "grpc" && value.protocol === "http1") {
      ctx.addIssue({
        code: "custom",
        path: ["health", "type"],
        message: "a grpc health check speaks HTTP/2: set protocol h2c (or h2 with tls) on this upstream",
      })
    }
    if (value.protocol !== "http1" && value.send_proxy_protocol) {
      ctx.addIssue({
        code: "custom",
        path: ["send_proxy_protocol"],
        message: `send_proxy_protocol is not supported with protocol ${value.protocol} yet: HTTP/2 connections carry many clients' streams`,
      })
    }
  })

const adminTls = z
  .object({
    cert: z.string().min(1).describe("PEM file with the admin listener's certificate and chain (required)"),
    key: z.string().min(1).describe("PEM file with its private key (required)"),
    client_ca: z
      .string()
      .min(1)
      .describe("PEM file of the CAs that sign admin client certificates; a client certificate is required (required)"),
  })
  .strict()

const admin = z
  .object({
    address: hostPort().prefault("127.0.0.1:9901").describe('admin API address (default "127.0.0.1:9901")'),
    token_file: z
      .string()
      .min(1)
      .optional()
      .describe(
        "file holding the bearer token every admin request must send; set: required on any address (default none)",
      ),
    tls: adminTls
      .optional()
      .describe(
        "serve the admin API over TLS and require a client certificate signed by client_ca (default plain HTTP)",
      ),
  })
  .strict()
  .superRefine((value, ctx) => {
    // Off loopback the admin API (reload, drain, failures with client addresses) must not be open to anyone who
    // can reach the port: it needs a token or a client certificate.
    if (!isLoopback(value.address.host) && value.token_file === undefined && value.tls === undefined) {
      ctx.addIssue({
        code: "custom",
        path: ["address"],
        message: `admin address ${value.address.host} is not loopback: set admin.token_file (a bearer token) or admin.tls (with client_ca), or bind 127.0.0.1`,
      })
    }
  })

/** isLoopback: 127.0.0.0/8, ::1, localhost (the admin API is open there without credentials). */
export function isLoopback(host: string): boolean {
  const h = host.toLowerCase()
  return h === "localhost" || h === "::1" || h.startsWith("127.") || h.startsWith("::ffff:127.")
}

const tracing = z
  .object({
    generate: z
      .boolean()
      .default(false)
      .describe("add a W3C traceparent to requests that arrive without one (default false)"),
  })
  .strict()

const metrics = z
  .object({
    enabled: z
      .boolean()
      .default(true)
      .describe(
        "count by label and time (handshakes by version and cipher, requests by route, latency histograms, bytes) and serve GET /metrics; false keeps only the /status totals and turns the ClientHello census off (default true)",
      ),
    census_window: z
      .number()
      .int()
      .min(0)
      .max(100_000)
      .default(1000)
      .describe("ClientHellos per listener the census keeps (GET /tls/clients); 0 turns the census off (default 1000)"),
    census_sample: z
      .number()
      .int()
      .min(1)
      .max(1000)
      .default(10)
      .describe(
        "on a listener with one certificate, the census reads 1 in this many ClientHellos: only for it is the ClientHello peeked there, which costs a full handshake about a fifth more CPU; listeners with several certificates peek every hello for SNI and count each (default 10)",
      ),
  })
  .strict()

const cluster = z
  .object({
    workers: z
      .union([z.literal("auto"), z.number().int().min(1).max(256)])
      .optional()
      .describe(
        "worker processes that carry traffic behind one primary: a number, or auto (one per core, os.availableParallelism()) (default 1: one process)",
      ),
    store: z
      .object({
        redis: z
          .string()
          .regex(/^rediss?:\/\/[^\s]+$/, "a redis:// (or rediss:// for TLS) URL")
          .describe("Redis or Valkey URL, redis://[user:password@]host[:port][/db], rediss:// for TLS (required)"),
      })
      .strict()
      .optional()
      .describe(
        "fleet store shared by instances: ticket keys, instance list, fleet rate limits, ACME account, certificates and locks (default none)",
      ),
  })
  .strict()

export const ACME_CHALLENGES = ["http-01", "tls-alpn-01", "dns-01"] as const

const acmeOnDemand = z
  .object({
    ask: z
      .string()
      .regex(/^https?:\/\/[^\s]+$/, "an http:// or https:// URL")
      .describe(
        "URL asked GET <ask>?domain=<name> before a certificate is ordered for a name; only a 2xx answer allows it (required)",
      ),
    names: z
      .array(hostname)
      .min(1)
      .describe(
        "patterns of the names that may get a certificate at their first handshake: exact or *.example.com (required)",
      ),
    rate: z
      .number()
      .int()
      .positive()
      .default(10)
      .describe("new on-demand orders per minute at most; a name over the rate is served the fallback (default 10)"),
    max_in_flight: z
      .number()
      .int()
      .positive()
      .default(4)
      .describe("names being asked about or ordered at once; more are served the fallback, never queued (default 4)"),
  })
  .strict()

const acme = z
  .object({
    directory: z
      .string()
      .regex(/^https:\/\/[^\s]+$/, "an https:// URL")
      .describe("the CA's ACME directory URL, e.g. https://acme-v02.api.letsencrypt.org/directory (required)"),
    email: z.string().min(3).optional().describe("contact address of the ACME account (default none)"),
    eab: z
      .object({
        kid: z.string().min(1).describe("the key id the CA gave (required)"),
        hmac_key_file: filePath().describe("file holding the base64url HMAC key the CA gave (required)"),
      })
      .strict()
      .optional()
      .describe("external account binding (RFC 8555 §7.3.4), for CAs that ask for one (default none)"),
    ca_bundle: filePath()
      .optional()
      .describe("PEM file of the CAs that sign the ACME server's own HTTPS certificate (default the system store)"),
    profile: z
      .string()
      .min(1)
      .optional()
      .describe(
        "certificate profile asked for in each order (draft-ietf-acme-profiles), e.g. shortlived; it must be one the CA's directory lists in meta.profiles, else no order is placed and the failure is logged (default none: the CA's default)",
      ),
    challenges: z
      .array(z.enum(ACME_CHALLENGES))
      .min(1)
      .optional()
      .describe(
        "challenge types offered, in order of preference: http-01 (on a redirect_https listener), tls-alpn-01 (on the TLS listener), dns-01 (through dns_hook) (default [dns-01] when dns_hook is set, else [http-01, tls-alpn-01])",
      ),
    dns_hook: z
      .string()
      .min(1)
      .optional()
      .describe(
        "command run by /bin/sh to set (ACME_ACTION=set) and remove (ACME_ACTION=clear) the TXT record ACME_TXT_NAME = ACME_TXT_VALUE for dns-01; ACME_DOMAIN names the domain (default none)",
      ),
    renew_before: duration()
      .optional()
      .describe(
        "renew when less than this is left; without it: inside the CA's ARI window, else at two thirds of the lifetime (default none)",
      ),
    while_pending: z
      .enum(["self_signed", "refuse"])
      .default("self_signed")
      .describe(
        "what a name waiting for its first certificate gets: a self-signed certificate, or a TLS alert unrecognized_name (default self_signed)",
      ),
    retry: z
      .object({
        initial: duration().prefault("1m").describe("wait after the first failed order (default 1m)"),
        max: duration().prefault("6h").describe("longest wait between tries; each failure doubles it (default 6h)"),
      })
      .strict()
      .prefault({})
      .describe("backoff after a failed order; the old certificate keeps serving meanwhile"),
    on_demand: acmeOnDemand
      .optional()
      .describe(
        "on-demand TLS (Caddy's): a name matching names with no certificate gets one at its first handshake, once ask allows it (default off)",
      ),
  })
  .strict()

const accessLog = z
  .object({
    enabled: z.boolean().default(true).describe("one JSON line per request (default true)"),
    path: z
      .string()
      .min(1)
      .optional()
      .describe(
        "file the lines are appended to, relative to the config file; reopened on SIGUSR1 for logrotate (default stdout)",
      ),
  })
  .strict()

export const configSchema = z
  .object({
    listeners: z.array(listener).min(1).describe("where clients connect (required)"),
    upstreams: z
      .record(z.string().regex(/^[A-Za-z0-9_.-]+$/), upstream)
      .default({})
      .describe("named backend pools"),
    admin: admin.optional().describe("admin API (default on 127.0.0.1:9901 for the embedded default only)"),
    access_log: accessLog.prefault({}).describe("access log settings"),
    metrics: metrics.prefault({}).describe("what is measured on the hot path: metrics and the ClientHello census"),
    tracing: tracing.prefault({}).describe("W3C trace context: a client's traceparent always passes through"),
    cluster: cluster.optional().describe("several instances as one fleet (default: one instance alone)"),
    acme: acme.optional().describe("the ACME CA that { acme: [names] } certificates come from (default none)"),
    data_dir: z.string().default(".data").describe("where generated state lives (default .data beside the config)"),
    shutdown_grace: duration()
      .prefault("30s")
      .describe("time in-flight requests get on shutdown or reload (default 30s)"),
  })
  .strict()
  .superRefine((config, ctx) => {
    for (const problem of crossCheck(config)) ctx.addIssue({ code: "custom", ...problem })
  })

/**
 * crossCheck finds what no single key shows: duplicate listener names and addresses, routes to unknown upstreams,
 * path routes on a tcp listener, a fleet rate scope without a fleet store. It reads the config before or after the schema (raw YAML values or parsed ones)
 * and skips what it cannot read, so load.ts runs it even where the schema failed elsewhere in the file.
 */
export function crossCheck(input: unknown): { path: (string | number)[]; message: string }[] {
  const out: { path: (string | number)[]; message: string }[] = []
  const root = isRecord(input) ? input : {}
  const listeners = Array.isArray(root["listeners"]) ? (root["listeners"] as unknown[]) : []
  const upstreams = isRecord(root["upstreams"]) ? root["upstreams"] : {}
  const names = new Set<string>()
  const addresses = new Map<string, number>()
  listeners.forEach((raw, i) => {
    if (!isRecord(raw)) return
    const l = raw
    if (typeof l["name"] === "string") {
      if (names.has(l["name"]))
        out.push({ path: ["listeners", i, "name"], message: `duplicate listener name "${l["name"]}"` })
      names.add(l["name"])
    }
    const address = typeof l["address"] === "string" ? parseHostPort(l["address"]) : l["address"]
    if (isRecord(address) && typeof address["host"] === "string" && typeof address["port"] === "number") {
      const key = `${address["host"]}:${address["port"]}`
      const other = addresses.get(key)
      if (other !== undefined) {
        out.push({
          path: ["listeners", i, "address"],
          message: `address ${key} is already used by listeners[${other}]`,
        })
      } else addresses.set(key, i)
    }
    const check = (name: unknown, path: (string | number)[]) => {
      if (typeof name === "string" && !Object.hasOwn(upstreams, name)) {
        const known = Object.keys(upstreams)
        out.push({
          path: ["listeners", i, ...path],
          message: `unknown upstream "${name}"; known: ${known.length ? known.join(", ") : "none (add an upstreams section)"}`,
        })
      }
    }
    const limits = isRecord(l["limits"]) ? l["limits"] : undefined
    const rate = limits && isRecord(limits["rate"]) ? limits["rate"] : undefined
    const cluster = isRecord(root["cluster"]) ? root["cluster"] : undefined
    if (rate?.["scope"] === "fleet" && cluster?.["store"] === undefined) {
      out.push({
        path: ["listeners", i, "limits", "rate", "scope"],
        message: "scope fleet needs cluster.store (the counts are shared through it)",
      })
    }
    checkAcmeEntries(root, l, i, out)
    check(l["upstream"], ["upstream"])
    const routes = Array.isArray(l["routes"]) ? (l["routes"] as unknown[]) : undefined
    routes?.forEach((r, j) => {
      if (isRecord(r)) check(r["upstream"], ["routes", j, "upstream"])
    })
    if (l["engine"] === "tcp" && routes?.some((r) => isRecord(r) && r["path_prefix"] !== undefined)) {
      out.push({ path: ["listeners", i, "routes"], message: "a tcp listener routes by SNI only: no path_prefix" })
    }
  })
  const acme = isRecord(root["acme"]) ? root["acme"] : undefined
  if (Array.isArray(acme?.["challenges"]) && acme["challenges"].includes("dns-01") && acme["dns_hook"] === undefined) {
    out.push({
      path: ["acme", "challenges"],
      message: "dns-01 needs acme.dns_hook, the command that sets the TXT record",
    })
  }
  return out
}

/**
 * checkAcmeEntries: an `{ acme }` entry needs the top-level acme section; a wildcard name can only be validated by
 * dns-01 (RFC 8555 §7.1.3, CA/B Forum BR 3.2.2.4.7), so it needs dns_hook and dns-01 among the challenges.
 */
function checkAcmeEntries(
  root: Record<string, unknown>,
  l: Record<string, unknown>,
  i: number,
  out: { path: (string | number)[]; message: string }[],
): void {
  const tls = isRecord(l["tls"]) ? l["tls"] : undefined
  const entries = tls && Array.isArray(tls["certificates"]) ? (tls["certificates"] as unknown[]) : []
  const acme = isRecord(root["acme"]) ? root["acme"] : undefined
  const challenges = acme && Array.isArray(acme["challenges"]) ? (acme["challenges"] as unknown[]) : undefined
  const dns = acme?.["dns_hook"] !== undefined && (challenges === undefined || challenges.includes("dns-01"))
  entries.forEach((entry, j) => {
    if (!isRecord(entry) || !Array.isArray(entry["acme"])) return
    const at = ["listeners", i, "tls", "certificates", j, "acme"]
    if (!acme) {
      out.push({ path: at, message: "an acme certificate needs the top-level acme section (directory, email)" })
      return
    }
    ;(entry["acme"] as unknown[]).forEach((name, k) => {
      if (typeof name === "string" && name.startsWith("*.") && !dns) {
        out.push({
          path: [...at, k],
          message: `${name}: a wildcard name can only be validated with dns-01; set acme.dns_hook${challenges ? " and list dns-01 in acme.challenges" : ""}`,
        })
      }
    })
  })
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === "object" && !Array.isArray(value)
}

/** Config is a validated config with durations in ms, sizes in bytes and addresses parsed. */
export type Config = z.output<typeof configSchema>
export type ListenerConfig = Config["listeners"][number]
export type ListenerTlsConfig = NonNullable<ListenerConfig["tls"]>
export type CertificateConfig = ListenerTlsConfig["certificates"][number]
export type RouteConfig = NonNullable<ListenerConfig["routes"]>[number]
export type UpstreamConfig = Config["upstreams"][string]
export type BackendConfig = UpstreamConfig["backends"][number]
export type HealthConfig = NonNullable<UpstreamConfig["health"]>
export type ClusterConfig = NonNullable<Config["cluster"]>
export type AcmeConfig = NonNullable<Config["acme"]>
export type AcmeCertificateConfig = Extract<CertificateConfig, { acme: string[] }>
export type UpstreamTlsConfig = NonNullable<UpstreamConfig["tls"]>
