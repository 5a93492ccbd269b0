/** @module pki: a per-run test PKI (CA, optional intermediate, leaf and client certificates, CRLs) in a temp dir. */
import "reflect-metadata"
import { createPrivateKey, KeyObject, randomBytes, webcrypto } from "node:crypto"
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { isIP } from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import * as x509 from "@peculiar/x509"

x509.cryptoProvider.set(webcrypto as unknown as Crypto)

/** CertFiles is one certificate (PEM text and the files it was written to). */
export interface CertFiles {
  /** the certificate file: the leaf, then any intermediates */
  certPath: string
  keyPath: string
  /** PEM text of certPath (leaf + intermediates) */
  cert: string
  /** PEM text of keyPath (PKCS#8) */
  key: string
  /** a file with the intermediates alone, when issued from the intermediate */
  chainPath?: string
}

/** IssueOptions says what certificate to make. */
export interface IssueOptions {
  /** DNS names and IP addresses for the subjectAltName; the first is the CN unless commonName is given */
  names: string[]
  keyType?: "ecdsa" | "rsa"
  notBefore?: Date
  notAfter?: Date
  /** a client certificate (extKeyUsage clientAuth) instead of a server one */
  client?: boolean
  /** who signs: the root CA (default), the intermediate, or any certificate with its key */
  issuer?: "ca" | "intermediate" | CertFiles
  commonName?: string
  /** an OCSP responder URL for the Authority Information Access extension (RFC 5280 §4.2.2.1) */
  ocspUrl?: string
  /** a delegated OCSP responder's certificate (extKeyUsage id-kp-OCSPSigning, RFC 6960 §4.2.2.2) */
  ocspSigning?: boolean
}

/** Pki is a CA in a fresh temp dir; close() removes the dir. */
export interface Pki {
  dir: string
  ca: CertFiles
  /** issue makes a leaf certificate signed by the chosen issuer. */
  issue(opts: IssueOptions): Promise<CertFiles>
  /** intermediate returns the intermediate CA (made on first use), signed by the root. */
  intermediate(): Promise<CertFiles>
  /** revoke adds the certificate to its issuer's CRL and returns the path of a file with every current CRL. */
  revoke(cert: CertFiles): Promise<string>
  /** crl writes the current CRLs (root, and intermediate if made) to a file and returns its path. */
  crl(): Promise<string>
  close(): Promise<void>
}

