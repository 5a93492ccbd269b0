/**
 * Another process holding a lock of the Redis certificate storage, for the storage contract:
 * `node storage-holder.ts REDIS_URL PREFIX NAME TTL_MS` prints "held" once it holds NAME (renewing it), and on a
 * "release" line on stdin releases it, prints "released" and exits.
 */
import { createInterface } from "node:readline"
import { RedisCertificateStorage } from "../../src/cluster/shared/redis-certificate-storage.ts"
import { RedisClient } from "../../src/cluster/shared/redis-client.ts"
import { silentLogger } from "../../src/core/log.ts"

const [url = "", prefix = "", name = "", ttl = "1000"] = process.argv.slice(2)
const client = new RedisClient({ url })
if (!(await client.connect(5000))) throw new Error(`no redis at ${url}`)
const storage = new RedisCertificateStorage({ client, log: silentLogger(), prefix, pollMs: 50 })
const release = await storage.lock(name, Number(ttl), AbortSignal.timeout(10_000))
console.log("held")
for await (const line of createInterface({ input: process.stdin })) {
  if (line !== "release") continue
  await release()
  console.log("released")
  client.close()
  break
}
