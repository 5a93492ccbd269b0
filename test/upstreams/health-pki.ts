/** A throwaway CA and one server certificate made with the openssl CLI in a temp dir, for the health-check tests. */
import { execFileSync } from "node:child_process"
import { randomBytes } from "node:crypto"
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"

export interface TestPki {
  ca: string
  cert: string
  key: string
  /** A second CA that signed nothing we serve: trusting it alone must fail verification. */
  otherCa: string
  cleanup: () => void
}

function openssl(dir: string, args: string[]): void {
  execFileSync("openssl", args, { cwd: dir, stdio: "pipe" })
}

/** makePki issues a CA and a leaf for `name` (and 127.0.0.1), valid one day. */
export function makePki(name: string): TestPki {
  const dir = mkdtempSync(join(tmpdir(), "pc-health-pki-"))
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
  for (const ca of ["ca", "other"]) {
    openssl(dir, [
      "req",
      "-x509",
      ...ec,
      "-keyout",
      `${ca}.key`,
      "-out",
      `${ca}.pem`,
      "-days",
      "1",
      "-subj",
      `/CN=test ${ca} CA`,
    ])
  }
  openssl(dir, ["req", ...ec, "-keyout", "leaf.key", "-out", "leaf.csr", "-subj", `/CN=${name}`])
  writeFileSync(join(dir, "leaf.ext"), `subjectAltName=DNS:${name},IP:127.0.0.1\nextendedKeyUsage=serverAuth\n`)
  openssl(dir, [
    "x509",
    "-req",
    "-in",
    "leaf.csr",
    "-CA",
    "ca.pem",
    "-CAkey",
    "ca.key",
    "-set_serial",
    `0x${randomBytes(15).toString("hex")}`,
    "-days",
    "1",
    "-extfile",
    "leaf.ext",
    "-out",
    "leaf.pem",
  ])
  const read = (file: string) => readFileSync(join(dir, file), "utf8")
  return {
    ca: read("ca.pem"),
    cert: read("leaf.pem"),
    key: read("leaf.key"),
    otherCa: read("other.pem"),
    cleanup: () => rmSync(dir, { recursive: true, force: true }),
  }
}
