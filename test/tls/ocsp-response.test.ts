/**
 * The OCSP request builder and response checker (src/tls/ocsp/request.ts, response.ts) against answers from a real
 * `openssl ocsp`: who may sign (the issuer, a delegated responder it certified for OCSP signing, nobody else),
 * which certificate the answer is for, and its validity window.
 */
import assert from "node:assert/strict"
import { X509Certificate } from "node:crypto"
import { after, before, test } from "node:test"
import { fetchOcsp } from "../../src/tls/ocsp/fetch.ts"
import { buildOcspRequest, certIdOf, ocspUrlOf } from "../../src/tls/ocsp/request.ts"
import { checkOcspResponse } from "../../src/tls/ocsp/response.ts"
import { startOcspResponder } from "../helpers/ocsp-responder.ts"
import { type CertFiles, createPki, type Pki } from "../helpers/pki.ts"

let pki: Pki
let intermediate: CertFiles

before(async () => {
  pki = await createPki()
  intermediate = await pki.intermediate()
})
after(() => pki?.close())

const blocks = (f: CertFiles) =>
  (f.cert.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? []).map(
    (b) => new X509Certificate(b),
  )

/** ask fetches the answer for `leaf` (issued by the intermediate) from a responder signing with `signer`. */
async function ask(signer: CertFiles, leafFiles?: CertFiles, validMinutes?: number) {
  const responder = await startOcspResponder(signer, { ca: intermediate, ...(validMinutes && { validMinutes }) })
  try {
    const files = leafFiles ?? (await pki.issue({ names: ["a.test"], issuer: "intermediate", ocspUrl: responder.url }))
    responder.setStatus(files, "good")
    const [leaf, issuer] = blocks(files)
    const url = ocspUrlOf(leaf!) ?? responder.url
    const der = await fetchOcsp(url, buildOcspRequest(certIdOf(leaf!, issuer!)), 5000)
    return { der, leaf: leaf!, issuer: issuer!, files }
  } finally {
    await responder.close()
  }
}

test("ocspUrlOf reads the responder from Authority Information Access; none without it", async () => {
  const withUrl = await pki.issue({ names: ["a.test"], issuer: "intermediate", ocspUrl: "http://127.0.0.1:9/ocsp" })
  const without = await pki.issue({ names: ["b.test"], issuer: "intermediate" })
  assert.equal(ocspUrlOf(blocks(withUrl)[0]!), "http://127.0.0.1:9/ocsp")
  assert.equal(ocspUrlOf(blocks(without)[0]!), undefined)
})

test("an answer signed by the issuer is good, with thisUpdate and a nextUpdate -nmin later", async () => {
  const { der, leaf, issuer } = await ask(intermediate, undefined, 5)
  const answer = checkOcspResponse(der, leaf, issuer)
  assert.equal(answer.status, "good")
  assert.ok(Math.abs(answer.thisUpdate.getTime() - Date.now()) < 60_000)
  assert.equal(answer.nextUpdate!.getTime() - answer.thisUpdate.getTime(), 5 * 60_000)
})

test("an answer signed by a delegated responder with id-kp-OCSPSigning, certified by the issuer, is accepted", async () => {
  const delegated = await pki.issue({
    names: [],
    commonName: "ocsp responder",
    issuer: "intermediate",
    ocspSigning: true,
  })
  const { der, leaf, issuer } = await ask(delegated)
  assert.equal(checkOcspResponse(der, leaf, issuer).status, "good")
})

test("an answer signed by a certificate of the issuer without id-kp-OCSPSigning is refused", async () => {
  const notResponder = await pki.issue({ names: ["not-ocsp.test"], issuer: "intermediate" })
  const { der, leaf, issuer } = await ask(notResponder)
  assert.throws(() => checkOcspResponse(der, leaf, issuer), /not the issuer's nor a responder's it authorised/)
})

test("an answer signed by another CA (the root, for a leaf of the intermediate) is refused", async () => {
  const { der, leaf, issuer } = await ask(pki.ca)
  assert.throws(() => checkOcspResponse(der, leaf, issuer), /not the issuer's nor a responder's it authorised/)
})

test("a delegated responder certified by another CA (the root) is refused, id-kp-OCSPSigning or not", async () => {
  const rootResponder = await pki.issue({ names: [], commonName: "root's responder", issuer: "ca", ocspSigning: true })
  const { der, leaf, issuer } = await ask(rootResponder)
  assert.throws(() => checkOcspResponse(der, leaf, issuer), /not the issuer's nor a responder's it authorised/)
})

test("an answer for another certificate is refused; an expired one too", async () => {
  const { der, leaf, issuer } = await ask(intermediate, undefined, 1)
  const other = blocks(await pki.issue({ names: ["b.test"], issuer: "intermediate" }))[0]!
  assert.throws(() => checkOcspResponse(der, other, issuer), /no answer for this certificate's CertID/)
  assert.equal(checkOcspResponse(der, leaf, issuer).status, "good")
  assert.throws(() => checkOcspResponse(der, leaf, issuer, Date.now() + 2 * 60_000), /expired: nextUpdate/)
})

test("a non-OCSP body and an error status are refused with what was wrong", () => {
  const leaf = blocks(intermediate)[0]!
  assert.throws(() => checkOcspResponse(Buffer.from("<html>"), leaf, leaf), /checking the OCSP response/)
  // OCSPResponse { responseStatus tryLater(3) }
  assert.throws(() => checkOcspResponse(Buffer.from([0x30, 0x03, 0x0a, 0x01, 0x03]), leaf, leaf), /tryLater/)
})
