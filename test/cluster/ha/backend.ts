/** The HA test's backend, run in a node's namespace: `node backend.ts NAME PORT` answers every request with NAME. */
import http from "node:http"

const [name = "?", port = "8080"] = process.argv.slice(2)
const server = http.createServer((_req, res) => {
  res.writeHead(200, { "content-type": "text/plain", "content-length": Buffer.byteLength(name) })
  res.end(name)
})
server.listen(Number(port), "127.0.0.1", () => console.log(`backend ${name} listening`))
