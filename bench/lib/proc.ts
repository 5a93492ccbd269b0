/** @module proc: spawning pinned processes and reading their CPU time, RSS, affinity and sockets from /proc. */
import { type ChildProcess, execFileSync, spawn } from "node:child_process"
import { createWriteStream, readdirSync, readFileSync } from "node:fs"
import { setTimeout as sleep } from "node:timers/promises"

const CLK_TCK = Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100

/** Spawned is a started child with its log file and an exit promise. */
export interface Spawned {
  readonly child: ChildProcess
  readonly pid: number
  readonly logFile: string
  readonly exited: Promise<number | null>
}

/** spawnLogged starts `command` with stdout and stderr appended to logFile, optionally pinned to one core. */
export function spawnLogged(
  command: string,
  args: string[],
  logFile: string,
  opts: { core?: number | string; env?: NodeJS.ProcessEnv; cwd?: string } = {},
): Spawned {
  const out = createWriteStream(logFile, { flags: "a" })
  const [cmd, argv] =
    opts.core === undefined ? [command, args] : ["taskset", ["-c", String(opts.core), command, ...args]]
  const child = spawn(cmd, argv, { stdio: ["ignore", "pipe", "pipe"], env: opts.env ?? process.env, cwd: opts.cwd })
  child.stdout?.pipe(out)
  child.stderr?.pipe(out)
  const exited = new Promise<number | null>((resolve) => {
    child.on("exit", (code, signal) => resolve(code ?? (signal ? -1 : null)))
    child.on("error", () => resolve(-2))
  })
  if (child.pid === undefined) throw new Error(`spawning ${command}: no pid`)
  return { child, pid: child.pid, logFile, exited }
}

/** signalAll sends `signal` to each pid in turn; a pid already gone is skipped. */
export function signalAll(pids: readonly number[], signal: NodeJS.Signals): void {
  for (const pid of pids) {
    try {
      process.kill(pid, signal)
    } catch {
      // already gone
    }
  }
}

/**
 * stopProcess sends SIGTERM to the child (and its descendants), then SIGKILL after the deadline. SIGCONT follows the
 * SIGTERM: a process the bench stopped for another target's cell (run.ts alone) would not act on it otherwise.
 */
export async function stopProcess(s: Spawned, deadlineMs = 5000): Promise<void> {
  const pids = processTree(s.pid).reverse()
  signalAll(pids, "SIGTERM")
  signalAll(pids, "SIGCONT")
  const done = await Promise.race([s.exited.then(() => true), sleep(deadlineMs).then(() => false)])
  signalAll(
    processTree(s.pid)
      .concat(pids)
      .filter((pid) => !done || isAlive(pid)),
    "SIGKILL",
  )
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

/** statFields parses /proc/PID/stat after the command name (field 3 onwards, index 0 = state). */
function statFields(pid: number): string[] | undefined {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, "utf8")
    return text.slice(text.lastIndexOf(")") + 2).split(" ")
  } catch {
    return undefined
  }
}

/** processTree returns pid and all its living descendants (found by scanning /proc for parent ids). */
export function processTree(root: number): number[] {
  const children = new Map<number, number[]>()
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue
    const f = statFields(Number(name))
    if (!f) continue
    const ppid = Number(f[1])
    const list = children.get(ppid) ?? []
    list.push(Number(name))
    children.set(ppid, list)
  }
  if (!isAlive(root)) return []
  const out: number[] = []
  const queue = [root]
  while (queue.length > 0) {
    const pid = queue.shift()!
    out.push(pid)
    queue.push(...(children.get(pid) ?? []))
  }
  return out
}

/** cpuSeconds is the user+sys CPU time of pid and all its descendants, from /proc/PID/stat (utime, stime). */
export function cpuSeconds(root: number): number {
  let ticks = 0
  for (const pid of processTree(root)) {
    const f = statFields(pid)
    if (f) ticks += Number(f[11]) + Number(f[12])
  }
  return ticks / CLK_TCK
}

/** rssBytes is the summed resident set of pid and all its descendants (VmRSS). */
export function rssBytes(root: number): number {
  let total = 0
  for (const pid of processTree(root)) {
    try {
      const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))
      if (m) total += Number(m[1]) * 1024
    } catch {
      // exited
    }
  }
  return total
}

