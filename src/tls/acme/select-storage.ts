/** @module select-storage: the one place that picks where ACME keeps its account, certificates and locks. */
import { FileCertificateStorage } from "./file-storage.ts"
import type { CertificateStorage } from "./storage.ts"

/**
 * selectCertificateStorage: the fleet's shared storage when the runtime has one (cluster.store: a Redis storage
 * implementing the same interface, so one instance orders and the others load what it stored), else files under
 * data_dir.
 */
export function selectCertificateStorage(dataDir: string, shared?: CertificateStorage): CertificateStorage {
  return shared ?? new FileCertificateStorage(dataDir)
}
