/** @module pki: one ECDSA P-256 certificate per run, made with the openssl CLI, shared by every target. */
import { execFileSync } from "node:child_process"
import { X509Certificate } from "node:crypto"
import { readFileSync, writeFileSync } from "node:fs"
import { join } from "node:path"

/** BenchCert is the per-run certificate: separate PEM files, a combined one (HAProxy, hitch) and its fingerprint. */
export interface BenchCert {
  readonly cert: string
  readonly key: string
  readonly combined: string
  readonly fingerprint256: string
}

/** makeCert generates a self-signed ECDSA P-256 certificate for localhost and 127.0.0.1 in dir. */
export function makeCert(dir: string): BenchCert {
  const cert = join(dir, "cert.pem")
  const key = join(dir, "key.pem")
  const combined = join(dir, "combined.pem")
  execFileSync(
    "openssl",
    [
      "req",
      "-x509",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:P-256",
      "-nodes",
      "-keyout",
      key,
      "-out",
      cert,
      "-days",
      "2",
      "-subj",
      "/CN=localhost",
      "-addext",
      "subjectAltName=DNS:localhost,IP:127.0.0.1",
    ],
    { stdio: "pipe" },
  )
  writeFileSync(combined, readFileSync(cert, "utf8") + readFileSync(key, "utf8"))
  const fingerprint256 = new X509Certificate(readFileSync(cert)).fingerprint256
  return { cert, key, combined, fingerprint256 }
}
