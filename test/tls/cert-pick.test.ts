/**
 * CertPick against OpenSSL itself: for a name served with an ECDSA and an RSA certificate, openssl s_client offers
 * various signature algorithms, suites and groups under each profile, and the certificate OpenSSL serves must be the
 * one CertPick predicted from the same ClientHello (or the prediction says unsure, where the table expects it).
 */
import assert from "node:assert/strict"
import { execFile } from "node:child_process"
import { X509Certificate } from "node:crypto"
import net from "node:net"
import { after, before, test } from "node:test"
import tls from "node:tls"
import { PICK_ECDSA, PICK_RSA, PICK_UNSURE } from "../../src/tls/cert-pick.ts"
import { CertStore } from "../../src/tls/cert-store.ts"
import { type CertFiles, createPki, type Pki } from "../helpers/pki.ts"
import { tlsConfig } from "./harness.ts"

let pki: Pki
let ec: CertFiles
let rsa: CertFiles
let serials: Map<string, "ECDSA" | "RSA">

before(async () => {
  pki = await createPki()
  ec = await pki.issue({ names: ["dual.test"] })
  rsa = await pki.issue({ names: ["dual.test"], keyType: "rsa" })
  serials = new Map([
    [new X509Certificate(ec.cert).serialNumber, "ECDSA"],
    [new X509Certificate(rsa.cert).serialNumber, "RSA"],
  ])
})
after(() => pki?.close())

type Served = "ECDSA" | "RSA" | "failed"
const NAMES: Record<number, string> = { [PICK_ECDSA]: "ECDSA", [PICK_RSA]: "RSA", [PICK_UNSURE]: "unsure" }

/** serve answers TLS on 127.0.0.1 with the store's context for each ClientHello, recording CertPick's prediction. */
async function serve(store: CertStore): Promise<{ port: number; predictions: string[]; close: () => void }> {
  const predictions: string[] = []
  const server = net.createServer(async (raw) => {
    raw.on("error", () => {})
    const hello = await store.peek(raw, 2000)
    const context = await store.contextForHello(hello)
    const pick = store.certPickOf(context)
    assert.ok(pick && hello.hello, "a dual context has a CertPick, and the peek kept the hello")
    predictions.push(NAMES[pick.pick(hello.hello)]!)
    new tls.TLSSocket(raw, { isServer: true, secureContext: context }).on("error", () => {})
  })
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r))
  return { port: (server.address() as net.AddressInfo).port, predictions, close: () => server.close() }
}

/** served runs openssl s_client with `args` and says which certificate came back. */
function served(port: number, args: string[]): Promise<Served> {
  return new Promise((resolve) => {
    const child = execFile(
      "openssl",
      ["s_client", "-connect", `127.0.0.1:${port}`, "-servername", "dual.test", ...args],
      { timeout: 10_000 },
      (_err, stdout) => {
        const pem = stdout.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/)?.[0]
        resolve(pem ? (serials.get(new X509Certificate(pem).serialNumber) ?? "failed") : "failed")
      },
    )
    child.stdin?.end()
  })
}

