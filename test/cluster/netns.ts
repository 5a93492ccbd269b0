/**
 * A test's own network: one namespace per host, each with a veth pair into a bridge that lives in a further
 * "switch" namespace, so nothing is added to the machine's own namespace and nothing leaves the test's segment.
 * Names are unique per run; close() kills every process in the namespaces and deletes them.
 */
import { type ChildProcess, execFile, spawn } from "node:child_process"
import { randomBytes } from "node:crypto"

/** The segment's addresses: 192.0.2.0/24 is TEST-NET-1 (RFC 5737), never routed, here private to the namespaces. */
export const SUBNET = "192.0.2"

/** run runs a command to completion and rejects with its stderr when it fails. */
export function run(command: string, args: string[], timeoutMs = 10_000): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(command, args, { timeout: timeoutMs }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${command} ${args.join(" ")}: ${stderr.trim() || err.message}`))
      else resolve(stdout)
    })
  })
}

/** Proc is a process started in a namespace, with its combined output and a wait for a pattern in it. */
export interface Proc {
  child: ChildProcess
  output: () => string
  /** waitFor resolves with the first match after the previous match's end, or rejects at the deadline or exit. */
  waitFor: (pattern: RegExp, timeoutMs?: number) => Promise<string>
  exited: Promise<void>
}

/** Host is one namespace on the segment, with address SUBNET.octet on its eth0. */
export interface Host {
  ns: string
  address: string
  /** spawn runs `ip netns exec NS command ...args`; iproute2 execs the command, so child.pid is the command's. */
  spawn: (command: string, args: string[]) => Proc
  /** addresses lists the IPv4 addresses on eth0. */
  addresses: () => Promise<string[]>
}

export interface Segment {
  hosts: Record<string, Host>
  close: () => Promise<void>
}

/**
 * netnsRefusal is why this machine cannot make namespaces (not root, no CAP_NET_ADMIN, no iproute2), or undefined
 * when it can: it adds and deletes one namespace.
 */
export async function netnsRefusal(): Promise<string | undefined> {
  const probe = `pc-probe-${process.pid}-${randomBytes(3).toString("hex")}`
  try {
    await run("ip", ["netns", "add", probe])
  } catch (err) {
    return `this machine refuses network namespaces (needs root or CAP_NET_ADMIN): ${(err as Error).message}`
  }
  await run("ip", ["netns", "del", probe]).catch(() => {})
  return undefined
}

/**
 * createSegment makes the switch namespace with bridge br0 and one namespace per host, hosts[i] at SUBNET.(10+i).
 * On any failure what was made so far is removed before the error is thrown.
 */
export async function createSegment(names: string[]): Promise<Segment> {
  const id = `pc-ha-${process.pid}-${randomBytes(3).toString("hex")}`
  const switchNs = `${id}-sw`
  const made: string[] = []
  const procs = new Set<Proc>()
  const close = async () => {
    for (const p of procs) if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill("SIGKILL")
    await Promise.allSettled([...procs].map((p) => p.exited))
    // Anything still inside (keepalived forks its VRRP child) is ours: kill it by pid, else the namespace lives on.
    for (const ns of made) {
      const pids = (await run("ip", ["netns", "pids", ns]).catch(() => "")).split(/\s+/).filter(Boolean)
      for (const pid of pids) {
        try {
          process.kill(Number(pid), "SIGKILL")
        } catch {}
      }
    }
    for (const ns of made.reverse()) await run("ip", ["netns", "del", ns]).catch(() => {})
  }
  const hosts: Record<string, Host> = {}
  try {
    await run("ip", ["netns", "add", switchNs])
    made.push(switchNs)
    await run("ip", ["-n", switchNs, "link", "add", "br0", "type", "bridge"])
    await run("ip", ["-n", switchNs, "link", "set", "br0", "up"])
    for (const [i, name] of names.entries()) {
      const ns = `${id}-${name}`
      await run("ip", ["netns", "add", ns])
      made.push(ns)
      const port = `p${i}`
      await run("ip", ["-n", switchNs, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns])
      await run("ip", ["-n", switchNs, "link", "set", port, "master", "br0", "up"])
      const address = `${SUBNET}.${10 + i}`
      await run("ip", ["-n", ns, "link", "set", "lo", "up"])
      await run("ip", ["-n", ns, "addr", "add", `${address}/24`, "dev", "eth0"])
      await run("ip", ["-n", ns, "link", "set", "eth0", "up"])
      hosts[name] = {
        ns,
        address,
        spawn: (command, args) => {
          const p = spawnIn(ns, command, args)
          procs.add(p)
          return p
        },
        addresses: async () =>
          [...(await run("ip", ["-n", ns, "-4", "-o", "addr", "show", "dev", "eth0"])).matchAll(/inet (\S+)\//g)].map(
            (m) => m[1]!,
          ),
      }
    }
  } catch (err) {
    await close()
    throw err
  }
  return { hosts, close }
}

function spawnIn(ns: string, command: string, args: string[]): Proc {
  const child = spawn("ip", ["netns", "exec", ns, command, ...args], { stdio: ["pipe", "pipe", "pipe"] })
  let text = ""
  let consumed = 0
  const waiters = new Set<() => void>()
  const onData = (d: Buffer) => {
    text += d.toString()
    for (const w of waiters) w()
  }
  child.stdout!.on("data", onData)
  child.stderr!.on("data", onData)
  const exited = new Promise<void>((r) => child.once("exit", () => r()))
  return {
    child,
    output: () => text,
    exited,
    waitFor: (pattern, timeoutMs = 15_000) =>
      new Promise((resolve, reject) => {
        const done = () => {
          waiters.delete(check)
          clearTimeout(timer)
        }
        const check = () => {
          const m = pattern.exec(text.slice(consumed))
          if (!m) return
          consumed += m.index + m[0].length
          done()
          resolve(m[0])
        }
        const timer = setTimeout(() => {
          done()
          reject(new Error(`timed out after ${timeoutMs} ms waiting for ${pattern} from ${command}:\n${text}`))
        }, timeoutMs)
        waiters.add(check)
        void exited.then(() => {
          if (!waiters.has(check)) return
          done()
          reject(new Error(`${command} exited while waiting for ${pattern}:\n${text}`))
        })
        check()
      }),
  }
}
