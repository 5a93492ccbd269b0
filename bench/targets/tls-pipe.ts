/**
 * @module tls-pipe: a reference target, the least a Node TLS offloader can do: end TLS and pipe each client
 * connection to its own backend connection. Usage: node tls-pipe.ts PORT BACKEND_PORT CERT KEY
 */
import { readFileSync } from "node:fs"
import net from "node:net"
import tls from "node:tls"

const [port, backendPort, certFile, keyFile] = process.argv.slice(2)
if (!port || !backendPort || !certFile || !keyFile) {
  console.error("usage: node tls-pipe.ts PORT BACKEND_PORT CERT KEY")
  process.exit(2)
}

const server = tls.createServer(
  {
    cert: readFileSync(certFile),
    key: readFileSync(keyFile),
    minVersion: "TLSv1.2",
    maxVersion: "TLSv1.3",
    ALPNProtocols: ["http/1.1"],
  },
  (client) => {
    const backend = net.connect({ host: "127.0.0.1", port: Number(backendPort), noDelay: true })
    client.setNoDelay(true)
    client.on("error", () => backend.destroy())
    backend.on("error", () => client.destroy())
    client.pipe(backend)
    backend.pipe(client)
  },
)
server.on("tlsClientError", () => {})
server.listen({ host: "127.0.0.1", port: Number(port), backlog: 4096 }, () => {
  console.log(`tls-pipe listening on 127.0.0.1:${port}`)
})
process.on("SIGTERM", () => process.exit(0))
