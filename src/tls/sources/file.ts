/** @module file: the file certificate source: a PEM chain and a PEM private key read from disk at config time. */
import { readFileSync } from "node:fs"
import { errorCode, errorMessage } from "../../core/errors.ts"
import { type LoadedCertificate, loadError, parseCertificate } from "../certificate.ts"

export type { LoadedCertificate } from "../certificate.ts"

/**
 * loadFileCertificate reads a PEM chain (leaf first) and its key, and checks the key matches the leaf.
 * Errors are TlsError PC_TLS_CERT_LOAD: `loading certificate certs/a.pem: reading certs/a.pem: ENOENT`.
 */
export function loadFileCertificate(certPath: string, keyPath: string): LoadedCertificate {
  const chainPem = readText(certPath, certPath)
  const keyPem = readText(certPath, keyPath)
  return parseCertificate(chainPem, keyPem, certPath, `private key ${keyPath}`)
}

function readText(what: string, path: string): string {
  try {
    return readFileSync(path, "utf8")
  } catch (err) {
    const code = errorCode(err)
    throw loadError(what, `reading ${path}: ${code === "UNKNOWN" ? errorMessage(err) : code}`, err)
  }
}
