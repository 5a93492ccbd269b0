/**
 * The CertificateStorage contract (src/tls/acme/storage.ts), run against each implementation: the fleet's Redis
 * storage (test/cluster/redis-certificate-storage.test.ts) and the file storage under data_dir.
 */
import assert from "node:assert/strict"
import { randomBytes } from "node:crypto"
import { test } from "node:test"
import type { CertificateStorage } from "../../../src/tls/acme/storage.ts"

/** Holder is another process holding a lock of the storage under test. */
export interface Holder {
  /** release asks the process to release the lock and resolves once it has. */
  release: () => Promise<void>
  /** kill SIGKILLs the process while it holds the lock, and resolves once it exited. */
  kill: () => Promise<void>
  /** pause sends SIGSTOP (a holder that hangs and cannot renew), resume SIGCONT. */
  pause: () => void
  resume: () => void
}

/**
 * Backing is one fresh, empty backing (a key prefix in Redis, a folder) with two storages over it (two
 * connections, two objects), so what one stores the other loads and their locks exclude each other.
 */
export interface Backing {
  storages: [CertificateStorage, CertificateStorage]
  /**
   * holder starts another process on this backing and resolves once it holds `name` with ttlMs, renewing it as a
   * live holder does. Without it the cross-process tests skip, saying so.
   */
  holder?: (name: string, ttlMs: number) => Promise<Holder>
}

/** StorageCase makes backings of one implementation; its storages' lock waiters should poll every 50 ms or so. */
export interface StorageCase {
  name: string
  backing: () => Promise<Backing>
}

