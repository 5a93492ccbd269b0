/**
 * RedisCertificateStorage (issue 12, item 4: ACME certificates, account and a distributed lock) against a real
 * redis-server: the CertificateStorage contract (two connections per backing, and another process holding locks,
 * released or SIGKILLed), the FleetStore exposing it, and Redis down: store/load reject naming the key (never the
 * value), lock waits until its signal aborts, and all works again once Redis is back.
 */
import assert from "node:assert/strict"
import { spawn } from "node:child_process"
import { randomBytes } from "node:crypto"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Writable } from "node:stream"
import { after, before, describe, test } from "node:test"
import { pino } from "pino"
import { FleetStore } from "../../src/cluster/shared/fleet-store.ts"
import { RedisCertificateStorage } from "../../src/cluster/shared/redis-certificate-storage.ts"
import { RedisClient } from "../../src/cluster/shared/redis-client.ts"
import { type Logger, silentLogger } from "../../src/core/log.ts"
import { startRedis } from "../helpers/servers.ts"
import { waitUntil } from "../helpers/wait.ts"
import { type Holder, runStorageContract } from "../tls/acme/storage.contract.ts"
import { type RedisProcess, redisOn } from "./harness.ts"

const dir = mkdtempSync(join(tmpdir(), "pc-storage-"))
let redis: RedisProcess
let url: string
const clients: RedisClient[] = []
const cleanups: (() => Promise<void>)[] = []

before(async () => {
  // Win a port with startRedis, then run our own redis-server there, which the test can SIGKILL and start again.
  const first = await startRedis()
  const port = first.port
  await first.close()
  redis = redisOn(port, dir)
  await redis.start()
  url = `redis://127.0.0.1:${port}`
})

after(async () => {
  await Promise.allSettled(cleanups.map((c) => c()))
  for (const c of clients) c.close()
  await redis?.kill()
  rmSync(dir, { recursive: true, force: true })
})

async function storage(prefix: string, log: Logger = silentLogger()): Promise<RedisCertificateStorage> {
  const client = new RedisClient({ url })
  clients.push(client)
  assert.ok(await client.connect(5000), "connected")
  return new RedisCertificateStorage({ client, log, prefix, pollMs: 50 })
}

/** holder runs test/cluster/storage-holder.ts: another process holding a lock under prefix. */
async function holder(prefix: string, name: string, ttlMs: number): Promise<Holder> {
  const child = spawn(
    process.execPath,
    [join(import.meta.dirname, "storage-holder.ts"), url, prefix, name, String(ttlMs)],
    { stdio: ["pipe", "pipe", "inherit"] },
  )
  const exited = new Promise<void>((r) => child.once("exit", () => r()))
  cleanups.push(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL")
    await exited
  })
  let out = ""
  child.stdout.on("data", (d: Buffer) => {
    out += d.toString()
  })
  await waitUntil(() => out.includes("held") || child.exitCode !== null, `the holder process holds ${name}`)
  assert.ok(out.includes("held"), "the holder process got the lock")
  return {
    release: async () => {
      child.stdin.write("release\n")
      await waitUntil(() => out.includes("released"), "the holder released")
    },
    kill: async () => {
      child.kill("SIGKILL")
      await exited
    },
    pause: () => child.kill("SIGSTOP"),
    resume: () => child.kill("SIGCONT"),
  }
}

describe("the CertificateStorage contract", () => {
  runStorageContract({
    name: "RedisCertificateStorage",
    backing: async () => {
      const prefix = `test:${randomBytes(4).toString("hex")}:`
      return {
        storages: [await storage(prefix), await storage(prefix)],
        holder: (name, ttlMs) => holder(prefix, name, ttlMs),
      }
    },
  })
})

test("two storages with other prefixes do not see each other's keys or locks", async () => {
  const a = await storage("test:one:")
  const b = await storage("test:two:")
  await a.store("acme/d/account.json", Buffer.from("a"))
  assert.equal(await b.load("acme/d/account.json"), undefined)
  assert.deepEqual(await b.list("acme"), [])
  const held = await a.lock("issue/x", 2000)
  await (await b.lock("issue/x", 2000, AbortSignal.timeout(1000)))()
  await held()
})

test("release deletes only its own token: a holder whose lock expired leaves the next holder's lock", async () => {
  const a = await storage("test:cad:")
  const b = await storage("test:cad:")
  const raw = clients.at(-1)!
  const stale = await a.lock("issue/y", 10_000)
  await raw.command("DEL", "test:cad:lock:issue/y") // as if it had expired (long TTL: no renewal runs meanwhile)
  const current = await b.lock("issue/y", 10_000, AbortSignal.timeout(1000))
  await stale()
  await assert.rejects(a.lock("issue/y", 10_000, AbortSignal.timeout(300)), "b's lock survived a's release")
  await current()
})

