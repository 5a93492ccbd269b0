/**
 * ACME in a fleet (issue 12, item 4): instances with the same cluster.store and the same `{ acme: [name] }` entry
 * share the account, the certificate and the order lock through Redis. Two Portcullis processes started together:
 * exactly one order reaches Pebble, both serve the same certificate (verified against Pebble's root), and Redis holds
 * it. Two in-process instances: when one renews, the other picks the stored renewal up (its poll of the stored
 * cert's modifiedAt) and serves it, without ordering.
 */
import assert from "node:assert/strict"
import { X509Certificate } from "node:crypto"
import { chmodSync, mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { after, before, describe, test } from "node:test"
import { RedisCertificateStorage } from "../../src/cluster/shared/redis-certificate-storage.ts"
import { RedisClient } from "../../src/cluster/shared/redis-client.ts"
import { silentLogger } from "../../src/core/log.ts"
import { storagePrefix } from "../../src/tls/acme/account.ts"
import { storageDir } from "../../src/tls/acme/managed-certificate.ts"
import { type ChildPortcullis, runningPorts, spawnPortcullis, writeTemp } from "../helpers/portcullis.ts"
import { type ExternalServer, startRedis } from "../helpers/servers.ts"
import { captureLog, type Pebble, served, startPebble, until } from "../tls/acme/harness.ts"
import { type Instance, startInstance } from "./harness.ts"

const dir = mkdtempSync(join(tmpdir(), "pc-acme-fleet-"))

describe("ACME with a fleet store (Pebble, redis-server)", () => {
  let pebble: Pebble
  let root: string
  let hook: string
  let redis: ExternalServer
  const cleanups: (() => unknown)[] = []

  before(async () => {
    pebble = await startPebble({ after: (fn: () => unknown) => cleanups.push(fn) })
    root = await pebble.root()
    redis = await startRedis()
    cleanups.push(() => redis.close())
    // dns-01 through challtestsrv: whichever instance orders sets the TXT record, Pebble asks challtestsrv's DNS.
    hook = writeTemp(
      dir,
      "hook.sh",
      `#!/bin/sh
set -e
api=http://127.0.0.1:${pebble.challtestPort}
case "$ACME_ACTION" in
  set) curl -sf -X POST -d "{\\"host\\":\\"$ACME_TXT_NAME\\",\\"value\\":\\"$ACME_TXT_VALUE\\"}" "$api/set-txt" ;;
  clear) curl -sf -X POST -d "{\\"host\\":\\"$ACME_TXT_NAME\\"}" "$api/clear-txt" ;;
esac
`,
    )
    chmodSync(hook, 0o755)
  })

  after(async () => {
    for (const fn of cleanups.reverse()) await fn()
    rmSync(dir, { recursive: true, force: true })
  })

  /** config: one instance's YAML; each has its own data_dir, so only Redis can carry the certificate across. */
  const config = (name: string, dataDir: string, extra: string[] = []) => `
listeners:
  - name: web
    address: 127.0.0.1:0
    tls: { certificates: [{ acme: [${name}] }] }
    upstream: app
upstreams: { app: { backends: ["127.0.0.1:9"] } }
acme:
  directory: ${pebble.directory}
  email: ops@example.test
  ca_bundle: ${pebble.caBundle}
  dns_hook: ${hook}
${extra.map((l) => `  ${l}\n`).join("")}data_dir: ${dataDir}
cluster: { store: { redis: "redis://127.0.0.1:${redis.port}" } }
`

  /** storedCert reads the certificate the fleet stored for `name`, through the same storage class. */
  const storedCert = async (name: string): Promise<X509Certificate | undefined> => {
    const client = new RedisClient({ url: `redis://127.0.0.1:${redis.port}` })
    try {
      assert.ok(await client.connect(2000), "the test reaches redis-server")
      const storage = new RedisCertificateStorage({ client, log: silentLogger() })
      const item = await storage.load(`${storageDir(storagePrefix(pebble.directory), [name], "ecdsa")}/cert.pem`)
      return item && new X509Certificate(item.value)
    } finally {
      client.close()
    }
  }

  /** servedByCa waits until `port` serves a certificate that verifies against Pebble's root (not the stand-in). */
  const servedByCa = async (port: number, name: string): Promise<X509Certificate> => {
    const deadline = Date.now() + 60_000
    for (;;) {
      try {
        return await fingerprint(port, name)
      } catch (err) {
        if (Date.now() > deadline) throw err
        await new Promise((r) => setTimeout(r, 100))
      }
    }
  }

  /** newAccounts counts the newAccount requests Pebble logged so far. */
  const newAccounts = () =>
    pebble
      .output()
      .split("\n")
      .filter((l) => l.includes("POST /sign-me-up")).length

  /** waitStored waits (60 s at most) until Redis holds a certificate for `name`. */
  const waitStored = async (name: string): Promise<X509Certificate> => {
    const deadline = Date.now() + 60_000
    for (;;) {
      const cert = await storedCert(name)
      if (cert) return cert
      if (Date.now() > deadline) throw new Error(`no certificate for ${name} in Redis`)
      await new Promise((r) => setTimeout(r, 100))
    }
  }

  /**
   * everyWorkerServes makes rounds of 12 connections (verified against Pebble's root) until a round where every
   * connection got the certificate with `fingerprint` and every worker accepted some (/status per worker); gives
   * that round's accepts per worker.
   */
  const everyWorkerServes = async (port: number, admin: number, name: string, fingerprint: string) => {
    const accepted = async () => {
      const status = (await (await fetch(`http://127.0.0.1:${admin}/status`)).json()) as {
        workers: { accepted: number }[]
      }
      return status.workers.map((w) => w.accepted)
    }
    let last = ""
    for (let round = 0; round < 60; round++) {
      const before = await accepted()
      const seen = new Set<string>()
      for (let i = 0; i < 12; i++) {
        seen.add(await fingerprintOf(port, name).catch((err: Error) => `error: ${err.message}`))
      }
      const took = (await accepted()).map((n, i) => n - before[i]!)
      last = `${[...seen].join(", ")}; accepted ${took.join(", ")}`
      if (seen.size === 1 && seen.has(fingerprint) && took.every((n) => n > 0)) return took
      await new Promise((r) => setTimeout(r, 100))
    }
    throw new Error(`no round where every worker served ${fingerprint}: ${last}`)
  }

  const fingerprintOf = async (port: number, name: string) => (await fingerprint(port, name)).fingerprint256

  const fingerprint = async (port: number, name: string) => {
    // served() verifies the chain against Pebble's root (tls.connect with ca: root, rejectUnauthorized).
    const seen = await served(port, name, root)
    seen.socket.destroy()
    return new X509Certificate(seen.pem)
  }

  test("two processes started together: one order reaches Pebble, both serve the certificate Redis holds", async () => {
    const name = "fleet.example.test"
    const ordersBefore = pebble.orders()
    const files = [0, 1].map((i) =>
      writeTemp(dir, `portcullis-${i}.yaml`, config(name, mkdtempSync(join(dir, `data-${i}-`)))),
    )
    const children: ChildPortcullis[] = files.map((file) => spawnPortcullis(["--config", file]))
    cleanups.push(() => Promise.allSettled(children.map((c) => c.stop())))
    const ports = await Promise.all(children.map((c) => runningPorts(c, 20_000)))
    const [a, b] = await Promise.all(ports.map((p) => servedByCa(p.ports.web!, name)))
    const issued = children.map((c) => c.output().split('"acme certificate issued"').length - 1)
    assert.deepEqual(issued.sort(), [0, 1], "one process logged an issued certificate")
    assert.equal(pebble.orders() - ordersBefore, 1, "newOrder requests Pebble logged")
    assert.equal(a!.fingerprint256, b!.fingerprint256, "both processes serve the same certificate")
    assert.match(a!.subjectAltName ?? "", /DNS:fleet\.example\.test/)
    const stored = await storedCert(name)
    assert.equal(stored?.fingerprint256, a!.fingerprint256, "Redis holds the certificate served")
    // One account for the fleet: each process registered or loaded the same one (a single newAccount POST).
    const accounts = pebble
      .output()
      .split("\n")
      .filter((l) => l.includes("POST /sign-me-up")).length
    assert.equal(accounts, 1, "newAccount requests Pebble logged")
    await Promise.all(children.map((c) => c.stop()))
  })

  test("two instances of two workers each: one order reaches Pebble, every worker of both serves the certificate Redis holds", async () => {
    const name = "workers.fleet.example.test"
    const ordersBefore = pebble.orders()
    const accountsBefore = newAccounts()
    const files = [0, 1].map((i) =>
      writeTemp(
        dir,
        `portcullis-workers-${i}.yaml`,
        config(name, mkdtempSync(join(dir, `data-workers-${i}-`)))
          .replace("cluster: { store:", "cluster: { workers: 2, store:")
          .concat('admin: { address: "127.0.0.1:0" }\nshutdown_grace: 1s\n'),
      ),
    )
    const children: ChildPortcullis[] = files.map((file) =>
      spawnPortcullis(["--config", file], { env: { PORTCULLIS_LOG_LEVEL: "info" } }),
    )
    cleanups.push(() => Promise.allSettled(children.map((c) => c.stop("SIGKILL"))))
    const running = await Promise.all(children.map((c) => runningPorts(c, 60_000)))
    const stored = await waitStored(name)
    for (const [i, r] of running.entries()) {
      const took = await everyWorkerServes(r.ports.web!, r.admin!, name, stored.fingerprint256)
      assert.ok(
        took.every((n) => n > 0),
        `instance ${i}: every worker served it (${took.join(", ")})`,
      )
    }
    const issued = children.map((c) => c.output().split('"acme certificate issued"').length - 1)
    assert.deepEqual(issued.sort(), [0, 1], "one primary logged an issued certificate")
    assert.equal(pebble.orders() - ordersBefore, 1, "newOrder requests Pebble logged")
    // One account for the fleet: registered by one primary (or already in Redis from the test before), never two.
    assert.ok(newAccounts() - accountsBefore <= 1, `newAccount requests: ${newAccounts() - accountsBefore}`)
    await Promise.all(children.map((c) => c.stop()))
  })

  test("one instance renews; the other picks the stored renewal up from Redis and serves it, without ordering", async () => {
    const name = "renew.example.test"
    const instances: Instance[] = []
    cleanups.push(() => Promise.allSettled(instances.map((i) => i.close())))
    const logA = captureLog()
    const logB = captureLog()
    const { parseConfig } = await import("../../src/config/load.ts")
    const yaml = (i: number, extra: string[]) => {
      const text = config(name, mkdtempSync(join(dir, `renew-${i}-`)), extra)
      parseConfig(text, "check.yaml", dir)
      return text
    }
    const url = `redis://127.0.0.1:${redis.port}`
    // A renews 5 s after issuance (of Pebble's 3600 s); B would only at two thirds of the lifetime, 40 minutes on.
    instances.push(await startInstance(yaml(0, ["renew_before: 3595s"]), url, logA.logger, { certificatePollMs: 200 }))
    await until(() => logA.with("acme certificate issued").length === 1, "A's first certificate", 30_000)
    const first = await fingerprint(instances[0]!.port("web"), name)
    const ordersBefore = pebble.orders()
    instances.push(await startInstance(yaml(1, []), url, logB.logger, { certificatePollMs: 200 }))
    // B found A's certificate in Redis at start (its first generation is built with it).
    assert.equal((await fingerprint(instances[1]!.port("web"), name)).fingerprint256, first.fingerprint256)
    await until(() => logA.with("acme certificate renewed").length >= 1, "A's renewal", 30_000)
    const renewedSerial = logA.with("acme certificate renewed")[0]!["serial"]
    await until(() => logB.with("acme certificate loaded").length >= 1, "B picks the renewal up", 10_000)
    const onB = await fingerprint(instances[1]!.port("web"), name)
    assert.notEqual(onB.fingerprint256, first.fingerprint256, "B serves the renewed certificate")
    const renewed = logA.with("acme certificate renewed").map((l) => l["serial"])
    assert.ok(renewed.includes(onB.serialNumber), `B serves ${onB.serialNumber}, one A renewed (${renewed.join(", ")})`)
    assert.ok(renewedSerial)
    assert.equal(logB.with("acme certificate issued").length + logB.with("acme certificate renewed").length, 0)
    assert.equal(instances[1]!.runtime.acme!.managed([name], "ecdsa").orders, 0, "B placed no order")
    assert.equal(pebble.orders() - ordersBefore, renewed.length, "only A's renewals reached Pebble")
  })
})
