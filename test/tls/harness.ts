/** Shared pieces of the tls tests: a listener TLS config from a plain object, a CertStore served by the production TlsListener, a recording client. */
import { X509Certificate } from "node:crypto"
import type { TestContext } from "node:test"
import tls from "node:tls"
import { configSchema, type ListenerTlsConfig } from "../../src/config/schema.ts"
import { silentLogger } from "../../src/core/log.ts"
import { ListenerSocket } from "../../src/listeners/listener-socket.ts"
import { type Engine, TlsListener } from "../../src/listeners/tls-listener.ts"
import type { CertStore } from "../../src/tls/cert-store.ts"

/** tlsConfig validates a listener `tls:` section through the real schema, so defaults apply as in a config file. */
export function tlsConfig(tls: Record<string, unknown>, engine: "http" | "tcp" = "http"): ListenerTlsConfig {
  const config = configSchema.parse({
    listeners: [{ name: "t", address: "127.0.0.1:1", engine, tls, upstream: "u" }],
    upstreams: { u: { backends: ["127.0.0.1:2"] } },
  })
  return config.listeners[0]!.tls!
}

/**
 * startStoreServer serves a CertStore the way production does: a ListenerSocket on 127.0.0.1:0 hands each
 * connection to a TlsListener (ClientHello peek, the name's SecureContext, client_auth), whose engine greets each
 * client with "hi\n" and closes. `listener` is more of the listener's config (e.g. handshake_timeout under tls).
 * Closed after the test; returns the port.
 */
export async function startStoreServer(
  t: TestContext,
  store: CertStore,
  listener: Record<string, unknown> = {},
): Promise<number> {
  const config = configSchema.parse({
    listeners: [
      {
        name: "t",
        address: "127.0.0.1:0",
        tls: { certificates: [{ cert: "unused.pem", key: "unused.key" }] },
        upstream: "u",
        ...listener,
      },
    ],
    upstreams: { u: { backends: ["127.0.0.1:2"] } },
  }).listeners[0]!
  const greeted = new Set<tls.TLSSocket>()
  const engine: Engine = {
    handle(socket) {
      greeted.add(socket)
      socket.on("close", () => greeted.delete(socket))
      socket.end("hi\n")
    },
    close: async () => {},
    destroy: () => {
      for (const s of greeted) s.destroy()
    },
    get connections() {
      return greeted.size
    },
  }
  const tlsListener = new TlsListener(config, store, engine, silentLogger())
  const socket = new ListenerSocket(config.address, (raw) => tlsListener.accept(raw))
  await socket.start()
  t.after(async () => {
    await socket.close()
    tlsListener.destroy()
  })
  return socket.port
}

/** Handshake is what a client saw. */
export interface Handshake {
  protocol: string | null
  cipher: string
  alpn: string | false
  /** subject CN of the server certificate */
  cn: string
  /** key type of the server certificate: ec or rsa */
  keyType: string
  reused: boolean
  authorized: boolean
  authorizationError?: string
  /** the TLS session to resume with (waited for when waitSession) */
  session?: Buffer
  /** the greeting the server sent; "" when it closed the connection instead */
  data: string
}

/**
 * handshake connects to 127.0.0.1:port, records the handshake and the server's greeting, and resolves when the
 * server has closed; rejects on a TLS error or after 5 s.
 */
export function handshake(port: number, options: tls.ConnectionOptions = {}): Promise<Handshake> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: "127.0.0.1", port, rejectUnauthorized: false, ...options })
    const timer = setTimeout(() => {
      socket.destroy()
      reject(new Error("handshake did not finish within 5 s"))
    }, 5000)
    let result: Handshake | undefined
    let data = ""
    socket.on("session", (session: Buffer) => {
      if (result) result.session = session
    })
    socket.on("secureConnect", () => {
      const peer = socket.getPeerCertificate()
      const cert = peer.raw ? new X509Certificate(peer.raw) : undefined
      result = {
        protocol: socket.getProtocol(),
        cipher: socket.getCipher().name,
        alpn: socket.alpnProtocol ?? false,
        cn: typeof peer.subject?.CN === "string" ? peer.subject.CN : "",
        keyType: cert?.publicKey.asymmetricKeyType ?? "",
        reused: socket.isSessionReused(),
        authorized: socket.authorized,
        data: "",
      }
      if (socket.authorizationError) result.authorizationError = String(socket.authorizationError)
    })
    socket.on("data", (chunk: Buffer) => {
      data += chunk.toString()
    })
    socket.on("error", (err) => {
      clearTimeout(timer)
      reject(err)
    })
    socket.on("close", () => {
      clearTimeout(timer)
      if (!result) reject(new Error("closed before the handshake finished"))
      else resolve({ ...result, data })
    })
  })
}

/** refused resolves with the client's error when the handshake fails, and rejects if it succeeds. */
export async function refused(port: number, options: tls.ConnectionOptions): Promise<Error & { code?: string }> {
  try {
    const got = await handshake(port, options)
    if (got.data === "") return new Error("server closed the connection after the handshake")
  } catch (err) {
    return err as Error & { code?: string }
  }
  throw new Error(`expected the handshake to be refused, but it succeeded with ${JSON.stringify(options)}`)
}
