/** The CertificateSource contract for the file and self-signed sources, and the factory that picks between them. */
import assert from "node:assert/strict"
import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { after, before, test } from "node:test"
import { FileSource } from "../../src/tls/sources/file.ts"
import { certificateSource } from "../../src/tls/sources/index.ts"
import { SelfSignedSource } from "../../src/tls/sources/self-signed.ts"
import { createPki, type Pki } from "../helpers/pki.ts"
import { runSourceContract } from "./sources.contract.ts"

let pki: Pki
before(async () => {
  pki = await createPki()
})
after(() => pki?.close())

const SECRET = "c2VjcmV0IGtleSBtYXRlcmlhbCBkbyBub3QgcHJpbnQ"

runSourceContract({
  name: "file",
  async good() {
    const files = await pki.issue({ names: ["www.example.com", "api.example.com"] })
    return { source: new FileSource(files.certPath, files.keyPath), names: ["www.example.com", "api.example.com"] }
  },
  async failing() {
    const files = await pki.issue({ names: ["www.example.com"] })
    const other = await pki.issue({ names: ["www.example.com"] })
    const badKey = join(pki.dir, "bad.key")
    writeFileSync(badKey, `-----BEGIN PRIVATE KEY-----\n${SECRET}\n-----END PRIVATE KEY-----\n`)
    const badCert = join(pki.dir, "bad.pem")
    writeFileSync(badCert, `-----BEGIN CERTIFICATE-----\n${SECRET}\n-----END CERTIFICATE-----\n`)
    const missing = join(pki.dir, "missing.pem")
    return [
      { what: "a missing cert file", source: new FileSource(missing, files.keyPath), names: missing, secret: SECRET },
      { what: "a damaged key file", source: new FileSource(files.certPath, badKey), names: badKey, secret: SECRET },
      { what: "a damaged cert file", source: new FileSource(badCert, files.keyPath), names: badCert, secret: SECRET },
      {
        what: "a key of another certificate",
        source: new FileSource(files.certPath, other.keyPath),
        names: other.keyPath,
        secret: other.key.split("\n")[1]!,
      },
    ]
  },
})

runSourceContract({
  name: "self-signed",
  async good() {
    const dataDir = mkdtempSync(join(tmpdir(), "pc-sources-"))
    return {
      source: new SelfSignedSource(["dev.test", "*.dev.test"], "ecdsa", dataDir),
      names: ["dev.test", "*.dev.test"],
    }
  },
  async failing() {
    // The data dir's self-signed folder is a file: nothing can be kept there.
    const dataDir = mkdtempSync(join(tmpdir(), "pc-sources-"))
    writeFileSync(join(dataDir, "self-signed"), SECRET)
    const inside = mkdtempSync(join(tmpdir(), "pc-sources-"))
    mkdirSync(join(inside, "self-signed"))
    writeFileSync(join(inside, "blocked"), SECRET)
    return [
      {
        what: "a data dir that cannot hold the certificate",
        source: new SelfSignedSource(["dev.test"], "ecdsa", dataDir),
        names: join(dataDir, "self-signed"),
        secret: SECRET,
      },
      {
        what: "a data dir below a file",
        source: new SelfSignedSource(["dev.test"], "rsa", join(inside, "blocked")),
        names: join(inside, "blocked", "self-signed"),
        secret: SECRET,
      },
    ]
  },
})

test("certificateSource picks the file source for { cert, key } and the self-signed one for { self_signed }", () => {
  const file = certificateSource({ cert: "/a.pem", key: "/a.key" }, "/data")
  assert.ok(file instanceof FileSource)
  assert.deepEqual([file.certPath, file.keyPath], ["/a.pem", "/a.key"])
  const made = certificateSource({ self_signed: ["localhost"], key_type: "rsa" }, "/data")
  assert.ok(made instanceof SelfSignedSource)
  assert.deepEqual([made.names, made.keyType, made.dataDir], [["localhost"], "rsa", "/data"])
})
