/**
 * @module storage: CertificateStorage, where ACME keeps its account, certificates and locks (Caddy's storage design):
 * files under `data_dir` for one instance, the fleet's Redis for many (src/cluster/shared/), so that exactly one
 * instance places an order for a name and the others load what it stored.
 */

/** StoredItem is one value with the time it was last written (ms since the epoch). */
export interface StoredItem {
  value: Buffer
  modifiedAt: number
}

/**
 * CertificateStorage: keys are slash-separated relative paths such as `acme/<directory-host>/account.key` or
 * `acme/<directory-host>/certs/example.com/cert.pem`; never absolute, never `..`. Values flagged `secret` (private
 * keys) are written readable by the owner only (files 0600) and never logged. No method is called in a handshake.
 */
export interface CertificateStorage {
  load(key: string): Promise<StoredItem | undefined>
  store(key: string, value: Buffer, options?: { secret?: boolean }): Promise<void>
  delete(key: string): Promise<void>
  /** list returns the keys directly or indirectly under prefix (a folder-like key without trailing slash). */
  list(prefix: string): Promise<string[]>
  /**
   * lock waits until this process holds the named lock (fleet-wide for a shared storage), then resolves with the
   * function that releases it. A holder that dies loses the lock after ttlMs; a live holder keeps it by renewing.
   * Rejects only if `signal` aborts.
   */
  lock(name: string, ttlMs: number, signal?: AbortSignal): Promise<() => Promise<void>>
}
