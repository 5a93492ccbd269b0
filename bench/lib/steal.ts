/**
 * @module steal: how much of each core the hypervisor gave to someone else (steal time, /proc/stat) while a cell
 * ran, and taking a cell again when that share was high. On these shared VMs a cell's figure taken while the host
 * was busy says more about the neighbours than the target: on 2026-12-03 a W2 cell with 34% steal on the proxy's
 * core gave 8,584 requests per CPU-s where the same target's other three passes gave 16,838-18,338.
 */
import { readFileSync } from "node:fs"

/** CoreTimes is one core's line of /proc/stat: every jiffy counted, and those the hypervisor stole. */
export interface CoreTimes {
  total: number
  steal: number
}

/** coreTimes reads /proc/stat's per-core lines (cpu0, cpu1, ...), indexed by core number. */
export function coreTimes(text = readFileSync("/proc/stat", "utf8")): CoreTimes[] {
  const out: CoreTimes[] = []
  for (const line of text.split("\n")) {
    const m = /^cpu(\d+) (.*)$/.exec(line)
    if (!m) continue
    // user nice system idle iowait irq softirq steal [guest guest_nice]: guest time is already counted in user
    const f = m[2]!.trim().split(/\s+/).map(Number)
    out[Number(m[1])] = { total: f.slice(0, 8).reduce((a, b) => a + b, 0), steal: f[7] ?? 0 }
  }
  return out
}

/** stealShare is, per core, the share (0-1) of the time between two coreTimes readings that was stolen. */
export function stealShare(before: readonly CoreTimes[], after: readonly CoreTimes[]): number[] {
  return after.map((a, i) => {
    const b = before[i]
    const dt = b ? a.total - b.total : 0
    return b && dt > 0 ? (a.steal - b.steal) / dt : 0
  })
}

/** Take is one take of a cell with the steal share of each core while it ran. */
export interface Take<T> {
  result: T
  /** 1 for the first take */
  take: number
  steal: number[]
}

/**
 * leastStolen takes `run` until a take's steal is at most `limit` on every core, or `takes` takes were made, and
 * returns the take with the least steal (on its worst core) and the others. The choice looks at the machine's
 * state only, never at the result, so it favours no target; `stop()` true ends it early (an interrupted bench).
 */
export async function leastStolen<T>(
  run: () => Promise<T>,
  opts: { limit: number; takes: number; read?: () => CoreTimes[]; stop?: () => boolean },
): Promise<{ best: Take<T>; others: Take<T>[] }> {
  const read = opts.read ?? (() => coreTimes())
  const all: Take<T>[] = []
  for (let n = 1; n <= opts.takes; n++) {
    const before = read()
    const result = await run()
    const steal = stealShare(before, read())
    all.push({ result, take: n, steal })
    if (worst(steal) <= opts.limit || opts.stop?.()) break
  }
  const best = all.reduce((a, b) => (worst(b.steal) < worst(a.steal) ? b : a))
  return { best, others: all.filter((t) => t !== best) }
}

/** worst is the highest share over the cores (0 with none). */
export function worst(steal: readonly number[]): number {
  return Math.max(0, ...steal)
}
