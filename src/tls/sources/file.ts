/** @module file: the file certificate source: a PEM chain and a PEM private key read from disk at config time. */
import { readFileSync } from "node:fs"
import { errorCode, errorMessage } from "../../core/errors.ts"
import { type LoadedCertificate, loadError, parseCertificate } from "../certificate.ts"
import type { CertificateSource, CertificateSourceStatus } from "./source.ts"

export type { LoadedCertificate } from "../certificate.ts"

/** FileSource is a `{ cert, key }` entry: one certificate chain and its key, read from disk on every load. */
export class FileSource implements CertificateSource {
  readonly certPath: string
  readonly keyPath: string

  constructor(certPath: string, keyPath: string) {
    this.certPath = certPath
    this.keyPath = keyPath
  }

  async load(): Promise<LoadedCertificate[]> {
    return [loadFileCertificate(this.certPath, this.keyPath)]
  }

  /** status: files are renewed by whoever writes them, so there is no next renewal to show. */
  status(): CertificateSourceStatus {
    return { kind: "file" }
  }
}

/**
 * loadFileCertificate reads a PEM chain (leaf first) and its key, and checks the key matches the leaf.
 * Errors are TlsError PC_TLS_CERT_LOAD: `loading certificate certs/a.pem: reading certs/a.pem: ENOENT`; their
 * configKey says which of the entry's two files is at fault ("cert" or "key").
 */
export function loadFileCertificate(certPath: string, keyPath: string): LoadedCertificate {
  const chainPem = readText(certPath, certPath, "cert")
  const keyPem = readText(certPath, keyPath, "key")
  return parseCertificate(chainPem, keyPem, certPath, `private key ${keyPath}`, { cert: "cert", key: "key" })
}

function readText(what: string, path: string, key: string): string {
  try {
    return readFileSync(path, "utf8")
  } catch (err) {
    const code = errorCode(err)
    throw loadError(what, `reading ${path}: ${code === "UNKNOWN" ? errorMessage(err) : code}`, err, key)
  }
}
