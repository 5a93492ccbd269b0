/** @module certificate-table: `portcullis certs` as a table a person reads: one certificate a line, aligned columns. */
import type { CertificateEntry } from "./certificates.ts"

/** WARN_DAYS_DEFAULT: `portcullis certs` exits 1 when a certificate has fewer days left than this (see the README). */
export const WARN_DAYS_DEFAULT = 14

const HEADERS = ["LISTENER", "NAMES", "KEY", "ISSUER", "NOT AFTER", "DAYS", "SOURCE", "NEXT RENEWAL", "OCSP"]

/** renderCertificateTable writes the rows under a header; a certificate inside the warning window is marked "!". */
export function renderCertificateTable(rows: readonly CertificateEntry[], warnDays: number, now = Date.now()): string {
  const lines = rows.map((c) => [
    c.listener,
    c.names.join(","),
    c.key_type,
    commonName(c.issuer),
    minute(c.not_after),
    `${c.days_left}${expiring(c, warnDays, now) ? " !" : ""}`,
    c.source_kind.replace("_", "-"),
    c.next_renewal ? minute(c.next_renewal) + (c.renewal_error ? ` (last: ${c.renewal_error})` : "") : "-",
    ocspText(c),
  ])
  const widths = HEADERS.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i]!.length)))
  const format = (cells: string[]) =>
    cells
      .map((cell, i) => (i === cells.length - 1 ? cell : cell.padEnd(widths[i]!)))
      .join("  ")
      .trimEnd()
  return [format(HEADERS), ...lines.map(format)].join("\n")
}

/** expiring: the certificate's not-after falls inside the next `warnDays` days (or has passed). */
export function expiring(c: CertificateEntry, warnDays: number, now = Date.now()): boolean {
  return Date.parse(c.not_after) - now < warnDays * 86_400_000
}

function ocspText(c: CertificateEntry): string {
  const o = c.ocsp
  if (o.status === "none") return "none"
  if (o.status === "failing") {
    return `fetch failing: ${o.last_error ?? "?"}${o.next_refresh ? ` (retry ${minute(o.next_refresh)})` : ""}`
  }
  return `${o.status}${o.next_refresh ? ` (next refresh ${minute(o.next_refresh)})` : ""}`
}

function commonName(issuer: string): string {
  return /(?:^|,)CN=([^,]*)/.exec(issuer)?.[1] ?? issuer
}

/** minute renders an ISO time as "2026-12-01 14:05Z". */
function minute(iso: string): string {
  return `${iso.slice(0, 10)} ${iso.slice(11, 16)}Z`
}
