/** @module source: CertificateSource, the one-method interface every certificate source implements. */
import type { LoadedCertificate } from "../certificate.ts"

/**
 * CertificateSource produces the certificates of one `tls.certificates` entry: a cert/key file pair, a self-signed
 * certificate, later ACME. `load` runs at config time (build, reload, `portcullis check`), never in a handshake; it may
 * read files, generate keys or wait on the network. It resolves with at least one certificate, or rejects with a
 * TlsError whose message names the file or names at fault and never their contents (keys are Secrets).
 *
 * A source whose certificates change while a generation runs (a renewal, a new OCSP staple) may also offer `watch`:
 * it calls `onChange` with the new certificates (outside any handshake), and the CertStore that loaded it swaps them
 * in for this entry with CertStore.replace, without a reload. `watch` returns the function that stops watching;
 * the store calls it when its generation closes.
 */
export interface CertificateSource {
  load(): Promise<LoadedCertificate[]>
  watch?(onChange: (certificates: LoadedCertificate[]) => void): () => void
  /** status says where the certificates come from and what the source will do next, for `portcullis certs`. */
  status?(): CertificateSourceStatus
}

/** CertificateSourceStatus: the kind of source, and for a renewing one (ACME) its next renewal and last failure. */
export interface CertificateSourceStatus {
  kind: "file" | "self-signed" | "acme"
  /** When the source will next try to renew (ms since the epoch), if it renews by itself. */
  nextRenewalAt?: number
  /** The last renewal or issuance failure, without any key material; cleared on success. */
  lastError?: string
}
