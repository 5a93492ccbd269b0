/**
 * @module response: reads an OCSPResponse (RFC 6960 §4.2) far enough to trust it for stapling: it is successful, a
 * BasicOCSPResponse, answers for our CertID, is signed by the issuer or by a responder certificate the issuer signed
 * for OCSP signing (§4.2.2.2), and is inside its validity (thisUpdate..nextUpdate).
 */
import { type KeyObject, verify, X509Certificate } from "node:crypto"
import { TlsError } from "../../core/errors.ts"
import { children, expect, generalizedTime, oidText, readTlv, TAG, type Tlv } from "./der.ts"
import { type CertId, certIdOf } from "./request.ts"

/** OcspCertStatus is what the responder said about the certificate (RFC 6960 §4.2.1 CertStatus). */
export type OcspCertStatus = "good" | "revoked" | "unknown"

/** OcspAnswer is a checked response: the certificate's status and the window it is valid in. */
export interface OcspAnswer {
  status: OcspCertStatus
  thisUpdate: Date
  /** absent: the responder says newer information is always available (RFC 6960 §4.2.2.1) */
  nextUpdate: Date | undefined
  revokedAt: Date | undefined
  producedAt: Date
}

const BASIC = "1.3.6.1.5.5.7.48.1.1"
const OCSP_SIGNING = "1.3.6.1.5.5.7.3.9"
/** Clock skew allowed on thisUpdate (nginx and OpenSSL's OCSP_check_validity use 5 minutes). */
const SKEW_MS = 5 * 60_000
const RESPONSE_STATUS = [
  "successful",
  "malformedRequest",
  "internalError",
  "tryLater",
  "",
  "sigRequired",
  "unauthorized",
]

/** Signature algorithms by OID: the digest crypto.verify takes (null: the key type implies it). */
const SIGNATURES: Record<string, string | null> = {
  "1.2.840.113549.1.1.5": "sha1",
  "1.2.840.113549.1.1.11": "sha256",
  "1.2.840.113549.1.1.12": "sha384",
  "1.2.840.113549.1.1.13": "sha512",
  "1.2.840.10045.4.1": "sha1",
  "1.2.840.10045.4.3.2": "sha256",
  "1.2.840.10045.4.3.3": "sha384",
  "1.2.840.10045.4.3.4": "sha512",
  "1.3.101.112": null,
  "1.3.101.113": null,
}

/**
 * checkOcspResponse parses `der` and checks it for `leaf` issued by `issuer` at time `now`; throws a TlsError
 * PC_OCSP_RESPONSE naming what is wrong.
 */
export function checkOcspResponse(
  der: Buffer,
  leaf: X509Certificate,
  issuer: X509Certificate,
  now = Date.now(),
): OcspAnswer {
  try {
    return check(der, leaf, issuer, now)
  } catch (err) {
    if (err instanceof TlsError && err.code === "PC_OCSP_RESPONSE") throw err
    throw responseError(err instanceof Error ? err.message : String(err))
  }
}

