/** Test PKI made with the openssl CLI per run: a CA, a "localhost" server certificate and a client certificate (CN "alice"). */
import { execFileSync } from "node:child_process"
import { randomBytes } from "node:crypto"
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"

/** OpensslPki holds PEM text for the CA, server and client certificates, and the temp dir they live in. */
export interface OpensslPki {
  dir: string
  ca: string
  serverCert: string
  serverKey: string
  clientCert: string
  clientKey: string
  close: () => void
}

function openssl(args: string[], cwd: string): void {
  execFileSync("openssl", args, { cwd, stdio: ["ignore", "ignore", "pipe"] })
}

function leaf(dir: string, name: string, subject: string, ext: string): void {
  writeFileSync(join(dir, `${name}.ext`), ext)
  openssl(["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", `${name}.key`], dir)
  openssl(["req", "-new", "-key", `${name}.key`, "-subj", subject, "-out", `${name}.csr`], dir)
  // biome-ignore format: one flag per pair reads better
  openssl(["x509", "-req", "-in", `${name}.csr`, "-CA", "ca.pem", "-CAkey", "ca.key", "-set_serial", `0x${randomBytes(15).toString("hex")}`,
    "-days", "2", "-extfile", `${name}.ext`, "-out", `${name}.pem`], dir)
}

/** makeOpensslPki generates a fresh CA and leaves in a temp dir (about 100 ms); close() removes the dir. */
export function makeOpensslPki(): OpensslPki {
  const dir = mkdtempSync(join(tmpdir(), "pc-pp-pki-"))
  openssl(["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ca.key"], dir)
  // biome-ignore format: one flag per pair reads better
  openssl(["req", "-x509", "-new", "-key", "ca.key", "-subj", "/CN=Portcullis Test CA", "-days", "2", "-out", "ca.pem",
    "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"], dir)
  leaf(dir, "server", "/CN=localhost", "subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\n")
  leaf(dir, "client", "/CN=alice", "extendedKeyUsage=clientAuth\n")
  const read = (f: string) => readFileSync(join(dir, f), "utf8")
  return {
    dir,
    ca: read("ca.pem"),
    serverCert: read("server.pem"),
    serverKey: read("server.key"),
    clientCert: read("client.pem"),
    clientKey: read("client.key"),
    close: () => rmSync(dir, { recursive: true, force: true }),
  }
}