const TLS12 = ["-tls1_2"]
// [client arguments, what OpenSSL 3.5 serves (measured), CertPick's answer when it is not that]
type Row = [string[], Served, string?]
const TABLES: { name: string; tls: Record<string, unknown>; rows: Row[] }[] = [
  {
    name: "intermediate (server order, ChaCha20 prioritised)",
    tls: {},
    rows: [
      [[], "ECDSA"],
      [["-sigalgs", "ECDSA+SHA256"], "ECDSA"],
      [["-sigalgs", "RSA-PSS+SHA256"], "RSA"],
      [["-sigalgs", "RSA-PSS+SHA256:ECDSA+SHA256"], "ECDSA"],
      [["-sigalgs", "RSA-PSS+SHA256:ECDSA+SHA384"], "RSA"],
      [["-sigalgs", "ECDSA+SHA384"], "failed", "unsure"],
      [["-groups", "P-384"], "ECDSA"],
      [TLS12, "ECDSA"],
      [[...TLS12, "-cipher", "ECDHE-RSA-AES128-GCM-SHA256"], "RSA"],
      [[...TLS12, "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"], "ECDSA"],
      [[...TLS12, "-cipher", "ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES128-GCM-SHA256"], "ECDSA"],
      [[...TLS12, "-sigalgs", "RSA+SHA256"], "RSA"],
      [[...TLS12, "-sigalgs", "RSA-PSS+SHA256:ECDSA+SHA256"], "ECDSA"],
      [[...TLS12, "-sigalgs", "ECDSA+SHA384:RSA+SHA256"], "ECDSA"],
      [[...TLS12, "-groups", "X25519"], "RSA"],
      [[...TLS12, "-groups", "P-384"], "RSA"],
      [[...TLS12, "-cipher", "ECDHE-RSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES128-GCM-SHA256"], "RSA"],
      [[...TLS12, "-cipher", "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-AES128-GCM-SHA256"], "ECDSA"],
      [[...TLS12, "-cipher", "ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-GCM-SHA256"], "RSA"],
      [[...TLS12, "-cipher", "AES128-GCM-SHA256"], "failed", "unsure"],
    ],
  },
  {
    name: "old (server order, CBC and static RSA)",
    tls: { profile: "old" },
    rows: [
      [["-sigalgs", "RSA-PSS+SHA256:ECDSA+SHA256"], "ECDSA"],
      [[...TLS12, "-cipher", "ECDHE-RSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES128-GCM-SHA256"], "ECDSA"],
      [[...TLS12, "-cipher", "AES128-GCM-SHA256"], "RSA"],
      [[...TLS12, "-cipher", "ECDHE-ECDSA-AES128-SHA:AES128-SHA"], "ECDSA"],
      [[...TLS12, "-cipher", "ECDHE-ECDSA-AES128-SHA:AES128-SHA", "-groups", "X25519"], "RSA"],
      [
        [...TLS12, "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256", "-sigalgs", "RSA+SHA256"],
        "RSA",
      ],
    ],
  },
  {
    name: "modern (client order, TLS 1.3)",
    tls: { profile: "modern" },
    rows: [
      [[], "ECDSA"],
      [["-sigalgs", "RSA-PSS+SHA256"], "RSA"],
      [["-sigalgs", "RSA-PSS+SHA256:ECDSA+SHA256"], "RSA"],
      [["-sigalgs", "ECDSA+SHA256:RSA-PSS+SHA256"], "ECDSA"],
      [["-sigalgs", "ECDSA+SHA512:RSA-PSS+SHA384:ECDSA+SHA256"], "RSA"],
    ],
  },
  {
    name: "modern with min_version TLSv1.2 (client order in TLS 1.2 too)",
    tls: { profile: "modern", min_version: "TLSv1.2" },
    rows: [
      [[...TLS12, "-cipher", "ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES128-GCM-SHA256"], "RSA"],
      [[...TLS12, "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256"], "ECDSA"],
      [[...TLS12, "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256", "-groups", "X25519"], "RSA"],
    ],
  },
  {
    name: "a cipher string with OpenSSL keywords (TLS 1.2 unsure, TLS 1.3 still predicted)",
    tls: { ciphers: "ECDHE+AESGCM" },
    rows: [
      [[...TLS12, "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"], "ECDSA", "unsure"],
      [[...TLS12, "-cipher", "ECDHE-RSA-AES128-GCM-SHA256"], "RSA", "unsure"],
      [["-sigalgs", "RSA-PSS+SHA256"], "RSA"],
    ],
  },
]

for (const table of TABLES) {
  test(`CertPick predicts the certificate OpenSSL serves from an ECDSA+RSA context: ${table.name}`, async (t) => {
    const certificates = [ec, rsa].map((f) => ({ cert: f.certPath, key: f.keyPath }))
    const store = await CertStore.load(tlsConfig({ certificates, ...table.tls }), { dataDir: pki.dir, engine: "http" })
    const server = await serve(store)
    t.after(() => server.close())
    const got: string[] = []
    const want: string[] = []
    for (const [args, expected, prediction] of table.rows) {
      const before = server.predictions.length
      const actual = await served(server.port, args)
      assert.equal(server.predictions.length, before + 1, `one ClientHello for ${args.join(" ")}`)
      got.push(`${args.join(" ") || "(defaults)"}: served ${actual}, predicted ${server.predictions[before]}`)
      want.push(`${args.join(" ") || "(defaults)"}: served ${expected}, predicted ${prediction ?? expected}`)
    }
    assert.deepEqual(got, want)
  })
}
