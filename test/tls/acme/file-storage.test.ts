/** FileCertificateStorage: keys 0600, atomic writes, list, refused keys, and a lock a dead holder loses after its TTL. */
import assert from "node:assert/strict"
import { mkdtempSync, readdirSync, statSync, utimesSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { describe, test } from "node:test"
import { FileCertificateStorage } from "../../../src/tls/acme/file-storage.ts"

const fresh = () => new FileCertificateStorage(mkdtempSync(join(tmpdir(), "pc-store-")))

describe("FileCertificateStorage", () => {
  test("a secret is written 0600 in 0700 folders, other values 0644, and read back with its time", async () => {
    const storage = fresh()
    await storage.store("acme/ca/account.key", Buffer.from("KEY"), { secret: true })
    await storage.store("acme/ca/certs/a/cert.pem", Buffer.from("CERT"))
    assert.equal(statSync(join(storage.root, "acme/ca/account.key")).mode & 0o777, 0o600)
    assert.equal(statSync(join(storage.root, "acme/ca")).mode & 0o777, 0o700)
    assert.equal(statSync(join(storage.root, "acme/ca/certs/a/cert.pem")).mode & 0o777, 0o644)
    const item = await storage.load("acme/ca/account.key")
    assert.equal(item?.value.toString(), "KEY")
    assert.ok(Math.abs(item!.modifiedAt - Date.now()) < 5_000)
    assert.equal(await storage.load("acme/ca/missing"), undefined)
    assert.deepEqual(await storage.list("acme/ca"), ["acme/ca/account.key", "acme/ca/certs/a/cert.pem"])
    // Rewritten by rename: no temporary file is left beside it.
    await storage.store("acme/ca/account.key", Buffer.from("KEY2"), { secret: true })
    assert.deepEqual(readdirSync(join(storage.root, "acme/ca")).sort(), ["account.key", "certs"])
    await storage.delete("acme/ca/certs")
    assert.deepEqual(await storage.list("acme/ca"), ["acme/ca/account.key"])
  })

  test("keys that are absolute or climb out are refused", async () => {
    const storage = fresh()
    for (const key of ["/etc/passwd", "../x", "a/../../x", "a//b", ""]) {
      await assert.rejects(storage.store(key, Buffer.from("x")), { code: "PC_ACME_STORAGE_KEY" })
    }
  })

  test("a lock is exclusive, released by its holder, and taken over once its holder stopped refreshing it", async () => {
    const storage = fresh()
    const release = await storage.lock("order-a", 60_000)
    const waiting = new AbortController()
    const second = storage.lock("order-a", 60_000, waiting.signal)
    let got = false
    void second.then(
      () => {
        got = true
      },
      () => {},
    )
    await new Promise((r) => setTimeout(r, 250))
    assert.equal(got, false, "held: the second waits")
    await release()
    const releaseSecond = await second
    assert.equal(got, true)
    await releaseSecond()

    // A holder that died: its lock file is older than the TTL.
    await storage.lock("order-b", 60_000)
    const file = join(storage.root, "locks/order-b.lock")
    const old = new Date(Date.now() - 120_000)
    utimesSync(file, old, old)
    const started = Date.now()
    const taken = await storage.lock("order-b", 60_000)
    assert.ok(Date.now() - started < 2_000)
    await taken()

    const aborted = new AbortController()
    const holder = await storage.lock("order-c", 60_000)
    const pending = storage.lock("order-c", 60_000, aborted.signal)
    aborted.abort()
    await assert.rejects(pending)
    await holder()
  })
})
