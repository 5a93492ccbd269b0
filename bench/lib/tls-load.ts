/** @module tls-load: drives the tls-worker threads for W1/W5 (handshakes) and W6 (idle connections). */
import { join } from "node:path"
import { setTimeout as sleep } from "node:timers/promises"
import { Worker } from "node:worker_threads"
import { C, CONTROL, STRIDE, type WorkerConfig } from "../clients/tls-worker.ts"
import { clientSockets, cpuSeconds, ownCpuSeconds } from "./proc.ts"

const workerFile = join(import.meta.dirname, "..", "clients", "tls-worker.ts")

/** Totals sums the shared counters over every worker. */
export type Totals = Record<keyof typeof C, number>

function totals(counters: Int32Array, workers: number): Totals {
  const out = Object.fromEntries(Object.keys(C).map((k) => [k, 0])) as Totals
  for (let w = 0; w < workers; w++) {
    for (const [k, i] of Object.entries(C)) out[k as keyof typeof C] += Atomics.load(counters, w * STRIDE + i)
  }
  return out
}

function diff(a: Totals, b: Totals): Totals {
  return Object.fromEntries(Object.keys(a).map((k) => [k, b[k as keyof Totals] - a[k as keyof Totals]])) as Totals
}

/** HandshakeResult is one W1/W5 measurement window. */
export interface HandshakeResult {
  window: Totals
  /** the key-exchange group of the window's handshakes, by name (the client offers X25519 only) */
  groups: Record<string, number>
  /** NewSessionTickets per connection the target sent: after a full handshake, and after a resumed one */
  ticketsPerFull: number
  ticketsPerResumed: number
  seconds: number
  proxyCpu: number
  clientCpu: number
  /** problems are the failed checks; empty when the figure can be trusted. */
  problems: string[]
}

function startWorkers(base: Omit<WorkerConfig, "index" | "counters" | "control">, n: number) {
  const counters = new SharedArrayBuffer(n * STRIDE * 4)
  const control = new SharedArrayBuffer(4)
  const workers: Worker[] = []
  for (let i = 0; i < n; i++) {
    const cfg: WorkerConfig = { ...base, index: i, counters, control }
    workers.push(new Worker(workerFile, { workerData: cfg }))
  }
  return { workers, counters: new Int32Array(counters), control: new Int32Array(control) }
}

function waitAll(workers: Worker[], type: string, deadlineMs: number): Promise<boolean> {
  const each = workers.map(
    (w) =>
      new Promise<boolean>((resolve) => {
        const onMessage = (m: { type: string }) => {
          if (m.type === type) {
            w.off("message", onMessage)
            resolve(true)
          }
        }
        w.on("message", onMessage)
        w.once("error", () => resolve(false))
        w.once("exit", () => resolve(false))
      }),
  )
  return Promise.race([Promise.all(each).then((r) => r.every(Boolean)), sleep(deadlineMs).then(() => false)])
}

/**
 * runHandshakes runs W1 ("full") or W5 ("resumed"): `threads` workers each keep `concurrency` connections in flight;
 * after warmupS the counters and the proxy's CPU are read, and again measureS later.
 */
