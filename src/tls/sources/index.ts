/** @module sources: picks the certificate source for a config entry, and loads a listener's entries through them. */

import { type BuildProblem, problemsOf } from "../../config/problems.ts"
import type { CertificateConfig, ListenerTlsConfig } from "../../config/schema.ts"
import type { LoadedCertificate } from "../certificate.ts"
import { type AcmeContext, AcmeSource } from "./acme.ts"
import { FileSource } from "./file.ts"
import { SelfSignedSource } from "./self-signed.ts"
import type { CertificateSource } from "./source.ts"

export type { CertificateSource } from "./source.ts"

/**
 * certificateSource is the one place that reads an entry's kind: `{ cert, key }` is a file, `{ self_signed }` made,
 * `{ acme }` ordered from the CA (through `acme`'s manager when running; read from storage only without one).
 */
export function certificateSource(
  entry: CertificateConfig,
  dataDir: string,
  acme: AcmeContext = {},
): CertificateSource {
  if ("cert" in entry) return new FileSource(entry.cert, entry.key)
  if ("acme" in entry) return new AcmeSource(entry, dataDir, acme)
  return new SelfSignedSource(entry.self_signed, entry.key_type, dataDir)
}

/** LoadedEntries: each entry's certificates (undefined where it failed), and the failures at their config paths. */
export interface LoadedEntries {
  sources: CertificateSource[]
  certificates: (LoadedCertificate[] | undefined)[]
  /** paths relative to the listener's tls section: ["certificates", 1, "cert"] */
  problems: BuildProblem[]
}

/** loadEntries loads every entry of a listener's tls section through its source; one failure does not stop the rest. */
export async function loadEntries(
  config: ListenerTlsConfig,
  dataDir: string,
  sourceFor: (entry: CertificateConfig, dataDir: string) => CertificateSource = certificateSource,
): Promise<LoadedEntries> {
  const sources = config.certificates.map((entry) => sourceFor(entry, dataDir))
  const problems: BuildProblem[] = []
  const certificates: (LoadedCertificate[] | undefined)[] = []
  // One after the other: two self-signed entries for the same names share their files under the data dir.
  for (const [i, source] of sources.entries()) {
    try {
      certificates.push(await source.load())
    } catch (err) {
      certificates.push(undefined)
      problems.push(...problemsOf(err, ["certificates", i]))
    }
  }
  return { sources, certificates, problems }
}