/** runStorageContract registers the contract's tests for one implementation. */
export function runStorageContract(c: StorageCase): void {
  test(`${c.name}: store then load gives the same bytes and the write time; a missing key loads undefined`, async () => {
    const [s, other] = (await c.backing()).storages
    const value = randomBytes(300) // not UTF-8: values are bytes
    const before = Date.now()
    await s.store("acme/dir.example/account.json", value)
    const after = Date.now()
    const loaded = await other.load("acme/dir.example/account.json")
    assert.ok(loaded, "the other storage on the same backing loads it")
    assert.deepEqual(loaded.value, value)
    assert.ok(loaded.modifiedAt >= before - 1000 && loaded.modifiedAt <= after + 1000, String(loaded.modifiedAt))
    assert.equal(await s.load("acme/dir.example/missing.json"), undefined)
  })

  test(`${c.name}: store overwrites; a secret value loads like any other`, async () => {
    const [s] = (await c.backing()).storages
    await s.store("acme/d/certs/a.example/key.pem", Buffer.from("one"), { secret: true })
    await s.store("acme/d/certs/a.example/key.pem", Buffer.from("two"), { secret: true })
    assert.equal((await s.load("acme/d/certs/a.example/key.pem"))?.value.toString(), "two")
  })

  test(`${c.name}: list returns the keys under a prefix, directly or indirectly, and nothing beside it`, async () => {
    const [s, other] = (await c.backing()).storages
    const keys = ["acme/d/account.json", "acme/d/certs/a.example/cert.pem", "acme/d/certs/a.example/key.pem"]
    for (const k of [...keys, "acme/d2/account.json", "acme/dx", "other/x"]) await s.store(k, Buffer.from(k))
    assert.deepEqual((await other.list("acme/d")).sort(), keys.sort())
    assert.deepEqual((await other.list("acme/d/certs")).sort(), keys.slice(1).sort())
    assert.deepEqual(await other.list("acme/none"), [])
  })

  test(`${c.name}: delete removes a key from load and list; deleting a missing key is no error`, async () => {
    const [s, other] = (await c.backing()).storages
    await s.store("acme/d/certs/b.example/cert.pem", Buffer.from("x"))
    await s.store("acme/d/certs/b.example/key.pem", Buffer.from("y"))
    await other.delete("acme/d/certs/b.example/cert.pem")
    assert.equal(await s.load("acme/d/certs/b.example/cert.pem"), undefined)
    assert.deepEqual(await s.list("acme/d/certs/b.example"), ["acme/d/certs/b.example/key.pem"])
    await s.delete("acme/d/certs/b.example/cert.pem")
  })

  test(`${c.name}: keys that are not relative paths are refused`, async () => {
    const [s] = (await c.backing()).storages
    for (const key of ["/etc/passwd", "acme/../../x", "..", "acme//x", ""]) {
      await assert.rejects(s.store(key, Buffer.from("x")), `store ${JSON.stringify(key)}`)
      await assert.rejects(s.load(key), `load ${JSON.stringify(key)}`)
    }
  })

  test(`${c.name}: a lock is held by one at a time across two storages; a waiter gets it after release`, async () => {
    const [s, other] = (await c.backing()).storages
    let holders = 0
    let most = 0
    const order: string[] = []
    // Six contenders, three on each storage, each holding for 30 ms.
    await Promise.all(
      Array.from({ length: 6 }, async (_, i) => {
        const release = await (i % 2 === 0 ? s : other).lock("issue/a.example", 2000)
        holders++
        most = Math.max(most, holders)
        order.push(String(i))
        await new Promise((r) => setTimeout(r, 30))
        holders--
        await release()
      }),
    )
    assert.equal(most, 1, "never two holders at once")
    assert.equal(order.length, 6, "every contender got it in turn")
    // Another name is another lock.
    const one = await s.lock("issue/a.example", 2000)
    const two = await other.lock("issue/b.example", 2000)
    await one()
    await two()
  })

  test(`${c.name}: a waiter whose signal aborts rejects and does not take the lock`, async () => {
    const [s, other] = (await c.backing()).storages
    const release = await s.lock("issue/c.example", 2000)
    const started = Date.now()
    await assert.rejects(other.lock("issue/c.example", 2000, AbortSignal.timeout(300)))
    assert.ok(Date.now() - started >= 250, "waited until the signal aborted")
    await release()
    const again = await other.lock("issue/c.example", 2000, AbortSignal.timeout(5000))
    await again()
    await assert.rejects(s.lock("issue/c.example", 2000, AbortSignal.abort()), "an aborted signal rejects at once")
  })

  test(`${c.name}: a holder keeps the lock past ttlMs by renewing it`, async () => {
    const [s, other] = (await c.backing()).storages
    const release = await s.lock("issue/d.example", 600)
    // Three TTLs later the waiter still has not got it.
    await assert.rejects(other.lock("issue/d.example", 600, AbortSignal.timeout(1800)))
    await release()
    await (await other.lock("issue/d.example", 600, AbortSignal.timeout(5000)))()
  })

  test(`${c.name}: a lock held by another process is taken here once that process releases it`, async (t) => {
    const { storages, holder } = await c.backing()
    if (!holder) return t.skip("this case starts no other process")
    const [s] = storages
    const other = await holder("issue/e.example", 1000)
    let got = false
    const waiting = s.lock("issue/e.example", 1000, AbortSignal.timeout(10_000)).then((release) => {
      got = true
      return release
    })
    await new Promise((r) => setTimeout(r, 1500))
    assert.equal(got, false, "not while the other process holds it (past one TTL: it renews)")
    await other.release()
    await (await waiting)()
  })

  test(`${c.name}: a holder that is SIGKILLed loses the lock after ttlMs`, async (t) => {
    const { storages, holder } = await c.backing()
    if (!holder) return t.skip("this case starts no other process")
    const [s] = storages
    const ttlMs = 1000
    const other = await holder("issue/f.example", ttlMs)
    await other.kill()
    const killed = Date.now()
    const release = await s.lock("issue/f.example", ttlMs, AbortSignal.timeout(10_000))
    const waited = Date.now() - killed
    // Renewed every ttl/3 before the kill, so it expires between 2/3 ttl and ttl after it.
    assert.ok(waited >= ttlMs / 2, `took over after ${waited} ms, not before the TTL ran out`)
    assert.ok(waited <= ttlMs + 2000, `took over after ${waited} ms`)
    await release()
  })

  test(`${c.name}: a holder paused past ttlMs loses the lock; its release after resuming leaves the new holder's`, async (t) => {
    const { storages, holder } = await c.backing()
    if (!holder) return t.skip("this case starts no other process")
    const [s, third] = storages
    const other = await holder("issue/g.example", 600)
    other.pause()
    const mine = await s.lock("issue/g.example", 600, AbortSignal.timeout(10_000))
    other.resume()
    await other.release()
    await assert.rejects(
      third.lock("issue/g.example", 600, AbortSignal.timeout(1000)),
      "still held here: the stale holder neither renewed nor released it",
    )
    await mine()
  })
}
