/**
 * testssl.sh against a Portcullis listener of one TLS profile, judged as ../shared/TESTING-TOOLS.md says: no HIGH or
 * CRITICAL finding (cert_* ids aside: short-lived test certificates trip them), SSLv2/SSLv3/TLS 1.0/TLS 1.1 not
 * offered, no NULL, aNULL, EXPORT, LOW or 3DES/IDEA cipher list offered. testssl's exit code is no verdict.
 */
import { spawn } from "node:child_process"
import { mkdtempSync, readFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { startEchoBackend } from "../helpers/backends.ts"
import { createPki } from "../helpers/pki.ts"
import { startPortcullis } from "../helpers/portcullis.ts"

/** Finding is one entry of testssl's --jsonfile output. */
export interface Finding {
  id: string
  severity: string
  finding: string
}

const OLD_PROTOCOLS = new Set(["SSLv2", "SSLv3", "TLS1", "TLS1_1"])
const WEAK_LISTS = /^cipherlist_(NULL|aNULL|EXPORT|LOW|3DES_IDEA)$/

/** problems lists what fails the judgement, one line per finding. */
export function problems(findings: readonly Finding[]): string[] {
  const out: string[] = []
  for (const f of findings) {
    const line = `${f.id} ${f.severity}: ${f.finding}`
    if ((f.severity === "HIGH" || f.severity === "CRITICAL") && !f.id.startsWith("cert_")) out.push(line)
    else if (OLD_PROTOCOLS.has(f.id) && !/^not offered/.test(f.finding)) out.push(line)
    else if (WEAK_LISTS.test(f.id) && !/^not offered/.test(f.finding)) out.push(line)
  }
  return out
}

/** runTestssl serves one listener with the profile and runs `testssl -p -s -P -U` against it; returns its findings. */
export async function runTestssl(profile: "intermediate" | "modern"): Promise<Finding[]> {
  const backend = await startEchoBackend("echo")
  const pki = await createPki()
  const leaf = await pki.issue({ names: ["localhost"] })
  const pc = await startPortcullis(`listeners:
  - name: web
    address: 127.0.0.1:0
    tls:
      profile: ${profile}
      certificates: [{ cert: ${leaf.certPath}, key: ${leaf.keyPath} }]
    routes: [{ upstream: echo }]
upstreams:
  echo: { backends: ["127.0.0.1:${backend.port}"] }
`)
  const dir = mkdtempSync(join(tmpdir(), "pc-testssl-"))
  const json = join(dir, "out.json")
  try {
    // testssl reads no stdin in batch mode; --warnings off keeps it from asking anything.
    const args = [
      "--quiet",
      "--color",
      "0",
      "--warnings",
      "off",
      "--nodns",
      "none",
      "--ip",
      "127.0.0.1",
      "--add-ca",
      pki.ca.certPath,
      "-p",
      "-s",
      "-P",
      "-U",
      "--jsonfile",
      json,
      `https://localhost:${pc.port()}`,
    ]
    const output = await new Promise<string>((resolve, reject) => {
      const child = spawn("testssl", args, { stdio: ["ignore", "pipe", "pipe"] })
      let text = ""
      child.stdout.on("data", (d: Buffer) => {
        text += d.toString()
      })
      child.stderr.on("data", (d: Buffer) => {
        text += d.toString()
      })
      const timer = setTimeout(() => child.kill(), 290_000)
      child.on("error", reject)
      child.on("exit", () => {
        clearTimeout(timer)
        resolve(text)
      })
    })
    let findings: Finding[]
    try {
      findings = JSON.parse(readFileSync(json, "utf8")) as Finding[]
    } catch (err) {
      throw new Error(`testssl wrote no JSON (${(err as Error).message}); its output:\n${output}`)
    }
    if (!findings.some((f) => f.id === "TLS1_2" || f.id === "TLS1_3")) {
      throw new Error(`testssl found no protocol at all; its output:\n${output}`)
    }
    return findings
  } finally {
    await pc.close()
    await backend.close()
    await pki.close()
  }
}