test("renewal extends only its own token: a holder whose lock was taken stops renewing and logs the loss", async () => {
  const lines: string[] = []
  const log = pino(
    { level: "warn" },
    new Writable({
      write(chunk: Buffer, _enc, done) {
        lines.push(chunk.toString())
        done()
      },
    }),
  )
  const a = await storage("test:renew:", log)
  const raw = clients.at(-1)!
  const release = await a.lock("issue/z", 300)
  // Another holder's token, as if a's lock had expired and been taken (renewal runs every 100 ms).
  await raw.command("SET", "test:renew:lock:issue/z", "someone-else", "PX", 5000)
  await waitUntil(() => lines.some((l) => l.includes("lock lost")), "a logged the loss", 3000)
  await new Promise((r) => setTimeout(r, 250))
  assert.equal(String(await raw.command("GET", "test:renew:lock:issue/z")), "someone-else")
  assert.ok(Number(await raw.command("PTTL", "test:renew:lock:issue/z")) > 3000, "a did not shorten the other's TTL")
  await release()
  assert.equal(String(await raw.command("GET", "test:renew:lock:issue/z")), "someone-else", "nor released it")
})

test("FleetStore exposes it as certificateStorage: what one instance stores, another loads", async () => {
  const fleets = [0, 1].map(
    () =>
      new FleetStore({
        store: { redis: url },
        log: silentLogger(),
        version: "test",
        self: () => ({ addresses: {}, status: "serving" }),
      }),
  )
  cleanups.push(async () => {
    await Promise.allSettled(fleets.map((f) => f.close()))
  })
  await Promise.all(fleets.map((f) => f.start()))
  await fleets[0]!.certificateStorage.store("acme/d/certs/fleet.example/cert.pem", Buffer.from("PEM"))
  assert.equal(
    (await fleets[1]!.certificateStorage.load("acme/d/certs/fleet.example/cert.pem"))?.value.toString(),
    "PEM",
  )
  const release = await fleets[0]!.certificateStorage.lock("issue/fleet.example", 2000)
  await assert.rejects(fleets[1]!.certificateStorage.lock("issue/fleet.example", 2000, AbortSignal.timeout(300)))
  await release()
})

test("Redis down: store and load reject naming the key, not the value; lock waits until its signal aborts; back: all works", async () => {
  const lines: string[] = []
  const log = pino(
    { level: "debug" },
    new Writable({
      write(chunk: Buffer, _enc, done) {
        lines.push(chunk.toString())
        done()
      },
    }),
  )
  const s = await storage("test:down:", log)
  const secret = randomBytes(32).toString("hex")
  await s.store("acme/d/certs/down.example/key.pem", Buffer.from(secret), { secret: true })
  await redis.kill()
  await waitUntil(() => clients.every((c) => !c.ready), "the clients saw Redis go")

  const errors: unknown[] = []
  for (const attempt of [
    () => s.store("acme/d/certs/down.example/key.pem", Buffer.from(secret), { secret: true }),
    () => s.load("acme/d/certs/down.example/key.pem"),
    () => s.list("acme/d"),
    () => s.delete("acme/d/certs/down.example/key.pem"),
  ]) {
    await assert.rejects(attempt(), (err: Error & { code?: string }) => {
      errors.push(err)
      assert.equal(err.code, "PC_STORE_UNAVAILABLE")
      assert.match(err.message, /certificate storage: cannot (store|load|list|delete) "acme\/d/)
      return true
    })
  }
  const started = Date.now()
  await assert.rejects(s.lock("issue/down.example", 1000, AbortSignal.timeout(700)), { name: "TimeoutError" })
  assert.ok(Date.now() - started >= 650, "the lock waited for the signal, not failed at once")

  await redis.start()
  await waitUntil(() => clients.every((c) => c.ready), "the clients reconnected", 15_000)
  // An empty Redis came back (no persistence): the storage works again.
  await s.store("acme/d/certs/down.example/key.pem", Buffer.from(secret), { secret: true })
  assert.equal((await s.load("acme/d/certs/down.example/key.pem"))?.value.toString(), secret)
  await (await s.lock("issue/down.example", 1000, AbortSignal.timeout(5000)))()
  for (const text of [...lines, ...errors.map((e) => `${(e as Error).message} ${String((e as Error).cause)}`)]) {
    assert.ok(!text.includes(secret), `the secret value appears in: ${text}`)
  }
})
