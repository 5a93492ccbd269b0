/**
 * @module request: the OCSP request for one certificate (RFC 6960 §4.1): its CertID (SHA-1 of the issuer's name and
 * key, and the serial number) in a one-entry OCSPRequest, unsigned and without a nonce (RFC 6960 §4.4.1: a stapled
 * response is shared by every client, so it cannot answer a nonce; RFC 5019 §2.1.1 leaves nonces out).
 */
import { createHash, type X509Certificate } from "node:crypto"
import { children, encode, expect, oid, readTlv, TAG } from "./der.ts"

/** SHA-1, the hash every OCSP responder answers for (RFC 5019 §2.1.1), as its AlgorithmIdentifier. */
const SHA1 = "1.3.14.3.2.26"
const HASHES: Record<string, string> = {
  [SHA1]: "sha1",
  "2.16.840.1.101.3.4.2.1": "sha256",
  "2.16.840.1.101.3.4.2.2": "sha384",
  "2.16.840.1.101.3.4.2.3": "sha512",
}

/** CertId is the parts of a CertID, for comparing with the one a response names. */
export interface CertId {
  hashOid: string
  issuerNameHash: Buffer
  issuerKeyHash: Buffer
  /** the serial number's INTEGER content bytes */
  serial: Buffer
}

/** CertificateParts: what a CertID is made of, read from the leaf and issuer DER. */
interface CertificateParts {
  /** the leaf's issuer Name, as encoded in the leaf */
  issuerName: Buffer
  serial: Buffer
  /** the issuer's subjectPublicKey BIT STRING content without its unused-bits byte */
  issuerKey: Buffer
}

/** ocspUrlOf is the first OCSP responder URL in the certificate's Authority Information Access, if any. */
export function ocspUrlOf(cert: X509Certificate): string | undefined {
  // Node renders AIA as lines like "OCSP - URI:http://ocsp.example/" (one per access description).
  for (const line of (cert.infoAccess ?? "").split("\n")) {
    const m = /^OCSP - URI:(\S+)$/.exec(line.trim())
    if (m && /^https?:\/\//i.test(m[1]!)) return m[1]!
  }
  return undefined
}

/** certIdOf makes the CertID of `leaf` (hash: sha1 unless a response asked for another) from its issuer. */
export function certIdOf(leaf: X509Certificate, issuer: X509Certificate, hashOid = SHA1): CertId {
  const hash = HASHES[hashOid]
  if (!hash) throw new Error(`unsupported CertID hash ${hashOid}`)
  const parts = partsOf(leaf, issuer)
  return {
    hashOid,
    issuerNameHash: createHash(hash).update(parts.issuerName).digest(),
    issuerKeyHash: createHash(hash).update(parts.issuerKey).digest(),
    serial: parts.serial,
  }
}

/** encodeCertId writes a CertID: SEQUENCE { AlgorithmIdentifier, OCTET STRING, OCTET STRING, INTEGER }. */
export function encodeCertId(id: CertId): Buffer {
  return encode(
    TAG.SEQUENCE,
    encode(TAG.SEQUENCE, oid(id.hashOid), encode(TAG.NULL)),
    encode(TAG.OCTET_STRING, id.issuerNameHash),
    encode(TAG.OCTET_STRING, id.issuerKeyHash),
    encode(TAG.INTEGER, id.serial),
  )
}

/**
 * buildOcspRequest is the DER OCSPRequest for one CertID:
 * SEQUENCE { tbsRequest SEQUENCE { requestList SEQUENCE OF Request SEQUENCE { reqCert CertID } } }.
 */
export function buildOcspRequest(id: CertId): Buffer {
  return encode(TAG.SEQUENCE, encode(TAG.SEQUENCE, encode(TAG.SEQUENCE, encode(TAG.SEQUENCE, encodeCertId(id)))))
}

/** partsOf reads the issuer Name and serial from the leaf's TBSCertificate, and the key from the issuer's. */
function partsOf(leaf: X509Certificate, issuer: X509Certificate): CertificateParts {
  const tbs = tbsFields(leaf.raw)
  // TBSCertificate: [0] version (optional), serialNumber, signature, issuer, validity, subject, subjectPublicKeyInfo
  const at = tbs[0]?.tag === 0xa0 ? 1 : 0
  const serial = expect(tbs[at], TAG.INTEGER, "certificate serialNumber").value
  const issuerName = expect(tbs[at + 2], TAG.SEQUENCE, "certificate issuer").raw
  const itbs = tbsFields(issuer.raw)
  const iat = itbs[0]?.tag === 0xa0 ? 1 : 0
  const spki = children(expect(itbs[iat + 5], TAG.SEQUENCE, "issuer subjectPublicKeyInfo").value)
  const bits = expect(spki[1], TAG.BIT_STRING, "issuer subjectPublicKey").value
  return { issuerName, serial, issuerKey: bits.subarray(1) }
}

function tbsFields(certDer: Buffer) {
  const cert = children(expect(readTlv(certDer), TAG.SEQUENCE, "certificate").value)
  return children(expect(cert[0], TAG.SEQUENCE, "tbsCertificate").value)
}