export async function runHandshakes(opts: {
  mode: "full" | "resumed"
  port: number
  proxyPid: number
  fingerprint256: string
  threads: number
  concurrency: number
  warmupS: number
  measureS: number
}): Promise<HandshakeResult> {
  const { workers, counters, control } = startWorkers(
    {
      mode: opts.mode,
      port: opts.port,
      path: "/small",
      expectedBody: 100,
      concurrency: opts.concurrency,
      count: 0,
      fingerprint256: opts.fingerprint256,
    },
    opts.threads,
  )
  const otherGroups = new Set<string>()
  for (const w of workers)
    w.on("message", (m: { type: string; name?: string }) => m.type === "group" && otherGroups.add(String(m.name)))
  try {
    await sleep(opts.warmupS * 1000)
    const t0 = performance.now()
    const c0 = cpuSeconds(opts.proxyPid)
    const o0 = ownCpuSeconds()
    const s0 = totals(counters, opts.threads)
    await sleep(opts.measureS * 1000)
    const s1 = totals(counters, opts.threads)
    const c1 = cpuSeconds(opts.proxyPid)
    const o1 = ownCpuSeconds()
    const t1 = performance.now()
    Atomics.store(control, 0, CONTROL.STOP)
    for (const w of workers) w.postMessage({ type: "stop" })
    const finished = await waitAll(workers, "finished", 10_000)
    const window = diff(s0, s1)
    const problems: string[] = []
    const expect = opts.mode === "full" ? "full" : "resumed"
    const other = opts.mode === "full" ? window.resumed : window.full
    if (window.done === 0) problems.push("no request completed")
    if (other > 0)
      problems.push(`${other} handshakes were ${opts.mode === "full" ? "resumed" : "full"}, expected ${expect}`)
    if (window.errors > 0) problems.push(`${window.errors} connection errors`)
    if (window.badStatus > 0) problems.push(`${window.badStatus} non-200 responses`)
    if (window.badBody > 0) problems.push(`${window.badBody} wrong body sizes`)
    if (window.notTls13 > 0) problems.push(`${window.notTls13} connections not TLS 1.3`)
    if (window.wrongCipher > 0) problems.push(`${window.wrongCipher} connections with another cipher`)
    const certs = totals(counters, opts.threads).certMismatch
    if (certs > 0) problems.push("the target served another certificate")
    if (!finished) problems.push("client workers did not finish within 10 s of stop")
    // Every target must do the same key exchange: the client offers X25519 alone (a Node 24 server would pick the
    // X25519MLKEM768 hybrid if offered, which costs more).
    if (window.otherGroup > 0) {
      problems.push(`${window.otherGroup} handshakes with another group than X25519 (${[...otherGroups].join(", ")})`)
    }
    const groups: Record<string, number> = { X25519: window.x25519 }
    if (window.otherGroup > 0) groups[[...otherGroups].join("|") || "other"] = window.otherGroup
    return {
      window,
      groups,
      ticketsPerFull: window.full > 0 ? window.ticketsAfterFull / window.full : 0,
      ticketsPerResumed: window.resumed > 0 ? window.ticketsAfterResume / window.resumed : 0,
      seconds: (t1 - t0) / 1000,
      proxyCpu: c1 - c0,
      clientCpu: o1 - o0,
      problems,
    }
  } finally {
    await Promise.all(workers.map((w) => w.terminate()))
  }
}

/** IdleResult is one W6 measurement. */
export interface IdleResult {
  connections: number
  rssBefore: number
  rssAfter: number
  bytesPerConnection: number
  openSeconds: number
  problems: string[]
}

/**
 * runIdle opens `count` TLS keep-alive connections (full handshakes, one GET /small each), holds them, and reads the
 * proxy's RSS before and after; it checks that all of them are still open when RSS is read.
 */
export async function runIdle(opts: {
  port: number
  fingerprint256: string
  count: number
  threads: number
  concurrency: number
  settleMs: number
  rss: () => number
}): Promise<IdleResult> {
  const rssBefore = opts.rss()
  const per = Math.ceil(opts.count / opts.threads)
  const t0 = performance.now()
  const { workers, counters, control } = startWorkers(
    {
      mode: "idle",
      port: opts.port,
      path: "/small",
      expectedBody: 100,
      concurrency: opts.concurrency,
      count: per,
      fingerprint256: opts.fingerprint256,
    },
    opts.threads,
  )
  const problems: string[] = []
  try {
    const opened = await waitAll(workers, "opened", 120_000)
    const openSeconds = (performance.now() - t0) / 1000
    if (!opened) problems.push("the connections were not all opened within 120 s")
    await sleep(opts.settleMs)
    const rssAfter = opts.rss()
    const sockets = clientSockets(opts.port).size
    const t = totals(counters, opts.threads)
    const expected = per * opts.threads
    if (t.opened !== expected) problems.push(`${t.opened} of ${expected} connections were served`)
    if (sockets !== expected) problems.push(`${sockets} established client sockets, expected ${expected}`)
    if (t.closedEarly > 0) problems.push(`${t.closedEarly} connections closed while idle`)
    if (t.errors > 0) problems.push(`${t.errors} connection errors`)
    if (t.badStatus > 0) problems.push(`${t.badStatus} non-200 responses`)
    if (t.badBody > 0) problems.push(`${t.badBody} wrong body sizes`)
    if (t.notTls13 > 0) problems.push(`${t.notTls13} connections not TLS 1.3`)
    Atomics.store(control, 0, CONTROL.RELEASE)
    for (const w of workers) w.postMessage({ type: "release" })
    await waitAll(workers, "released", 10_000)
    return {
      connections: expected,
      rssBefore,
      rssAfter,
      bytesPerConnection: (rssAfter - rssBefore) / expected,
      openSeconds,
      problems,
    }
  } finally {
    await Promise.all(workers.map((w) => w.terminate()))
  }
}
