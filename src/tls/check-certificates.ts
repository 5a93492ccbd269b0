/** @module check-certificates: what `portcullis check` and `portcullis certs` say about a config's certificates. */
import tls from "node:tls"
import type { Config, ListenerConfig } from "../config/schema.ts"
import { errorMessage } from "../core/errors.ts"
import { type CertificateStatus, certificateStatus, type LoadedCertificate, normalizeName } from "./certificate.ts"
import { serverTlsOptions } from "./policy.ts"
import { loadFileCertificate } from "./sources/file.ts"
import { loadSelfSigned } from "./sources/self-signed.ts"

const DAY = 86_400_000
/** A certificate with fewer days left than this is a warning. */
export const EXPIRY_WARNING_DAYS = 21

/** CheckReport lists problems a person can act on, and every certificate that loaded. */
export interface CheckReport {
  errors: string[]
  warnings: string[]
  certificates: CertificateStatus[]
}

/**
 * checkCertificates loads every listener's certificates and reports: load failures (missing file, key mismatch),
 * chains out of order, expired or not-yet-valid certificates (errors), certificates expiring within 21 days
 * (warnings), TLS policy errors, and route hosts no certificate covers: an exact host is an error (clients would get
 * a name mismatch), a wildcard host (*.example.com) is a warning, as certificates may cover some of its names.
 */
export async function checkCertificates(config: Config, now: Date = new Date()): Promise<CheckReport> {
  const report: CheckReport = { errors: [], warnings: [], certificates: [] }
  for (const [index, listener] of config.listeners.entries()) {
    if (!listener.tls) continue
    const where = `listeners[${index}] (${listener.name})`
    const loaded: LoadedCertificate[] = []
    let failed = false
    for (const entry of listener.tls.certificates) {
      try {
        const cert =
          "cert" in entry
            ? loadFileCertificate(entry.cert, entry.key)
            : await loadSelfSigned(entry.self_signed, entry.key_type, config.data_dir)
        loaded.push(cert)
        report.certificates.push(certificateStatus(cert))
      } catch (err) {
        failed = true
        report.errors.push(`${where}: ${errorMessage(err)}`)
      }
    }
    for (const cert of loaded) checkOne(cert, `${where}: ${cert.source}`, now, report)
    checkPolicy(listener, where, report)
    if (!failed) checkHosts(listener, loaded, where, report)
  }
  return report
}

function checkOne(cert: LoadedCertificate, where: string, now: Date, report: CheckReport): void {
  const label = cert.names.join(", ") || cert.leaf.subject.replace(/\n/g, ", ")
  for (let i = 0; i + 1 < cert.chain.length; i++) {
    const child = cert.chain[i]!
    const parent = cert.chain[i + 1]!
    if (!child.checkIssued(parent) || !child.verify(parent.publicKey)) {
      report.errors.push(
        `${where}: chain out of order: certificate ${i + 2} (${subjectOf(parent)}) did not issue certificate ${i + 1} ` +
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
      report.errors.push(`${where}: ${what} expired on ${day(notAfter)}`)
    } else if (notBefore.getTime() > now.getTime()) {
      report.errors.push(`${where}: ${what} is not valid until ${day(notBefore)}`)
    } else {
      const daysLeft = Math.floor((notAfter.getTime() - now.getTime()) / DAY)
      if (daysLeft < EXPIRY_WARNING_DAYS) {
        report.warnings.push(`${where}: ${what} expires on ${day(notAfter)} (${daysLeft} days left); renew it`)
      }
    }
  }
}

function checkPolicy(listener: ListenerConfig, where: string, report: CheckReport): void {
  try {
    tls.createSecureContext(serverTlsOptions(listener.tls!, listener.engine))
  } catch (err) {
    report.errors.push(`${where}: tls policy: ${errorMessage(err)}`)
  }
}

function checkHosts(listener: ListenerConfig, certs: LoadedCertificate[], where: string, report: CheckReport): void {
  const names = certs.flatMap((c) => c.names)
  const all = names.join(", ") || "none"
  for (const [r, route] of (listener.routes ?? []).entries()) {
    for (const host of route.hosts ?? []) {
      if (host === "*" || names.some((name) => nameCovers(name, host))) continue
      const message = `${where}: routes[${r}] host ${host} is not covered by any certificate of this listener (names: ${all})`
      if (host.startsWith("*.")) report.warnings.push(`${message}; clients of names no certificate has get a mismatch`)
      else report.errors.push(`${message}; add a certificate for ${host} or fix the host`)
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
