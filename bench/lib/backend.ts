/**
 * @module backend: the nginx backend every target forwards to: /small (100 bytes) and /1m (1 MiB, sendfile) over
 * HTTP/1.1, and the same files under /c/ on a second port that speaks h2c (HTTP/2 by prior knowledge) for W3c.
 */
import { chmodSync, mkdirSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { waitForPort } from "./probe.ts"
import { type Spawned, spawnLogged, stopProcess } from "./proc.ts"

export const SMALL_SIZE = 100
export const BULK_SIZE = 1024 * 1024

/** Backend is the running nginx backend. */
export interface Backend {
  readonly port: number
  /** h2cPort serves the same files (and /c/small) over h2c: nginx `listen PORT http2` without ssl. */
  readonly h2cPort: number
  readonly process: Spawned
  /** accepts reads nginx's count of connections accepted so far (stub_status), to catch a proxy that churns. */
  accepts(): Promise<number>
  close(): Promise<void>
}

/** startBackend writes the files and config under dir and starts nginx (one worker) on 127.0.0.1:port and h2cPort, core 0. */
export async function startBackend(dir: string, port: number, h2cPort: number): Promise<Backend> {
  const root = join(dir, "www")
  mkdirSync(root, { recursive: true })
  // nginx workers run as nobody when started by root: the files must be readable by it
  chmodSync(dir, 0o755)
  chmodSync(root, 0o755)
  mkdirSync(join(dir, "tmp"), { recursive: true })
  writeFileSync(join(root, "small"), "x".repeat(SMALL_SIZE - 1) + "\n")
  // W3c asks for /c/small: the path prefix the targets route to the h2c backend.
  mkdirSync(join(root, "c"), { recursive: true })
  chmodSync(join(root, "c"), 0o755)
  writeFileSync(join(root, "c", "small"), "x".repeat(SMALL_SIZE - 1) + "\n")
  const mib = Buffer.alloc(BULK_SIZE)
  for (let i = 0; i < mib.length; i++) mib[i] = 97 + (i % 26)
  writeFileSync(join(root, "1m"), mib)
  const conf = join(dir, "nginx.conf")
  writeFileSync(
    conf,
    `worker_processes 1;
worker_rlimit_nofile 20000;
error_log stderr warn;
pid ${dir}/nginx.pid;
events { worker_connections 20000; }
http {
  access_log off;
  default_type application/octet-stream;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 100000000;
  keepalive_timeout 600s;
  client_body_temp_path ${dir}/tmp/body;
  proxy_temp_path ${dir}/tmp/proxy;
  fastcgi_temp_path ${dir}/tmp/fastcgi;
  uwsgi_temp_path ${dir}/tmp/uwsgi;
  scgi_temp_path ${dir}/tmp/scgi;
  server {
    listen 127.0.0.1:${port} backlog=4096;
    root ${root};
    location = /_status { stub_status; }
    location / { }
  }
  server {
    # nginx 1.22: http2 on a port without ssl is h2c with prior knowledge (no Upgrade: h2c); keepalive_requests
    # above also caps requests per HTTP/2 connection (http2_max_requests is obsolete since 1.19.7).
    listen 127.0.0.1:${h2cPort} http2 backlog=4096;
    keepalive_timeout 600s;
    root ${root};
    location / { }
  }
}
`,
  )
  const proc = spawnLogged("nginx", ["-c", conf, "-p", dir, "-g", "daemon off;"], join(dir, "backend.log"), { core: 0 })
  await waitForPort(port, 5000, proc)
  await waitForPort(h2cPort, 5000, proc)
  const accepts = async () => {
    const text = await (await fetch(`http://127.0.0.1:${port}/_status`)).text()
    // "server accepts handled requests\n N N N": the first number, minus this status request's own connection
    return Number(/requests\s+(\d+)/.exec(text)?.[1] ?? Number.NaN) - 1
  }
  return { port, h2cPort, process: proc, accepts, close: () => stopProcess(proc) }
}
