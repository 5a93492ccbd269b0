/**
 * @module cache: OCSP responses kept under `<data_dir>/ocsp/`, one DER file per certificate (by its SHA-256
 * fingerprint) and a small JSON of the fetcher's state beside it, so a restart staples at once and `portcullis certs`
 * can say what the running instance last saw.
 */
import { mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs"
import { join } from "node:path"

/** OcspState is what the stapler last knew of one certificate's OCSP status (the JSON beside the DER). */
export interface OcspState {
  url: string
  /** good, revoked, unknown (the responder's word), failing (no answer), pending (not asked yet) */
  status: "good" | "revoked" | "unknown" | "failing" | "pending"
  thisUpdate?: string | undefined
  nextUpdate?: string | undefined
  nextRefreshAt?: string | undefined
  lastError?: string | undefined
  updatedAt: string
}

/** OcspCache reads and writes one data dir's OCSP files; every write is atomic (a temp file, then a rename). */
export class OcspCache {
  readonly dir: string

  constructor(dataDir: string) {
    this.dir = join(dataDir, "ocsp")
  }

  /** keyOf is the file stem of a certificate: its SHA-256 fingerprint in hex, without colons. */
  static keyOf(fingerprint256: string): string {
    return fingerprint256.replace(/:/g, "").toLowerCase()
  }

  readResponse(key: string): Buffer | undefined {
    try {
      return readFileSync(join(this.dir, `${key}.der`))
    } catch {
      return undefined
    }
  }

  readState(key: string): OcspState | undefined {
    try {
      return JSON.parse(readFileSync(join(this.dir, `${key}.json`), "utf8")) as OcspState
    } catch {
      return undefined
    }
  }

  writeResponse(key: string, der: Buffer): void {
    this.#write(`${key}.der`, der)
  }

  writeState(key: string, state: OcspState): void {
    this.#write(`${key}.json`, `${JSON.stringify(state)}\n`)
  }

  #write(name: string, data: Buffer | string): void {
    mkdirSync(this.dir, { recursive: true, mode: 0o700 })
    const path = join(this.dir, name)
    const tmp = `${path}.${process.pid}.tmp`
    writeFileSync(tmp, data, { mode: 0o644 })
    renameSync(tmp, path)
  }
}
