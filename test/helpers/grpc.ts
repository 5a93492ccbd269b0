/** A real gRPC server and client (@grpc/grpc-js) for proxy tests: the Echo service of test/proxy/http/fixtures/echo.proto. */
import { join } from "node:path"
import * as grpc from "@grpc/grpc-js"
import * as protoLoader from "@grpc/proto-loader"

const PROTO = join(import.meta.dirname, "../proxy/http/fixtures/echo.proto")
const HEALTH_PROTO = join(import.meta.dirname, "../proxy/http/fixtures/health.proto")

export interface Msg {
  text?: string
  data?: Buffer
  count?: number
}

// biome-ignore lint/suspicious/noExplicitAny: grpc-js loads service constructors dynamically
type EchoClient = any

export function echoDefinition(): grpc.GrpcObject {
  const def = protoLoader.loadSync(PROTO, { keepCase: true, longs: Number, defaults: true })
  return grpc.loadPackageDefinition(def)
}

export interface EchoServer {
  port: number
  /** Calls the server saw cancelled by the client (cancellation crossed the proxy). */
  cancelled: () => number
  /** Metadata of the last call, as the server received it. */
  lastMetadata: () => grpc.Metadata | undefined
  /** What grpc.health.v1.Health/Check answers: SERVING (default) or NOT_SERVING; health checks seen so far. */
  setServing: (serving: boolean) => void
  healthChecks: () => number
  close: () => Promise<void>
}

const LARGE = 16 * 1024 * 1024

/**
 * startEchoServer: Unary echoes (text "fail:CODE" answers that status at once: a trailers-only response; "sleep:MS"
 * waits first, noticing cancellation), ServerStream sends `count` messages, ClientStream sums, Bidi echoes each.
 * Every reply carries initial metadata `x-initial: yes` and trailing metadata `x-trailing: done`.
 */
export async function startEchoServer(credentials = grpc.ServerCredentials.createInsecure()): Promise<EchoServer> {
  const proto = echoDefinition() as unknown as { echo: { Echo: { service: grpc.ServiceDefinition } } }
  const server = new grpc.Server({ "grpc.max_receive_message_length": LARGE, "grpc.max_send_message_length": LARGE })
  let cancelled = 0
  let lastMetadata: grpc.Metadata | undefined
  let serving = true
  let healthChecks = 0
  const health = grpc.loadPackageDefinition(
    protoLoader.loadSync(HEALTH_PROTO, { keepCase: true, enums: String, defaults: true }),
  ) as unknown as { grpc: { health: { v1: { Health: { service: grpc.ServiceDefinition } } } } }
  const initial = () => {
    const m = new grpc.Metadata()
    m.set("x-initial", "yes")
    return m
  }
  const trailing = () => {
    const m = new grpc.Metadata()
    m.set("x-trailing", "done")
    return m
  }
  server.addService(proto.echo.Echo.service, {
    Unary: (call: grpc.ServerUnaryCall<Msg, Msg>, callback: grpc.sendUnaryData<Msg>) => {
      lastMetadata = call.metadata
      const text = call.request.text ?? ""
      if (text.startsWith("fail:")) {
        callback({ code: Number(text.slice(5)), details: `failed as asked: ${text}` })
        return
      }
      const reply = () => {
        call.sendMetadata(initial())
        callback(
          null,
          { text: `echo:${text}`, data: call.request.data, count: call.request.data?.length ?? 0 },
          trailing(),
        )
      }
      if (text.startsWith("sleep:")) {
        const timer = setTimeout(reply, Number(text.slice(6)))
        call.on("cancelled", () => {
          cancelled++
          clearTimeout(timer)
        })
        return
      }
      reply()
    },
    ServerStream: (call: grpc.ServerWritableStream<Msg, Msg>) => {
      lastMetadata = call.metadata
      call.sendMetadata(initial())
      for (let i = 0; i < (call.request.count ?? 0); i++) call.write({ text: `${call.request.text}#${i}`, count: i })
      call.end(trailing())
    },
    ClientStream: (call: grpc.ServerReadableStream<Msg, Msg>, callback: grpc.sendUnaryData<Msg>) => {
      lastMetadata = call.metadata
      let n = 0
      let text = ""
      call.on("data", (m: Msg) => {
        n++
        text += m.text ?? ""
      })
      call.on("end", () => callback(null, { text, count: n }, trailing()))
    },
    Bidi: (call: grpc.ServerDuplexStream<Msg, Msg>) => {
      lastMetadata = call.metadata
      call.sendMetadata(initial())
      call.on("data", (m: Msg) => call.write({ text: `echo:${m.text}`, count: m.count }))
      call.on("end", () => call.end(trailing()))
    },
  })
  server.addService(health.grpc.health.v1.Health.service, {
    Check: (_call: grpc.ServerUnaryCall<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) => {
      healthChecks++
      callback(null, { status: serving ? "SERVING" : "NOT_SERVING" })
    },
  })
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", credentials, (err, p) => (err ? reject(err) : resolve(p))),
  )
  return {
    port,
    cancelled: () => cancelled,
    lastMetadata: () => lastMetadata,
    setServing: (value) => {
      serving = value
    },
    healthChecks: () => healthChecks,
    close: () =>
      new Promise<void>((resolve) => {
        server.tryShutdown(() => resolve())
        setTimeout(() => server.forceShutdown(), 2_000).unref()
      }),
  }
}

/** echoClient: a grpc-js client over TLS to Portcullis (the test CA; SNI and name check as `servername`). */
export function echoClient(port: number, ca: string | Buffer, servername = "localhost"): EchoClient {
  const proto = echoDefinition() as unknown as { echo: { Echo: new (...args: unknown[]) => EchoClient } }
  return new proto.echo.Echo(`127.0.0.1:${port}`, grpc.credentials.createSsl(Buffer.from(ca)), {
    "grpc.ssl_target_name_override": servername,
    "grpc.default_authority": servername,
    "grpc.max_receive_message_length": LARGE,
    "grpc.max_send_message_length": LARGE,
  })
}

/** unary calls Unary and resolves with the reply, initial and trailing metadata, or rejects with the grpc error. */
export function unary(
  client: EchoClient,
  msg: Msg,
  options: { deadlineMs?: number; metadata?: grpc.Metadata } = {},
): Promise<{ reply: Msg; initial: grpc.Metadata | undefined; trailing: grpc.Metadata | undefined }> {
  return new Promise((resolve, reject) => {
    let initial: grpc.Metadata | undefined
    let trailing: grpc.Metadata | undefined
    const call = client.Unary(
      msg,
      options.metadata ?? new grpc.Metadata(),
      options.deadlineMs ? { deadline: Date.now() + options.deadlineMs } : {},
      (err: grpc.ServiceError | null, reply: Msg) => {
        if (err) reject(err)
        else setImmediate(() => resolve({ reply, initial, trailing }))
      },
    )
    call.on("metadata", (m: grpc.Metadata) => (initial = m))
    call.on("status", (s: grpc.StatusObject) => (trailing = s.metadata))
  })
}

export { grpc }
