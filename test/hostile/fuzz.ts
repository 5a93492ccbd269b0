/**
 * What the two fuzzers share: a seeded PRNG (PC_FUZZ_SEED overrides the seed, which is printed first), an in-process
 * Portcullis with a trap for uncaught exceptions and unhandled rejections, and a bounded parallel case runner.
 */
import { mkdtempSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import v8 from "node:v8"
import vm from "node:vm"
import { startEchoBackend, type TestBackend } from "../helpers/backends.ts"
import { type RunningPortcullis, startPortcullis } from "../helpers/portcullis.ts"

/** Rng: mulberry32, small and fast; the same seed gives the same cases. */
export class Rng {
  #state: number
  constructor(seed: number) {
    this.#state = seed >>> 0
  }
  /** next is uniform in [0, 1). */
  next(): number {
    this.#state = (this.#state + 0x6d2b79f5) >>> 0
    let t = this.#state
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
  int(n: number): number {
    return Math.floor(this.next() * n)
  }
  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)]!
  }
  chance(p: number): boolean {
    return this.next() < p
  }
  bytes(n: number): Buffer {
    const b = Buffer.alloc(n)
    for (let i = 0; i < n; i++) b[i] = this.int(256)
    return b
  }
}

/** fuzzSeed is PC_FUZZ_SEED when set, else a fresh one; printed so that a failing run can be repeated. */
export function fuzzSeed(name: string): number {
  const seed = process.env.PC_FUZZ_SEED ? Number(process.env.PC_FUZZ_SEED) : Math.floor(Math.random() * 2 ** 32)
  console.log(`${name}: seed ${seed} (PC_FUZZ_SEED=${seed} repeats this run)`)
  return seed
}

export interface FuzzTarget {
  pc: RunningPortcullis
  backend: TestBackend
  port: number
  /** Uncaught exceptions and unhandled rejections seen, with the cases in flight when they came. */
  trapped: Array<{ error: unknown; cases: number[] }>
  /** Cases in flight now (the trap records them). */
  inFlight: Set<number>
  close: () => Promise<void>
}

/** startFuzzTarget runs Portcullis in this process (self-signed localhost, one echo backend) under the trap. */
export async function startFuzzTarget(): Promise<FuzzTarget> {
  const backend = await startEchoBackend("fuzz")
  const dir = mkdtempSync(join(tmpdir(), "pc-fuzz-"))
  const pc = await startPortcullis(
    `listeners:
  - name: web
    address: 127.0.0.1:0
    tls: { certificates: [{ self_signed: [localhost] }] }
    routes: [{ upstream: echo }]
upstreams:
  echo: { backends: ["127.0.0.1:${backend.port}"], passive: { enabled: false } }
data_dir: ${dir}/data
`,
    dir,
  )
  const trapped: FuzzTarget["trapped"] = []
  const inFlight = new Set<number>()
  const onError = (error: unknown) => trapped.push({ error, cases: [...inFlight] })
  process.on("uncaughtException", onError)
  process.on("unhandledRejection", onError)
  return {
    pc,
    backend,
    port: pc.port("web"),
    trapped,
    inFlight,
    close: async () => {
      process.off("uncaughtException", onError)
      process.off("unhandledRejection", onError)
      await pc.close()
      await backend.close()
    },
  }
}

/** runCases runs cases 0..count-1, `parallel` at a time; each gets its own Rng derived from the seed and its number. */
export async function runCases(
  target: FuzzTarget,
  seed: number,
  count: number,
  parallel: number,
  run: (rng: Rng, index: number) => Promise<void>,
): Promise<void> {
  let next = 0
  const worker = async () => {
    while (next < count) {
      const index = next++
      target.inFlight.add(index)
      try {
        await run(new Rng((seed ^ Math.imul(index + 1, 0x9e3779b1)) >>> 0), index)
      } catch (err) {
        throw new Error(`fuzz case ${index} (seed ${seed}): ${(err as Error).message}`, { cause: err })
      } finally {
        target.inFlight.delete(index)
        // The echo backend records every request it sees; that is the test's memory, not the proxy's.
        target.backend.seen.length = 0
      }
    }
  }
  await Promise.all(Array.from({ length: parallel }, worker))
}

/** describeTrapped formats what the trap caught, with the seed and the cases to repeat. */
export function describeTrapped(seed: number, trapped: FuzzTarget["trapped"]): string {
  return trapped
    .map(({ error, cases }) => `seed ${seed}, cases in flight ${cases.join(",")}: ${(error as Error)?.stack ?? error}`)
    .join("\n")
}

/** collect runs a full garbage collection (V8's gc, exposed for this call), so heap figures compare like with like. */
export function collect(): void {
  v8.setFlagsFromString("--expose-gc")
  const gc = vm.runInNewContext("gc") as () => void
  gc()
}

/** MemoryFigures: heap after a full collection, and RSS, in MiB. */
export function memory(): { heap: number; rss: number } {
  collect()
  const m = process.memoryUsage()
  return { heap: m.heapUsed / 2 ** 20, rss: m.rss / 2 ** 20 }
}

/** clientConnections is the number of client connections the target's listener holds open. */
export function clientConnections(target: FuzzTarget): number {
  const status = target.pc.runtime.status() as { listeners: Array<{ connections: number }> }
  return status.listeners.reduce((n, l) => n + l.connections, 0)
}
