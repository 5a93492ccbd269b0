/** The tcp engine writes one access line per connection, and none when `access_log.enabled` is false. */
import assert from "node:assert/strict"
import net from "node:net"
import { after, before, test } from "node:test"
import { tlsConnect } from "../../helpers/clients.ts"
import { type CertFiles, createPki, type Pki } from "../../helpers/pki.ts"
import { type HeldPort, refusingPort } from "../../helpers/portcullis.ts"
import { type LoggedPortcullis, startLoggedPortcullis } from "../../helpers/servers.ts"
import { waitUntil } from "../../helpers/wait.ts"

let pki: Pki
let site: CertFiles
let banner: net.Server
let bannerPort: number
let dead: HeldPort

before(async () => {
  pki = await createPki()
  site = await pki.issue({ names: ["ok.test", "dead.test"] })
  // Greets and closes once the client has closed its side.
  banner = net.createServer({ allowHalfOpen: true }, (s) => {
    s.on("error", () => {})
    s.on("end", () => s.end())
    s.write("hello\n")
  })
  await new Promise<void>((r) => banner.listen(0, "127.0.0.1", r))
  bannerPort = (banner.address() as net.AddressInfo).port
  dead = await refusingPort()
})

after(async () => {
  dead?.close()
  banner?.close()
  await pki?.close()
})

function config(accessLog: string): string {
  return `
listeners:
  - name: t
    address: "127.0.0.1:0"
    engine: tcp
    tls: { certificates: [{ cert: ${site.certPath}, key: ${site.keyPath} }] }
    routes:
      - { hosts: [ok.test], upstream: ok }
      - { hosts: [dead.test], upstream: dead }
upstreams:
  ok: { backends: ["127.0.0.1:${bannerPort}"] }
  dead: { backends: ["127.0.0.1:${dead.port}"], passive: { enabled: false } }
${accessLog}
`
}

/** connectTo opens a tcp-listener connection for SNI name, reads until the proxy closes it or `close` is true. */
async function connectTo(pc: LoggedPortcullis, name: string, closeAfterBanner: boolean): Promise<string> {
  const socket = await tlsConnect({ port: pc.port("t"), servername: name, ca: pki.ca.cert })
  return new Promise((resolve, reject) => {
    let got = ""
    const timer = setTimeout(() => reject(new Error("no banner or close within 10 s")), 10_000)
    socket.on("data", (c: Buffer) => {
      got += c.toString()
      if (closeAfterBanner && got.endsWith("\n")) socket.end()
    })
    socket.on("error", () => {})
    socket.on("close", () => {
      clearTimeout(timer)
      resolve(got)
    })
  })
}

const accessLines = (pc: LoggedPortcullis) => pc.logs.filter((l) => l["type"] === "access")
const backendErrors = (pc: LoggedPortcullis) =>
  pc.logs.filter((l) => typeof l["msg"] === "string" && (l["msg"] as string).startsWith("backend error"))

test("access_log on (the default): a tcp connection writes one access line when it closes", async () => {
  const pc = await startLoggedPortcullis(config(""))
  try {
    assert.equal(await connectTo(pc, "ok.test", true), "hello\n")
    await waitUntil(() => accessLines(pc).length === 1, "one access line for the connection")
    const line = accessLines(pc)[0]!
    assert.equal(line["listener"], "t")
    assert.equal(line["sni"], "ok.test")
    assert.equal(line["upstream"], "ok")
    assert.equal(line["backend"], `127.0.0.1:${bannerPort}`)
    assert.equal(line["bytes_out"], 6)

    // A refused backend: onClose writes the access line (in the next batch) and the backend error.
    assert.equal(await connectTo(pc, "dead.test", false), "")
    await waitUntil(() => backendErrors(pc).length === 1, "the refused connect is logged")
    await waitUntil(() => accessLines(pc).length === 2, "the second access line")
    assert.equal(accessLines(pc)[1]!["upstream"], "dead")
  } finally {
    await pc.close()
  }
})

test("access_log.enabled: false: a tcp connection writes no access line", async () => {
  const pc = await startLoggedPortcullis(config("access_log: { enabled: false }"))
  try {
    assert.equal(await connectTo(pc, "ok.test", true), "hello\n")
    // The refused connect's warning is written in the same onClose as the access line would be.
    assert.equal(await connectTo(pc, "dead.test", false), "")
    await waitUntil(() => backendErrors(pc).length === 1, "the refused connect is logged")
    await waitUntil(
      () => pc.runtime.status().listeners.every((l) => l.connections === 0),
      "both connections are closed",
    )
  } finally {
    await pc.close()
  }
  // Access lines are written in batches; close writes whatever is pending, so any line would be here now.
  assert.deepEqual(accessLines(pc), [])
})
