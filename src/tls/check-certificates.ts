/** @module check-certificates: what `portcullis check` and `portcullis certs` say about a config's certificates. */
import tls from "node:tls"
import { type ConfigPath, problemsOf } from "../config/problems.ts"
import type { Config, ListenerConfig } from "../config/schema.ts"
import { type CertificateStatus, certificateStatus, type LoadedCertificate, normalizeName } from "./certificate.ts"
import { serverTlsOptions } from "./policy.ts"
import { certificateSource, loadEntries } from "./sources/index.ts"

const DAY = 86_400_000
/** A certificate with fewer days left than this is a warning. */
export const EXPIRY_WARNING_DAYS = 21

/** CheckFinding is one error or warning at the config path it is about (load.ts turns it into file:line:col). */
export interface CheckFinding {
  severity: "error" | "warning"
  path: ConfigPath
  message: string
}

/** CheckReport lists problems a person can act on, and every certificate that loaded. */
export interface CheckReport {
  /** each `listeners[i] (name): message` */
  errors: string[]
  warnings: string[]
  /** the same errors and warnings, each with its config path */
  findings: CheckFinding[]
  certificates: CertificateStatus[]
}

/** Reporter adds one finding of one listener to the report, in both forms. */
type Reporter = (severity: CheckFinding["severity"], path: ConfigPath, message: string) => void

/**
 * checkCertificates loads every listener's certificates and reports: load failures (missing file, key mismatch),
 * chains out of order, expired or not-yet-valid certificates (errors), certificates expiring within 21 days
 * (warnings), TLS policy errors, and route hosts no certificate covers: an exact host is an error (clients would get
 * a name mismatch), a wildcard host (*.example.com) is a warning, as certificates may cover some of its names.
 */
export async function checkCertificates(config: Config, now: Date = new Date()): Promise<CheckReport> {
  const report: CheckReport = { errors: [], warnings: [], findings: [], certificates: [] }
  for (const [index, listener] of config.listeners.entries()) {
    if (!listener.tls) continue
    const where = `listeners[${index}] (${listener.name})`
    const at: ConfigPath = ["listeners", index]
    const add: Reporter = (severity, path, message) => {
      report[severity === "error" ? "errors" : "warnings"].push(`${where}: ${message}`)
      report.findings.push({ severity, path: [...at, ...path], message })
    }
    const entries = await loadEntries(listener.tls, config.data_dir, (entry, dataDir) =>
      certificateSource(entry, dataDir, { config: config.acme }),
    )
    for (const problem of entries.problems) add("error", ["tls", ...problem.path], problem.message)
    const loaded: LoadedCertificate[] = []
    for (const [i, list] of entries.certificates.entries()) {
      for (const cert of list ?? []) {
        loaded.push(cert)
        report.certificates.push(certificateStatus(cert))
        checkOne(cert, ["tls", "certificates", i], now, add)
      }
    }
    checkPolicy(listener, add)
    if (entries.problems.length === 0) checkHosts(listener, loaded, add)
  }
  return report
}

function checkOne(cert: LoadedCertificate, at: ConfigPath, now: Date, add: Reporter): void {
  const error = (message: string) => add("error", at, `${cert.source}: ${message}`)
  if (cert.pending) {
    const meanwhile = cert.pending === "refuse" ? "refused" : "served a self-signed certificate"
    add(
      "warning",
      at,
      `acme: no certificate stored yet for ${cert.names.join(", ")}; it is ordered at start (${meanwhile} meanwhile)`,
    )
    return
  }
  const label = cert.names.join(", ") || cert.leaf.subject.replace(/\n/g, ", ")
  for (let i = 0; i + 1 < cert.chain.length; i++) {
    const child = cert.chain[i]!
    const parent = cert.chain[i + 1]!
    if (!child.checkIssued(parent) || !child.verify(parent.publicKey)) {
      error(
        `chain out of order: certificate ${i + 2} (${subjectOf(parent)}) did not issue certificate ${i + 1} ` +
          `(${subjectOf(child)}); put the leaf first, then each issuer in turn`,
      )
      break
    }
  }
  for (const [i, c] of cert.chain.entries()) {
    const what = i === 0 ? `certificate for ${label}` : `chain certificate ${i + 1} (${subjectOf(c)})`
    const notAfter = new Date(c.validTo)
    const notBefore = new Date(c.validFrom)
    if (notAfter.getTime() <= now.getTime()) {
      error(`${what} expired on ${day(notAfter)}`)
    } else if (notBefore.getTime() > now.getTime()) {
      error(`${what} is not valid until ${day(notBefore)}`)
    } else {
      const daysLeft = Math.floor((notAfter.getTime() - now.getTime()) / DAY)
      if (daysLeft < EXPIRY_WARNING_DAYS) {
        add("warning", at, `${cert.source}: ${what} expires on ${day(notAfter)} (${daysLeft} days left); renew it`)
      }
    }
  }
}

function checkPolicy(listener: ListenerConfig, add: Reporter): void {
  try {
    tls.createSecureContext(serverTlsOptions(listener.tls!, listener.engine))
  } catch (err) {
    for (const p of problemsOf(err, ["tls"])) add("error", p.path, `tls policy: ${p.message}`)
  }
}

function checkHosts(listener: ListenerConfig, certs: LoadedCertificate[], add: Reporter): void {
  const names = certs.flatMap((c) => c.names)
  const all = names.join(", ") || "none"
  for (const [r, route] of (listener.routes ?? []).entries()) {
    for (const [h, host] of (route.hosts ?? []).entries()) {
      if (host === "*" || names.some((name) => nameCovers(name, host))) continue
      const message = `routes[${r}] host ${host} is not covered by any certificate of this listener (names: ${all})`
      const at = ["routes", r, "hosts", h]
      if (host.startsWith("*.")) add("warning", at, `${message}; clients of names no certificate has get a mismatch`)
      else add("error", at, `${message}; add a certificate for ${host} or fix the host`)
    }
  }
}

/** nameCovers says whether a certificate name (maybe "*.example.com") serves a host (maybe a wildcard itself). */
export function nameCovers(certName: string, host: string): boolean {
  const name = normalizeName(certName)
  const wanted = normalizeName(host)
  if (name === wanted) return true
  if (!name.startsWith("*.") || wanted.startsWith("*.")) return false
  const dot = wanted.indexOf(".")
  return dot > 0 && wanted.slice(dot + 1) === name.slice(2)
}

function subjectOf(cert: { subject: string }): string {
  return cert.subject.replace(/\n/g, ", ")
}

function day(date: Date): string {
  return date.toISOString().slice(0, 10)
}
