/**
 * A closed HTTP/2 session is let go (issue 14's soak): a connection nghttp2 ends with a connection error (DATA on
 * stream 0, RFC 9113 §6.1; a SETTINGS_INITIAL_WINDOW_SIZE above 2^31-1, §6.5.2) before the client acknowledged the
 * server's SETTINGS stayed in memory for good, with its TLS socket, its guard, its engine and so the generation
 * (engine.ts releaseSession says how Node keeps it). Portcullis runs in a child process with the inspector on, as the
 * retention only showed across processes; the live ServerHttp2Sessions are counted with the inspector protocol's
 * Runtime.queryObjects (which collects garbage first) after the connections are gone.
 */
import assert from "node:assert/strict"
import { mkdtempSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { after, before, test } from "node:test"
import { startEchoBackend, type TestBackend } from "../../helpers/backends.ts"
import { connectRawH2, FRAME, frame } from "../../helpers/h2-frames.ts"
import { type ChildPortcullis, runningPorts, spawnPortcullis } from "../../helpers/portcullis.ts"

const CONNECTIONS = 8

let backend: TestBackend
let pc: ChildPortcullis
let web: number
let inspector: Inspector

/** Reply: the parts of the protocol's answers used here. */
interface Reply {
  id: number
  result?: { result?: { objectId?: string; value?: unknown }; objects?: { objectId: string } }
}

/** Inspector: a minimal Chrome DevTools protocol client over the inspector's WebSocket. */
interface Inspector {
  send: (method: string, params?: object) => Promise<Reply>
  close: () => void
}

async function connectInspector(port: number): Promise<Inspector> {
  const targets = (await (await fetch(`http://127.0.0.1:${port}/json/list`)).json()) as {
    webSocketDebuggerUrl: string
  }[]
  const ws = new WebSocket(targets[0]!.webSocketDebuggerUrl)
  await new Promise((resolve, reject) => {
    ws.onopen = resolve
    ws.onerror = reject
  })
  let id = 0
  const pending = new Map<number, (m: Reply) => void>()
  ws.onmessage = (ev) => {
    const m = JSON.parse(String(ev.data)) as Reply
    pending.get(m.id)?.(m)
    pending.delete(m.id)
  }
  return {
    send: (method, params = {}) =>
      new Promise((resolve) => {
        pending.set(++id, resolve)
        ws.send(JSON.stringify({ id, method, params }))
      }),
    close: () => ws.close(),
  }
}

/** liveServerSessions counts the child's ServerHttp2Session objects that survive a full garbage collection. */
async function liveServerSessions(): Promise<number> {
  // Http2Session.prototype, reached through a client session (the server class is not exported).
  const proto = await inspector.send("Runtime.evaluate", {
    expression:
      "Object.getPrototypeOf(Object.getPrototypeOf(process.getBuiltinModule('http2').connect('http://127.0.0.1:1').on('error', () => {})))",
  })
  const found = await inspector.send("Runtime.queryObjects", { prototypeObjectId: proto.result?.result?.objectId })
  const n = await inspector.send("Runtime.callFunctionOn", {
    objectId: found.result?.objects?.objectId,
    functionDeclaration:
      "function () { return this.filter((s) => !Object.hasOwn(s, 'constructor') && s.constructor.name === 'ServerHttp2Session').length }",
    returnByValue: true,
  })
  await inspector.send("Runtime.releaseObject", { objectId: found.result?.objects?.objectId })
  return n.result?.result?.value as number
}

before(async () => {
  backend = await startEchoBackend("app")
  const dir = mkdtempSync(join(tmpdir(), "pc-h2-release-"))
  const config = join(dir, "portcullis.yaml")
  writeFileSync(
    config,
    `listeners:
  - name: web
    address: 127.0.0.1:0
    tls: { certificates: [{ self_signed: [localhost] }] }
    routes: [{ upstream: app }]
upstreams:
  app: { backends: ["127.0.0.1:${backend.port}"] }
access_log: { enabled: false }
data_dir: ${dir}/data
`,
  )
  pc = spawnPortcullis(["--config", config], { nodeArgs: ["--inspect=127.0.0.1:0"] })
  web = (await runningPorts(pc, 30_000)).ports.web!
  const port = /Debugger listening on ws:\/\/127\.0\.0\.1:(\d+)\//.exec(pc.output())?.[1]
  assert.ok(port, "the inspector's port is printed")
  inspector = await connectInspector(Number(port))
  await inspector.send("Runtime.enable")
})

after(async () => {
  inspector?.close()
  await pc?.stop()
  await backend?.close()
})

/** connectionError opens a connection, sends `bad` (after the preface and SETTINGS), and waits for the GOAWAY. */
async function connectionError(bad: Buffer): Promise<void> {
  const h2 = await connectRawH2(web)
  try {
    h2.send(bad)
    await h2.waitFor((f) => f.type === FRAME.GOAWAY, 5_000)
  } finally {
    h2.close()
  }
}

test(`${CONNECTIONS} connections ended by nghttp2's connection errors leave no session behind`, async () => {
  const tooLarge = Buffer.alloc(6)
  tooLarge.writeUInt16BE(0x4) // SETTINGS_INITIAL_WINDOW_SIZE
  tooLarge.writeUInt32BE(2 ** 31, 2)
  for (let i = 0; i < CONNECTIONS; i++) {
    await connectionError(
      i % 2 === 0 ? frame(FRAME.DATA, 0, 0, Buffer.alloc(5)) : frame(FRAME.SETTINGS, 0, 0, tooLarge),
    )
  }
  // The sessions close a turn or two after their sockets; then nothing may hold them.
  let live = await liveServerSessions()
  for (let i = 0; i < 8 && live > 0; i++) {
    await new Promise((r) => setTimeout(r, 250))
    live = await liveServerSessions()
  }
  assert.equal(live, 0, `${live} of ${CONNECTIONS} closed sessions are still alive`)
})
