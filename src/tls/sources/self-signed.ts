/** @module self-signed: a self-signed certificate for development, made once and kept under the data dir. */
import "reflect-metadata"
import { createHash, KeyObject, randomBytes, webcrypto } from "node:crypto"
import { mkdirSync, renameSync, writeFileSync } from "node:fs"
import { isIP } from "node:net"
import { join } from "node:path"
import * as x509 from "@peculiar/x509"
import { errorMessage } from "../../core/errors.ts"
import { type LoadedCertificate, loadError, normalizeName, parseCertificate } from "../certificate.ts"
import { loadFileCertificate } from "./file.ts"
import type { CertificateSource, CertificateSourceStatus } from "./source.ts"

const DAY = 86_400_000
/** A kept certificate is replaced when fewer than this many days are left. */
const RENEW_BEFORE_MS = 7 * DAY
const VALIDITY_MS = 365 * DAY

const crypto = webcrypto as unknown as Crypto
const EC_GEN = { name: "ECDSA", namedCurve: "P-256" }
const EC_SIGN = { name: "ECDSA", hash: "SHA-256" }
const RSA_GEN = {
  name: "RSASSA-PKCS1-v1_5",
  hash: "SHA-256",
  publicExponent: new Uint8Array([1, 0, 1]),
  modulusLength: 2048,
}
const RSA_SIGN = { name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" }

/** SelfSignedSource is a `{ self_signed: [names] }` entry: one certificate made for the names and kept on disk. */
export class SelfSignedSource implements CertificateSource {
  readonly names: readonly string[]
  readonly keyType: "ecdsa" | "rsa"
  readonly dataDir: string

  constructor(names: readonly string[], keyType: "ecdsa" | "rsa", dataDir: string) {
    this.names = names
    this.keyType = keyType
    this.dataDir = dataDir
  }

  async load(): Promise<LoadedCertificate[]> {
    return [await loadSelfSigned(this.names, this.keyType, this.dataDir)]
  }

  /** status: a kept certificate is made anew by the first load with fewer than 7 days left (no timer of its own). */
  status(): CertificateSourceStatus {
    return { kind: "self-signed" }
  }
}

/**
 * loadSelfSigned returns a self-signed certificate for `names` (valid one year; SAN DNS names, plus 127.0.0.1 and ::1
 * when the names include localhost), kept in `<dataDir>/self-signed/<hash>.{pem,key}` and reused while it has more
 * than 7 days left.
 */
export async function loadSelfSigned(
  names: readonly string[],
  keyType: "ecdsa" | "rsa",
  dataDir: string,
): Promise<LoadedCertificate> {
  const wanted = [...new Set(names.map(normalizeName))]
  const hash = createHash("sha256")
    .update(`${keyType}\n${wanted.join("\n")}`)
    .digest("hex")
    .slice(0, 16)
  const dir = join(dataDir, "self-signed")
  const certPath = join(dir, `${hash}.pem`)
  const keyPath = join(dir, `${hash}.key`)
  const source = `self-signed:${certPath}`
  try {
    const kept = loadFileCertificate(certPath, keyPath)
    if (kept.notAfter.getTime() - Date.now() > RENEW_BEFORE_MS && kept.keyType === keyType) return { ...kept, source }
  } catch {
    // missing, unreadable or damaged: make a new one below
  }
  let chainPem: string
  let keyPem: string
  try {
    ;({ chainPem, keyPem } = await makeSelfSigned(wanted, keyType))
  } catch (err) {
    throw loadError(
      source,
      `making a self-signed certificate for ${wanted.join(", ")}: ${errorMessage(err)}`,
      err,
      "self_signed",
    )
  }
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 })
    writeAtomic(keyPath, keyPem, 0o600)
    writeAtomic(certPath, chainPem, 0o644)
  } catch (err) {
    throw loadError(source, `writing ${dir}: ${errorMessage(err)}`, err, "self_signed")
  }
  return parseCertificate(chainPem, keyPem, source)
}

async function makeSelfSigned(
  names: string[],
  keyType: "ecdsa" | "rsa",
): Promise<{ chainPem: string; keyPem: string }> {
  const keys = (await crypto.subtle.generateKey(keyType === "rsa" ? RSA_GEN : EC_GEN, true, [
    "sign",
    "verify",
  ])) as CryptoKeyPair
  const altNames: x509.JsonGeneralName[] = names.map((name) => ({ type: isIP(name) ? "ip" : "dns", value: name }))
  if (names.includes("localhost")) {
    for (const ip of ["127.0.0.1", "::1"]) if (!names.includes(ip)) altNames.push({ type: "ip", value: ip })
  }
  let usages = x509.KeyUsageFlags.digitalSignature
  if (keyType === "rsa") usages |= x509.KeyUsageFlags.keyEncipherment
  const serial = randomBytes(16)
  serial[0] = (serial[0]! & 0x7f) | 0x01
  const now = Date.now()
  const cert = await x509.X509CertificateGenerator.createSelfSigned(
    {
      serialNumber: serial.toString("hex"),
      name: `CN=${names[0]!.replace(/([,+"\\<>;=])/g, "\\$1")}, O=Portcullis self-signed`,
      notBefore: new Date(now - 60_000),
      notAfter: new Date(now + VALIDITY_MS),
      keys,
      signingAlgorithm: keyType === "rsa" ? RSA_SIGN : EC_SIGN,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(usages, true),
        new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
        new x509.SubjectAlternativeNameExtension(altNames),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey, false, crypto),
      ],
    },
    crypto,
  )
  const keyPem = KeyObject.from(keys.privateKey as unknown as webcrypto.CryptoKey).export({
    type: "pkcs8",
    format: "pem",
  })
  return { chainPem: cert.toString("pem") + "\n", keyPem: keyPem as string }
}

/** writeAtomic writes beside the target then renames, so a crash never leaves half a key. */
function writeAtomic(path: string, text: string, mode: number): void {
  const tmp = `${path}.${process.pid}.tmp`
  writeFileSync(tmp, text, { mode })
  renameSync(tmp, path)
}
