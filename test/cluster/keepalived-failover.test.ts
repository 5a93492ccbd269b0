/**
 * The HA recipe of docs/high-availability.md, run for real (issue 12, item 5): in namespaces this test makes, two
 * Portcullis processes share session tickets through one redis-server (cluster.store), keepalived on each node holds
 * one virtual IP by VRRP (unicast, on the test's own bridge) with a track_script that curls the node's /readyz, and a
 * client in a third namespace talks TLS to the VIP. SIGKILL the master's Portcullis: the VIP moves to the backup
 * within 5 s, and the client's TLS 1.3 and TLS 1.2 sessions, issued by the dead node, resume on the other one.
 * The dead node's Portcullis is restarted: with nopreempt the VIP stays; then the other node dies and it moves back.
 */
import assert from "node:assert/strict"
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { type TestContext, test } from "node:test"
import { createPki, type Pki } from "../helpers/pki.ts"
import { MAIN } from "../helpers/portcullis.ts"
import { createSegment, type Host, netnsRefusal, type Proc, type Segment, SUBNET } from "./netns.ts"

const VIP = `${SUBNET}.100`
const NAME = "portcullis.test"
const BACKEND_PORT = 8080
const ADMIN_PORT = 9901
/** Failover must complete within this (keepalived: a 1 s track_script interval, fall 2, then a VRRP transition). */
const FAILOVER_BOUND_MS = 5000

/** keepalivedConfig is the recipe's keepalived.conf for one node (docs/high-availability.md shows the same). */
function keepalivedConfig(o: { routerId: string; priority: number; self: string; peer: string }): string {
  return `global_defs {
  router_id ${o.routerId}
  enable_script_security
  script_user root
}

vrrp_script portcullis_ready {
  script "/usr/bin/curl -sf -o /dev/null --max-time 1 http://127.0.0.1:${ADMIN_PORT}/readyz"
  interval 1
  timeout 2
  fall 2
  rise 2
}

vrrp_instance portcullis {
  # Both nodes start as BACKUP with nopreempt: a node that comes back does not take the VIP back (which would
  # reset every connection on the node holding it); the higher priority only decides who starts as master.
  state BACKUP
  nopreempt
  interface eth0
  virtual_router_id 51
  priority ${o.priority}
  advert_int 1
  unicast_src_ip ${o.self}
  unicast_peer {
    ${o.peer}
  }
  virtual_ipaddress {
    ${VIP}/24 dev eth0
  }
  track_script {
    portcullis_ready
  }
}
`
}

function portcullisConfig(cert: string, key: string, redis: string): string {
  return `listeners:
  - name: web
    address: "0.0.0.0:443"
    tls: { certificates: [{ cert: ${cert}, key: ${key} }] }
    upstream: app
upstreams:
  app: { backends: ["127.0.0.1:${BACKEND_PORT}"] }
admin: { address: "127.0.0.1:${ADMIN_PORT}" }
cluster: { store: { redis: "redis://${redis}:6379" } }
`
}