const EC = { name: "ECDSA", namedCurve: "P-256" } as const
const EC_SIGN = { name: "ECDSA", hash: "SHA-256" } as const
const RSA = {
  name: "RSASSA-PKCS1-v1_5",
  hash: "SHA-256",
  publicExponent: new Uint8Array([1, 0, 1]),
  modulusLength: 2048,
}
const RSA_SIGN = { name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" } as const
const DAY = 86_400_000

interface Authority {
  cert: x509.X509Certificate
  key: CryptoKey
  files: CertFiles
  /** intermediates between this authority and the root, leaf-most first (PEM) */
  chain: string[]
  revoked: string[]
}

/** randomSerial is 16 random bytes as hex, kept positive (top bit clear) and non-zero-led. */
function randomSerial(): string {
  const bytes = randomBytes(16)
  bytes[0] = (bytes[0]! & 0x7f) | 0x01
  return bytes.toString("hex")
}

function keyPem(key: CryptoKey): string {
  return KeyObject.from(key).export({ type: "pkcs8", format: "pem" }) as string
}

function generate(keyType: "ecdsa" | "rsa"): Promise<CryptoKeyPair> {
  return webcrypto.subtle.generateKey(keyType === "rsa" ? RSA : EC, true, ["sign", "verify"]) as Promise<CryptoKeyPair>
}

function signAlgorithm(key: CryptoKey): typeof EC_SIGN | typeof RSA_SIGN {
  return key.algorithm.name === "ECDSA" ? EC_SIGN : RSA_SIGN
}

/** authorityFrom turns a CertFiles (first PEM block = the certificate) into a signer. */
async function authorityFrom(files: CertFiles): Promise<Authority> {
  const blocks = files.cert.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----\n?/g) ?? []
  const cert = new x509.X509Certificate(blocks[0]!)
  const keyObject = createPrivateKey(files.key)
  const algorithm = keyObject.asymmetricKeyType === "ec" ? EC : { name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" }
  const key = keyObject.toCryptoKey(algorithm, true, ["sign"]) as CryptoKey
  return { cert, key, files, chain: blocks.slice(1), revoked: [] }
}

/** createPki makes a CA (ECDSA P-256, valid a year; leaves 90 days by default) in a fresh mkdtemp dir. */
export async function createPki(): Promise<Pki> {
  const dir = mkdtempSync(join(tmpdir(), "portcullis-pki-"))
  let counter = 0
  const write = (base: string, cert: string, key: string, chain?: string): CertFiles => {
    const stem = join(dir, `${++counter}-${base.replace(/[^A-Za-z0-9.-]/g, "_")}`)
    const files: CertFiles = { certPath: `${stem}.pem`, keyPath: `${stem}.key`, cert, key }
    writeFileSync(files.certPath, cert)
    writeFileSync(files.keyPath, key, { mode: 0o600 })
    if (chain) {
      files.chainPath = `${stem}.chain.pem`
      writeFileSync(files.chainPath, chain)
    }
    return files
  }

  const rootKeys = await generate("ecdsa")
  const now = Date.now()
  const rootCert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: randomSerial(),
    name: `CN=Portcullis Test Root ${randomBytes(4).toString("hex")}`,
    notBefore: new Date(now - DAY),
    notAfter: new Date(now + 365 * DAY),
    keys: rootKeys,
    signingAlgorithm: EC_SIGN,
    extensions: [
      new x509.BasicConstraintsExtension(true, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(rootKeys.publicKey),
    ],
  })
  const root: Authority = {
    cert: rootCert,
    key: rootKeys.privateKey,
    files: write("ca", rootCert.toString("pem") + "\n", keyPem(rootKeys.privateKey)),
    chain: [],
    revoked: [],
  }
  let intermediate: Authority | undefined
  const byFiles = new Map<string, Authority>()

  const getIntermediate = async (): Promise<Authority> => {
    if (intermediate) return intermediate
    const keys = await generate("ecdsa")
    const cert = await x509.X509CertificateGenerator.create({
      serialNumber: randomSerial(),
      subject: `CN=Portcullis Test Intermediate ${randomBytes(4).toString("hex")}`,
      issuer: root.cert.subject,
      notBefore: new Date(now - DAY),
      notAfter: new Date(now + 365 * DAY),
      publicKey: keys.publicKey,
      signingKey: root.key,
      signingAlgorithm: EC_SIGN,
      extensions: [
        new x509.BasicConstraintsExtension(true, 0, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
        await x509.AuthorityKeyIdentifierExtension.create(root.cert),
      ],
    })
    const pem = cert.toString("pem") + "\n"
    intermediate = {
      cert,
      key: keys.privateKey,
      files: write("intermediate", pem, keyPem(keys.privateKey)),
      chain: [pem],
      revoked: [],
    }
    return intermediate
  }

  const authorityFor = async (issuer: IssueOptions["issuer"]): Promise<Authority> => {
    if (issuer === undefined || issuer === "ca") return root
    if (issuer === "intermediate") return getIntermediate()
    let authority = byFiles.get(issuer.certPath)
    if (!authority) {
      authority = await authorityFrom(issuer)
      byFiles.set(issuer.certPath, authority)
    }
    return authority
  }

  const issue = async (opts: IssueOptions): Promise<CertFiles> => {
    if (opts.names.length === 0 && !opts.commonName) throw new Error("pki.issue needs names or a commonName")
    const authority = await authorityFor(opts.issuer)
    const keyType = opts.keyType ?? "ecdsa"
    const keys = await generate(keyType)
    const issued = Date.now()
    const notBefore = opts.notBefore ?? new Date(issued - 60_000)
    const notAfter = opts.notAfter ?? new Date(issued + 90 * DAY)
    const commonName = opts.commonName ?? opts.names[0]!
    let usages = x509.KeyUsageFlags.digitalSignature
    if (keyType === "rsa") usages |= x509.KeyUsageFlags.keyEncipherment
    const extensions: x509.Extension[] = [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(usages, true),
      new x509.ExtendedKeyUsageExtension([
        opts.ocspSigning
          ? x509.ExtendedKeyUsage.ocspSigning
          : opts.client
            ? x509.ExtendedKeyUsage.clientAuth
            : x509.ExtendedKeyUsage.serverAuth,
      ]),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      await x509.AuthorityKeyIdentifierExtension.create(authority.cert),
    ]
    if (opts.ocspUrl) extensions.push(new x509.AuthorityInfoAccessExtension({ ocsp: [opts.ocspUrl] }))
    if (opts.names.length > 0) {
      extensions.push(
        new x509.SubjectAlternativeNameExtension(
          opts.names.map((name): x509.JsonGeneralName => ({ type: isIP(name) ? "ip" : "dns", value: name })),
        ),
      )
    }
    const cert = await x509.X509CertificateGenerator.create({
      serialNumber: randomSerial(),
      subject: `CN=${commonName.replace(/([,+"\\<>;=])/g, "\\$1")}`,
      issuer: authority.cert.subject,
      notBefore,
      notAfter,
      publicKey: keys.publicKey,
      signingKey: authority.key,
      signingAlgorithm: signAlgorithm(authority.key),
      extensions,
    })
    const chain = authority.chain.join("")
    const pem = cert.toString("pem") + "\n" + chain
    return write(opts.client ? `client-${commonName}` : commonName, pem, keyPem(keys.privateKey), chain || undefined)
  }

  const writeCrls = async (): Promise<string> => {
    const authorities = intermediate ? [root, intermediate] : [root]
    const issuedAt = Date.now()
    let text = ""
    for (const authority of authorities) {
      const crl = await x509.X509CrlGenerator.create({
        issuer: authority.cert.subject,
        thisUpdate: new Date(issuedAt - 60_000),
        nextUpdate: new Date(issuedAt + DAY),
        signingKey: authority.key,
        signingAlgorithm: EC_SIGN,
        entries: authority.revoked.map((serialNumber) => ({
          serialNumber,
          revocationDate: new Date(issuedAt - 60_000),
          reason: x509.X509CrlReason.keyCompromise,
        })),
        extensions: [await x509.AuthorityKeyIdentifierExtension.create(authority.cert)],
      })
      // @peculiar/x509 labels it "CRL"; OpenSSL reads only "X509 CRL".
      text += crl.toString("pem").replace(/-----(BEGIN|END) CRL-----/g, "-----$1 X509 CRL-----") + "\n"
    }
    const path = join(dir, `${++counter}-crl.pem`)
    writeFileSync(path, text)
    return path
  }

  return {
    dir,
    ca: root.files,
    issue,
    intermediate: async () => (await getIntermediate()).files,
    revoke: async (files) => {
      const leaf = new x509.X509Certificate(
        files.cert.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/)![0],
      )
      const authority = intermediate && leaf.issuer === intermediate.cert.subject ? intermediate : root
      if (leaf.issuer !== authority.cert.subject) {
        throw new Error(`pki.revoke: ${files.certPath} was not issued by this pki's root or intermediate`)
      }
      authority.revoked.push(leaf.serialNumber)
      return writeCrls()
    },
    crl: writeCrls,
    close: async () => {
      rmSync(dir, { recursive: true, force: true })
    },
  }
}
