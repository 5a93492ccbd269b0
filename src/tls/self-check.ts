/**
 * @module self-check: after a certificate is loaded, reloaded or swapped in, Portcullis handshakes with its own
 * listener for each of the entry's names (loopback, SNI, short timeout) and confirms the leaf served is the one
 * intended, so a shadowed name or a listener behind something else serving is found at once, not by a user.
 */
import { isIP } from "node:net"
import tls from "node:tls"
import { errorMessage } from "../core/errors.ts"
import type { KeyType, LoadedCertificate } from "./certificate.ts"

/** SelfCheckTarget: where the listener is reachable from here. */
export interface SelfCheckTarget {
  host: string
  port: number
  timeoutMs: number
}

/** SelfCheckResult: for one name of one certificate, what was served. */
export interface SelfCheckResult {
  name: string
  /** the SNI sent (a wildcard name is checked through a label under it) */
  servername: string
  expected: string
  /** the served leaf's SHA-256 fingerprint; undefined when the handshake failed */
  served: string | undefined
  servedNames?: string[]
  error?: string
  ok: boolean
}

/**
 * Signature algorithms that make OpenSSL choose the certificate of one key type when a context holds ECDSA and RSA
 * for a name (RFC 8446 §4.2.3): the check then sees the certificate it is about, not its sibling.
 */
const SIGALGS: Partial<Record<KeyType, string>> = {
  ecdsa: "ecdsa_secp256r1_sha256:ecdsa_secp384r1_sha384:ecdsa_secp521r1_sha512",
  rsa: "rsa_pss_rsae_sha256:rsa_pss_rsae_sha384:rsa_pss_rsae_sha512:rsa_pkcs1_sha256:rsa_pkcs1_sha384:rsa_pkcs1_sha512",
}

/** loopbackFor: a wildcard bind address is dialled on loopback of its family. */
export function loopbackFor(host: string): string {
  if (host === "0.0.0.0" || host === "") return "127.0.0.1"
  if (host === "::" || host === "[::]") return "::1"
  return host.replace(/^\[|\]$/g, "")
}

/** checkServedCertificate handshakes once per name of `cert` and compares the served leaf with it. */
export async function checkServedCertificate(
  cert: LoadedCertificate,
  target: SelfCheckTarget,
): Promise<SelfCheckResult[]> {
  const results: SelfCheckResult[] = []
  for (const name of cert.names) {
    const servername = name.startsWith("*.") ? `portcullis-self-check.${name.slice(2)}` : name
    results.push(await handshake(cert, name, servername, target))
  }
  return results
}

function handshake(
  cert: LoadedCertificate,
  name: string,
  servername: string,
  target: SelfCheckTarget,
): Promise<SelfCheckResult> {
  return new Promise((resolve) => {
    const expected = cert.fingerprint256
    let done = false
    const finish = (result: Omit<SelfCheckResult, "name" | "servername" | "expected">) => {
      if (done) return
      done = true
      clearTimeout(timer)
      if (result.served === undefined) socket.destroy()
      else {
        // end(), not destroy(): the client's Finished must reach the listener, or it counts a failed handshake.
        socket.end()
        setTimeout(() => socket.destroy(), 1000).unref()
      }
      resolve({ name, servername, expected, ...result })
    }
    const options: tls.ConnectionOptions = {
      host: target.host,
      port: target.port,
      // An IP address is no SNI name (RFC 6066 §3): the default certificate is what such a client gets.
      ...(isIP(servername) === 0 && { servername }),
      // The check compares fingerprints: trust is not what it tests (a private CA, a self-signed certificate).
      rejectUnauthorized: false,
      // Both, so a listener offering only one of them still completes the handshake (the socket closes at once).
      ALPNProtocols: ["h2", "http/1.1"],
    }
    const sigalgs = SIGALGS[cert.keyType]
    if (sigalgs) options.sigalgs = sigalgs
    const socket = tls.connect(options)
    const timer = setTimeout(
      () => finish({ served: undefined, error: `no handshake within ${target.timeoutMs} ms`, ok: false }),
      target.timeoutMs,
    )
    socket.once("secureConnect", () => {
      const leaf = socket.getPeerX509Certificate()
      finish({
        served: leaf?.fingerprint256,
        servedNames: leaf ? (leaf.subjectAltName ?? leaf.subject).split(", ") : undefined,
        ok: leaf?.fingerprint256 === expected,
      })
    })
    socket.once("error", (err) => finish({ served: undefined, error: errorMessage(err), ok: false }))
  })
}
