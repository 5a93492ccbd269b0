/**
 * Reloads and restarts with cluster.workers: 2 (issue 12, item 2): a reload (POST /reload, SIGHUP) reaches both
 * workers; a config refused by the primary, or by a worker (an address it cannot listen on), leaves every worker on
 * the running one; SIGUSR2 and `portcullis restart` replace both workers.
 */
import assert from "node:assert/strict"
import { execFile } from "node:child_process"
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import net from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { after, before, test } from "node:test"
import { startEchoBackend, type TestBackend } from "../helpers/backends.ts"
import { type CertFiles, createPki, type Pki } from "../helpers/pki.ts"
import { MAIN } from "../helpers/portcullis.ts"
import { clusterYaml, type RunningCluster, startCluster, waitWorkers } from "./workers-harness.ts"

let pki: Pki
let one: TestBackend
let two: TestBackend
let site: CertFiles
let cluster: RunningCluster
const dir = mkdtempSync(join(tmpdir(), "pc-workers-reload-"))
const yaml = (upstream: "one" | "two") =>
  clusterYaml({ ...site, upstream, upstreams: { one: one.port, two: two.port }, workers: 2 })

before(async () => {
  pki = await createPki()
  one = await startEchoBackend("one")
  two = await startEchoBackend("two")
  site = await pki.issue({ names: ["localhost"] })
  cluster = await startCluster(dir, yaml("one"), pki)
  await waitWorkers(cluster, (s) => s.workers.every((w) => w.ready), "both workers ready")
})

after(async () => {
  await cluster?.pc.stop("SIGKILL")
  await one?.close()
  await two?.close()
  await pki?.close()
  rmSync(dir, { recursive: true, force: true })
})

/** throughBoth sends requests until each worker has accepted some since `base`; returns every answer. */
async function throughBoth(base: number[]): Promise<Set<string>> {
  const answers = new Set<string>()
  for (let round = 0; round < 30; round++) {
    for (let i = 0; i < 10; i++) answers.add(await cluster.send())
    const s = await cluster.status()
    if (s.workers.every((w, i) => w.accepted > base[i]!)) return answers
  }
  throw new Error(`not both workers served: ${JSON.stringify((await cluster.status()).workers)}`)
}

const accepted = async () => (await cluster.status()).workers.map((w) => w.accepted)

test("POST /reload reaches both workers", async () => {
  assert.deepEqual([...(await throughBoth(await accepted()))], ["200 hello from one"])
  writeFileSync(cluster.file, yaml("two"))
  const res = await cluster.post("/reload")
  assert.equal(res.status, 200, JSON.stringify(res.body))
  assert.deepEqual([...(await throughBoth(await accepted()))], ["200 hello from two"], "both workers reloaded")
  assert.equal((await cluster.status()).generation, 2)
})

test("a config the primary refuses, and one a worker refuses, leave both workers on the running config", async () => {
  const generation = (await cluster.status()).generation
  writeFileSync(cluster.file, yaml("one").replace(site.certPath, join(dir, "missing.pem")))
  const bad = await cluster.post("/reload")
  assert.equal(bad.status, 422)
  // A second listener on an address taken by another process: the workers cannot listen, so none swaps.
  const taken = net.createServer()
  await new Promise<void>((r) => taken.listen(0, "127.0.0.1", r))
  const port = (taken.address() as net.AddressInfo).port
  const busy = yaml("one").replace(
    "upstreams:",
    `  - name: other
    address: "127.0.0.1:${port}"
    tls: { certificates: [{ cert: ${site.certPath}, key: ${site.keyPath} }] }
    upstream: one
upstreams:`,
  )
  writeFileSync(cluster.file, busy)
  const refused = await cluster.post("/reload")
  taken.close()
  assert.equal(refused.status, 422)
  assert.match(String(refused.body["error"]), /EADDRINUSE/)
  const s = await cluster.status()
  assert.equal(s.generation, generation)
  assert.ok(s.workers.every((w) => w.ready))
  assert.deepEqual([...(await throughBoth(await accepted()))], ["200 hello from two"], "every worker kept it")
})

test("SIGHUP reaches both workers", async () => {
  writeFileSync(cluster.file, yaml("one"))
  const before = (await cluster.status()).generation
  cluster.pc.child.kill("SIGHUP")
  await waitWorkers(cluster, (s) => s.generation === before + 1, "reloaded on SIGHUP")
  assert.deepEqual([...(await throughBoth(await accepted()))], ["200 hello from one"])
})

test("SIGUSR2 and `portcullis restart` replace both workers one by one", async () => {
  const pids = (await cluster.status()).workers.map((w) => w.pid)
  cluster.pc.child.kill("SIGUSR2")
  const after = await waitWorkers(
    cluster,
    (s) => s.workers.every((w, i) => w.ready && w.pid !== pids[i]),
    "both workers replaced on SIGUSR2",
    30_000,
  )
  const out = await new Promise<string>((resolve, reject) =>
    execFile(
      process.execPath,
      [MAIN, "restart", "--admin", `127.0.0.1:${cluster.admin}`],
      { timeout: 60_000 },
      (err, stdout, stderr) => (err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(stdout)),
    ),
  )
  assert.match(out, /restarted/)
  const last = await cluster.status()
  for (const [i, w] of last.workers.entries()) {
    assert.notEqual(w.pid, after.workers[i]!.pid, `worker ${i} replaced by portcullis restart`)
    assert.ok(w.ready)
  }
  assert.equal(await cluster.send(), "200 hello from one")
})