function check(der: Buffer, leaf: X509Certificate, issuer: X509Certificate, now: number): OcspAnswer {
  const top = children(expect(readTlv(der), TAG.SEQUENCE, "OCSPResponse").value)
  const status = expect(top[0], TAG.ENUMERATED, "responseStatus").value[0] ?? 255
  if (status !== 0) throw responseError(`responder answered ${RESPONSE_STATUS[status] || `status ${status}`}`)
  const bytes = children(expect(top[1], 0xa0, "responseBytes").value)
  const rb = children(expect(bytes[0], TAG.SEQUENCE, "ResponseBytes").value)
  const type = oidText(expect(rb[0], TAG.OID, "responseType").value)
  if (type !== BASIC) throw responseError(`response type ${type} is not id-pkix-ocsp-basic`)
  const basic = children(
    expect(readTlv(expect(rb[1], TAG.OCTET_STRING, "response").value), TAG.SEQUENCE, "BasicOCSPResponse").value,
  )
  const tbs = expect(basic[0], TAG.SEQUENCE, "tbsResponseData")
  const sigAlg = oidText(
    expect(children(expect(basic[1], TAG.SEQUENCE, "signatureAlgorithm").value)[0], TAG.OID, "signatureAlgorithm")
      .value,
  )
  const signature = expect(basic[2], TAG.BIT_STRING, "signature").value.subarray(1)
  const certs =
    basic[3]?.tag === 0xa0
      ? children(expect(children(basic[3].value)[0], TAG.SEQUENCE, "certs").value).map(
          (c) => new X509Certificate(c.raw),
        )
      : []

  const data = children(tbs.value)
  let i = data[0]?.tag === 0xa0 ? 1 : 0
  i++ // responderID: the signer is found by trying the issuer, then each enclosed certificate
  const producedAt = generalizedTime(expect(data[i++], TAG.GENERALIZED_TIME, "producedAt"))
  const responses = children(expect(data[i], TAG.SEQUENCE, "responses").value)

  const signer = findSigner(issuer, certs, sigAlg, tbs.raw, signature, now)
  if (!signer) throw responseError("the signature is not the issuer's nor a responder's it authorised")

  const ours = certIdOf(leaf, issuer)
  for (const single of responses) {
    const fields = children(expect(single, TAG.SEQUENCE, "SingleResponse").value)
    if (!sameCertId(fields[0], leaf, issuer, ours)) continue
    const certStatus = fields[1]!
    let answer: OcspCertStatus
    let revokedAt: Date | undefined
    if (certStatus.tag === 0x80) answer = "good"
    else if (certStatus.tag === 0xa1) {
      answer = "revoked"
      revokedAt = generalizedTime(children(certStatus.value)[0]!)
    } else if (certStatus.tag === 0x82) answer = "unknown"
    else throw responseError(`certStatus tag 0x${certStatus.tag.toString(16)}`)
    const thisUpdate = generalizedTime(expect(fields[2], TAG.GENERALIZED_TIME, "thisUpdate"))
    const next = fields[3]?.tag === 0xa0 ? generalizedTime(children(fields[3].value)[0]!) : undefined
    if (thisUpdate.getTime() > now + SKEW_MS)
      throw responseError(`thisUpdate ${thisUpdate.toISOString()} is in the future`)
    if (next && next.getTime() <= now) throw responseError(`expired: nextUpdate ${next.toISOString()} has passed`)
    return { status: answer, thisUpdate, nextUpdate: next, revokedAt, producedAt }
  }
  throw responseError("no answer for this certificate's CertID")
}

/** sameCertId compares a response's CertID with ours, recomputing ours when the responder used another hash. */
function sameCertId(tlv: Tlv | undefined, leaf: X509Certificate, issuer: X509Certificate, ours: CertId): boolean {
  const parts = children(expect(tlv, TAG.SEQUENCE, "CertID").value)
  const hashOid = oidText(
    expect(children(expect(parts[0], TAG.SEQUENCE, "hashAlgorithm").value)[0], TAG.OID, "hash").value,
  )
  let id = ours
  if (hashOid !== ours.hashOid) {
    try {
      id = certIdOf(leaf, issuer, hashOid)
    } catch {
      return false
    }
  }
  return (
    expect(parts[1], TAG.OCTET_STRING, "issuerNameHash").value.equals(id.issuerNameHash) &&
    expect(parts[2], TAG.OCTET_STRING, "issuerKeyHash").value.equals(id.issuerKeyHash) &&
    expect(parts[3], TAG.INTEGER, "serialNumber").value.equals(id.serial)
  )
}

/**
 * findSigner: the issuer, if its key made the signature; else an enclosed certificate that the issuer signed, that
 * carries id-kp-OCSPSigning, that is valid now, and whose key made it (RFC 6960 §4.2.2.2, a delegated responder).
 */
function findSigner(
  issuer: X509Certificate,
  certs: X509Certificate[],
  sigAlg: string,
  tbs: Buffer,
  signature: Buffer,
  now: number,
): X509Certificate | undefined {
  if (!(sigAlg in SIGNATURES)) throw responseError(`unsupported signature algorithm ${sigAlg}`)
  const digest = SIGNATURES[sigAlg]!
  const verifies = (key: KeyObject) => {
    try {
      return verify(digest, tbs, key, signature)
    } catch {
      return false
    }
  }
  if (verifies(issuer.publicKey)) return issuer
  for (const cert of certs) {
    const delegated =
      cert.checkIssued(issuer) &&
      cert.verify(issuer.publicKey) &&
      (cert.keyUsage ?? []).includes(OCSP_SIGNING) &&
      new Date(cert.validFrom).getTime() <= now &&
      new Date(cert.validTo).getTime() > now
    if (delegated && verifies(cert.publicKey)) return cert
  }
  return undefined
}

function responseError(detail: string): TlsError {
  return new TlsError("PC_OCSP_RESPONSE", `checking the OCSP response: ${detail}`)
}
