/**
 * @module ocsp-responder: a real OCSP responder for tests: a loopback HTTP listener that runs `openssl ocsp` on each
 * POSTed request against an index.txt (OpenSSL's `ca` database format), signed by the issuing CA. `openssl ocsp -port`
 * binds every address in OpenSSL 3.0, so the listener is ours and openssl answers one request per run.
 */
import { execFile } from "node:child_process"
import { X509Certificate } from "node:crypto"
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import http from "node:http"
import type net from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import type { CertFiles } from "./pki.ts"

/** ResponderMode: answer with openssl, or accept the connection and never answer (a hung responder). */
export type ResponderMode = "answer" | "hang"

export interface OcspResponder {
  url: string
  port: number
  /** POSTs received (answered or not) */
  readonly requests: number
  /** the times (Date.now()) each POST arrived */
  readonly times: number[]
  mode: ResponderMode
  /** setStatus marks a certificate good or revoked in the index (every entry is written again). */
  setStatus(cert: CertFiles, status: "good" | "revoked"): void
  close(): Promise<void>
}

/** yymmddhhmmssZ is the index.txt time format. */
function indexTime(date: Date): string {
  return `${date.toISOString().slice(2, 19).replace(/[-T:]/g, "")}Z`
}

/**
 * startOcspResponder answers for certificates issued by `signer` (its cert and key sign the responses); each answer
 * is valid `validMinutes` (openssl ocsp -nmin), so a test can see a refresh at half of it. With `ca`, `signer` is a
 * delegated responder for that CA.
 */
export async function startOcspResponder(
  signer: CertFiles,
  options: { validMinutes?: number; mode?: ResponderMode; ca?: CertFiles } = {},
): Promise<OcspResponder> {
  const dir = mkdtempSync(join(tmpdir(), "pc-ocsp-"))
  const index = join(dir, "index.txt")
  const entries = new Map<string, string>()
  const writeIndex = () => writeFileSync(index, [...entries.values()].map((l) => `${l}\n`).join(""))
  writeIndex()
  writeFileSync(`${index}.attr`, "unique_subject = no\n")
  const signerPem = join(dir, "signer.pem")
  // The first block of the signer's file is its certificate (the rest is its chain).
  writeFileSync(signerPem, signer.cert.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----\n?/)![0])
  // -CA is the issuer of the certificates asked about: the signer itself unless a delegated responder signs.
  const caPem = join(dir, "ca.pem")
  writeFileSync(
    caPem,
    (options.ca ?? signer).cert.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----\n?/)![0],
  )
  const times: number[] = []
  let counter = 0
  const hung = new Set<net.Socket>()
  const server = http.createServer((req, res) => {
    times.push(Date.now())
    if (responder.mode === "hang") {
      hung.add(req.socket)
      req.socket.once("close", () => hung.delete(req.socket))
      req.resume()
      return
    }
    const chunks: Buffer[] = []
    req.on("data", (c: Buffer) => chunks.push(c))
    req.on("end", () => {
      const n = ++counter
      const reqPath = join(dir, `req-${n}.der`)
      const respPath = join(dir, `resp-${n}.der`)
      writeFileSync(reqPath, Buffer.concat(chunks))
      const args = ["ocsp", "-index", index, "-rsigner", signerPem, "-rkey", signer.keyPath, "-CA", caPem]
      args.push("-reqin", reqPath, "-respout", respPath, "-nmin", String(options.validMinutes ?? 60))
      execFile("openssl", args, (err) => {
        if (err) {
          res.writeHead(500).end()
          return
        }
        res.writeHead(200, { "content-type": "application/ocsp-response" }).end(readFileSync(respPath))
      })
    })
  })
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r))
  const port = (server.address() as net.AddressInfo).port
  const responder: OcspResponder = {
    url: `http://127.0.0.1:${port}/`,
    port,
    get requests() {
      return times.length
    },
    times,
    mode: options.mode ?? "answer",
    setStatus(cert, status) {
      const leaf = new X509Certificate(
        cert.cert.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/)![0],
      )
      const expiry = indexTime(new Date(leaf.validTo))
      const subject = `/${leaf.subject.split("\n").join("/")}`
      const revoked = status === "revoked" ? indexTime(new Date(Date.now() - 60_000)) : ""
      entries.set(
        leaf.serialNumber,
        `${status === "revoked" ? "R" : "V"}\t${expiry}\t${revoked}\t${leaf.serialNumber}\tunknown\t${subject}`,
      )
      writeIndex()
    },
    close: async () => {
      for (const s of hung) s.destroy()
      server.closeAllConnections()
      await new Promise<void>((r) => server.close(() => r()))
      rmSync(dir, { recursive: true, force: true })
    },
  }
  return responder
}