/** threadAffinities lists "pid/tid: cpus" for every thread of the tree. */
export function threadAffinities(root: number): { pid: number; tid: number; cpus: string }[] {
  const out: { pid: number; tid: number; cpus: string }[] = []
  for (const pid of processTree(root)) {
    let tids: string[] = []
    try {
      tids = readdirSync(`/proc/${pid}/task`)
    } catch {
      continue
    }
    for (const tid of tids) {
      try {
        const m = /Cpus_allowed_list:\s+(\S+)/.exec(readFileSync(`/proc/${pid}/task/${tid}/status`, "utf8"))
        if (m?.[1]) out.push({ pid, tid: Number(tid), cpus: m[1] })
      } catch {
        // thread gone
      }
    }
  }
  return out
}

/**
 * ensurePinned checks (like `taskset -p`) that every thread of the tree may run on `core` only (a core, or a list
 * as Cpus_allowed_list writes it: "0-1" for the two-core rows), re-pins strays with
 * `taskset -a -pc`, and returns what it had to fix; throws when a thread still runs elsewhere.
 */
export function ensurePinned(root: number, core: number | string): string[] {
  const fixed: string[] = []
  for (const t of threadAffinities(root)) {
    if (t.cpus !== String(core)) {
      execFileSync("taskset", ["-a", "-pc", String(core), String(t.pid)], { stdio: "ignore" })
      fixed.push(`pid ${t.pid} tid ${t.tid} was on cpus ${t.cpus}`)
    }
  }
  const still = threadAffinities(root).filter((t) => t.cpus !== String(core))
  if (still.length > 0) throw new Error(`threads not pinned to core ${core}: ${JSON.stringify(still)}`)
  return fixed
}

/** niceOf returns the nice value of pid (field 19 of /proc/PID/stat). */
export function niceOf(pid: number): number {
  return Number(statFields(pid)?.[16] ?? Number.NaN)
}

/** ownCpuSeconds is this process's user+sys time (all threads, including worker threads). */
export function ownCpuSeconds(): number {
  const u = process.cpuUsage()
  return (u.user + u.system) / 1e6
}

/**
 * clientSockets returns the local ports of this machine's established IPv4 TCP connections to 127.0.0.1:port
 * (client side), read from /proc/net/tcp.
 */
export function clientSockets(port: number): Set<number> {
  const out = new Set<number>()
  const text = readFileSync("/proc/net/tcp", "utf8")
  const want = port.toString(16).toUpperCase().padStart(4, "0")
  for (const line of text.split("\n").slice(1)) {
    const f = line.trim().split(/\s+/)
    if (f.length < 4) continue
    const [local, remote, st] = [f[1]!, f[2]!, f[3]!]
    if (st !== "01" || !remote.endsWith(`:${want}`) || remote !== `0100007F:${want}`) continue
    out.add(Number.parseInt(local.split(":")[1]!, 16))
  }
  return out
}

/** openFilesLimit reads this process's soft and hard RLIMIT_NOFILE from /proc/self/limits. */
export function openFilesLimit(): { soft: number; hard: number } {
  const m = /Max open files\s+(\d+|unlimited)\s+(\d+|unlimited)/.exec(readFileSync("/proc/self/limits", "utf8"))
  const n = (s: string | undefined) => (s === "unlimited" || s === undefined ? Number.MAX_SAFE_INTEGER : Number(s))
  return { soft: n(m?.[1]), hard: n(m?.[2]) }
}

/** failureSummary picks the error lines of a log (or its last lines), for a one-line failure reason. */
export function failureSummary(file: string): string {
  let lines: string[]
  try {
    lines = readFileSync(file, "utf8").trim().split("\n")
  } catch {
    return ""
  }
  const errors = lines.filter((l) => /error|ALERT|ERR_|refus|cannot|failed/i.test(l) && !/^\s+at /.test(l))
  return (errors.length > 0 ? errors.slice(0, 3) : lines.slice(-4)).map((l) => l.trim().slice(0, 300)).join(" | ")
}
