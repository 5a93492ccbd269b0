/** @module file-storage: CertificateStorage as files under data_dir: keys 0600, atomic writes, lock files with a TTL. */
import { randomBytes } from "node:crypto"
import { mkdir, open, readdir, readFile, rename, rm, stat, unlink, writeFile } from "node:fs/promises"
import { dirname, join, sep } from "node:path"
import { setTimeout as sleep } from "node:timers/promises"
import { errorCode, errorMessage, TlsError } from "../../core/errors.ts"
import type { CertificateStorage, StoredItem } from "./storage.ts"

/** How often a waiting lock() looks again, and how often a holder refreshes its lock file. */
const LOCK_POLL_MS = 100

/**
 * FileCertificateStorage keeps each key as a file under `root` (data_dir). Writes go to a temporary file beside the
 * target and are renamed over it, so a crash never leaves half a certificate; secrets are created 0600 in 0700
 * folders. A lock is a file created exclusively (O_EXCL) holding its owner; a holder touches it while it holds it,
 * and a lock file older than the TTL is taken over (its holder died), as certmagic's FileStorage does.
 */
export class FileCertificateStorage implements CertificateStorage {
  readonly root: string

  constructor(root: string) {
    this.root = root
  }

  /** pathOf maps a storage key to its file, refusing absolute keys and `..` (keys are relative, slash-separated). */
  #pathOf(key: string): string {
    const parts = key.split("/")
    if (
      key === "" ||
      key.startsWith("/") ||
      parts.some((p) => p === "" || p === "." || p === ".." || p.includes(sep))
    ) {
      throw new TlsError("PC_ACME_STORAGE_KEY", `storage key ${JSON.stringify(key)} is not a relative path`)
    }
    return join(this.root, ...parts)
  }

  async load(key: string): Promise<StoredItem | undefined> {
    const path = this.#pathOf(key)
    try {
      const [value, info] = await Promise.all([readFile(path), stat(path)])
      return { value, modifiedAt: info.mtimeMs }
    } catch (err) {
      if (errorCode(err) === "ENOENT") return undefined
      throw new TlsError("PC_ACME_STORAGE", `reading ${path}: ${errorMessage(err)}`, { cause: err })
    }
  }

  async store(key: string, value: Buffer, options: { secret?: boolean } = {}): Promise<void> {
    const path = this.#pathOf(key)
    const tmp = `${path}.${process.pid}.${randomBytes(4).toString("hex")}.tmp`
    try {
      await mkdir(dirname(path), { recursive: true, mode: 0o700 })
      await writeFile(tmp, value, { mode: options.secret ? 0o600 : 0o644, flag: "wx" })
      await rename(tmp, path)
    } catch (err) {
      await rm(tmp, { force: true })
      throw new TlsError("PC_ACME_STORAGE", `writing ${path}: ${errorMessage(err)}`, { cause: err })
    }
  }

  async delete(key: string): Promise<void> {
    await rm(this.#pathOf(key), { force: true, recursive: true })
  }

  async list(prefix: string): Promise<string[]> {
    const out: string[] = []
    const walk = async (dir: string, keyPrefix: string): Promise<void> => {
      let entries: import("node:fs").Dirent[]
      try {
        entries = await readdir(dir, { withFileTypes: true })
      } catch (err) {
        if (errorCode(err) === "ENOENT" || errorCode(err) === "ENOTDIR") return
        throw err
      }
      for (const entry of entries) {
        if (entry.name.endsWith(".tmp") || entry.name.endsWith(".lock")) continue
        const key = `${keyPrefix}/${entry.name}`
        if (entry.isDirectory()) await walk(join(dir, entry.name), key)
        else out.push(key)
      }
    }
    await walk(this.#pathOf(prefix), prefix)
    return out.sort()
  }

  async lock(name: string, ttlMs: number, signal?: AbortSignal): Promise<() => Promise<void>> {
    const path = `${this.#pathOf(`locks/${name}`)}.lock`
    await mkdir(dirname(path), { recursive: true, mode: 0o700 })
    const owner = `${process.pid}.${randomBytes(8).toString("hex")}`
    for (;;) {
      signal?.throwIfAborted()
      try {
        const file = await open(path, "wx", 0o600)
        await file.writeFile(owner)
        await file.close()
        break
      } catch (err) {
        if (errorCode(err) !== "EEXIST") throw err
      }
      // Held: take it over once its holder stopped refreshing it for a whole TTL.
      try {
        const info = await stat(path)
        if (Date.now() - info.mtimeMs > ttlMs) {
          await unlink(path)
          continue
        }
      } catch (err) {
        if (errorCode(err) === "ENOENT") continue
        throw err
      }
      await sleep(LOCK_POLL_MS, undefined, signal ? { signal } : undefined)
    }
    // A live holder keeps its lock by touching the file well within the TTL.
    const refresh = setInterval(
      () => {
        void writeFile(path, owner).catch(() => {})
      },
      Math.max(LOCK_POLL_MS, Math.floor(ttlMs / 3)),
    )
    refresh.unref()
    return async () => {
      clearInterval(refresh)
      try {
        if ((await readFile(path, "utf8")) === owner) await unlink(path)
      } catch {
        // already taken over or removed
      }
    }
  }
}