/** waitForAsync polls an outside state (an interface's addresses) every 50 ms until it holds, or fails at the deadline. */
async function waitForAsync(condition: () => Promise<boolean>, message: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms: ${message}`)
    await new Promise((r) => setTimeout(r, 50))
  }
}

interface Reply {
  ok: boolean
  reused?: boolean
  protocol?: string
  body?: string
  attempts: number
  errors: string[]
  ms: number
}

/** ask sends one command to the client process and reads its one-line answer. */
async function ask(client: Proc, command: { version: string; resume: boolean; deadlineMs: number }): Promise<Reply> {
  const line = client.waitFor(/^\{"ok".*\}$/m, command.deadlineMs + 5000)
  client.child.stdin!.write(`${JSON.stringify(command)}\n`)
  return JSON.parse(await line) as Reply
}

/** Node is one of the two Portcullis nodes: its namespace, its Portcullis process (replaced on restart), keepalived. */
interface Node {
  name: string
  host: Host
  portcullis: Proc
  keepalived: Proc
}

test("keepalived + two instances: SIGKILL the master's Portcullis, the VIP moves within 5 s, TLS sessions resume on the other node; back and forth", async (t: TestContext) => {
  const refusal = await netnsRefusal()
  if (refusal) {
    t.skip(refusal)
    return
  }
  const dir = mkdtempSync(join(tmpdir(), "pc-ha-"))
  let pki: Pki | undefined
  let segment: Segment | undefined
  const nodes: Node[] = []
  let finished = false
  // Registered first: whatever fails below, every process, namespace and link goes (createSegment cleans up itself).
  t.after(async () => {
    if (!finished) for (const n of nodes) t.diagnostic(`keepalived ${n.name}:\n${n.keepalived.output()}`)
    await segment?.close()
    await pki?.close()
    rmSync(dir, { recursive: true, force: true })
  })
  pki = await createPki()
  segment = await createSegment(["a", "b", "client", "store"])
  const { a, b, client: clientHost, store } = segment.hosts as Record<string, Host>
  const site = await pki.issue({ names: [NAME] })

  const redis = store!.spawn("redis-server", [
    "--port",
    "6379",
    "--bind",
    store!.address,
    "--save",
    "",
    "--appendonly",
    "no",
    // Redis accepts only loopback clients without a password unless told otherwise (this is the test's own segment).
    "--protected-mode",
    "no",
    "--dir",
    dir,
  ])
  await redis.waitFor(/Ready to accept connections/)

  const file = join(dir, "portcullis.yaml")
  writeFileSync(file, portcullisConfig(site.certPath, site.keyPath, store!.address))
  const startPortcullis = async (host: Host) => {
    const pc = host.spawn(process.execPath, [MAIN, "--config", file])
    await pc.waitFor(/"portcullis is running"/)
    return pc
  }
  for (const [name, host, priority, peer] of [
    ["a", a!, 150, b!.address],
    ["b", b!, 100, a!.address],
  ] as const) {
    const backend = host.spawn(process.execPath, [
      join(import.meta.dirname, "ha/backend.ts"),
      name,
      String(BACKEND_PORT),
    ])
    await backend.waitFor(/listening/)
    // B starts after A is running with the store: it loads the fleet's ticket key before it serves.
    const portcullis = await startPortcullis(host)
    const conf = join(dir, `keepalived-${name}.conf`)
    writeFileSync(conf, keepalivedConfig({ routerId: `pc_${name}`, priority, self: host.address, peer }))
    const keepalived = host.spawn("keepalived", [
      "--dont-fork",
      "--log-console",
      "--log-detail",
      "--vrrp",
      "--use-file",
      conf,
      "--pid",
      join(dir, `keepalived-${name}.pid`),
      "--vrrp_pid",
      join(dir, `keepalived-${name}-vrrp.pid`),
    ])
    nodes.push({ name, host, portcullis, keepalived })
  }
  const [nodeA, nodeB] = nodes as [Node, Node]
  await nodeA.keepalived.waitFor(/Entering MASTER STATE/, 15_000)
  await nodeB.keepalived.waitFor(/Entering BACKUP STATE/, 15_000)
  // keepalived logs the state before it adds the address.
  await waitForAsync(async () => (await a!.addresses()).includes(VIP), "A (the higher priority) holds the VIP")
  assert.ok(!(await b!.addresses()).includes(VIP), "B does not")

  const client = clientHost!.spawn(process.execPath, [
    join(import.meta.dirname, "ha/client.ts"),
    VIP,
    "443",
    NAME,
    pki.ca.certPath,
  ])
  await client.waitFor(/"ready":true/)
  for (const version of ["TLSv1.3", "TLSv1.2"]) {
    const first = await ask(client, { version, resume: false, deadlineMs: 5000 })
    assert.ok(first.ok, JSON.stringify(first))
    assert.equal(first.body, "a", "the master serves")
    assert.equal(first.reused, false)
    const again = await ask(client, { version, resume: true, deadlineMs: 5000 })
    assert.equal(again.reused, true, `${version} resumes on A itself`)
  }

  /**
   * failover SIGKILLs `from`'s Portcullis and waits for the VIP on `to` (the kernel's own notification), while the
   * client reconnects at once; then checks the sessions the client got from `from` resume on `to`.
   */
  const failover = async (from: Node, to: Node) => {
    const monitor = to.host.spawn("ip", ["-4", "monitor", "address", "dev", "eth0"])
    const killedAt = Date.now()
    from.portcullis.child.kill("SIGKILL")
    const reconnected = ask(client, { version: "TLSv1.3", resume: true, deadlineMs: 10_000 })
    reconnected.catch(() => {}) // awaited below; a failure before that must not be an unhandled rejection
    await monitor.waitFor(new RegExp(`inet ${VIP.replaceAll(".", "\\.")}/`), 15_000)
    const failoverMs = Date.now() - killedAt
    monitor.child.kill()
    const first = await reconnected
    t.diagnostic(
      `${from.name} → ${to.name}: VIP moved ${failoverMs} ms after the SIGKILL; the client's first answer after ${first.ms} ms`,
    )
    t.diagnostic(`(${first.attempts} attempts, last errors ${JSON.stringify(first.errors.slice(-2))})`)
    assert.ok(failoverMs <= FAILOVER_BOUND_MS, `the VIP moved in ${failoverMs} ms (bound ${FAILOVER_BOUND_MS} ms)`)
    assert.ok(!(await from.host.addresses()).includes(VIP), `${from.name} gave up the VIP`)
    const tls12 = await ask(client, { version: "TLSv1.2", resume: true, deadlineMs: 5000 })
    for (const [version, resumed] of [
      ["TLSv1.3", first],
      ["TLSv1.2", tls12],
    ] as const) {
      assert.ok(resumed.ok, JSON.stringify(resumed))
      assert.equal(resumed.body, to.name, `${to.name} serves`)
      assert.equal(resumed.protocol, version)
      assert.equal(
        resumed.reused,
        true,
        `the ${version} session issued by ${from.name} resumes on ${to.name} (shared ticket keys)`,
      )
    }
    for (let i = 0; i < 10; i++) {
      const reply = await ask(client, { version: "TLSv1.3", resume: i % 2 === 0, deadlineMs: 0 })
      assert.ok(reply.ok && reply.body === to.name && reply.attempts === 1, JSON.stringify(reply))
    }
  }

  await failover(nodeA, nodeB)

  // A's Portcullis comes back (as systemd's Restart=on-failure does): its keepalived leaves FAULT for BACKUP and,
  // with nopreempt, leaves the VIP where it is: B's connections are not reset.
  await nodeA.keepalived.waitFor(/Entering FAULT STATE/)
  nodeA.portcullis = await startPortcullis(a!)
  await nodeA.keepalived.waitFor(/Entering BACKUP STATE/, 15_000)
  assert.ok((await b!.addresses()).includes(VIP), "B keeps the VIP (nopreempt)")
  const still = await ask(client, { version: "TLSv1.3", resume: true, deadlineMs: 0 })
  assert.ok(still.ok && still.body === "b" && still.reused, JSON.stringify(still))

  // And back: B's Portcullis dies, A (restarted, with the fleet's key loaded from Redis) resumes B's sessions.
  await failover(nodeB, nodeA)
  finished = true
})
