/**
 * @module write-batch: small socket writes made while the event loop handles one round of I/O events leave
 * together at the end of that round, as HAProxy sends what its tasks produced after it has read every ready socket.
 *
 * Why: Node handles each ready socket to the end (read, parse, write) before the next, so under keep-alive load the
 * proxy's writes are spread over the round, one every few tens of µs, and each wakes the peer (client or backend)
 * that had gone back to sleep since the previous one: a cross-CPU wake-up, in a VM an IPI, charged to the writer
 * (perf, W2: 13.9% of Portcullis's CPU in the kernel's wake-up path, 5.7 µs per request, HAProxy 1.7 µs). Written
 * back to back, the peer is still awake for all but the first. Measured (docs/benchmarks.md): W2 +15-21% requests
 * per CPU-second with both the client and the backend writes held, nothing with either alone. The price is
 * latency at light load: a write waits for the rest of its round, so W7's added p50 went from ≈100 µs to ≈270 µs
 * (HAProxy's, which batches the same way: ≈230 µs).
 *
 * How: hold() corks the socket and queues it; one setImmediate per round (the check phase, right after poll)
 * uncorks every held socket, in the order they were held. Writable's cork keeps each socket's bytes in order, and
 * end() uncorks by itself. destroy() drops what is corked: a caller that destroys a socket it may have held calls
 * release() first, so the bytes written before leave as they did before batching.
 */
import type { Socket } from "node:net"

let held: Socket[] = []
let spare: Socket[] = []
let scheduled = false

/** flush uncorks every socket held this round; sockets held while it runs wait for the next round. */
function flush(): void {
  scheduled = false
  const round = held
  held = spare
  for (let i = 0; i < round.length; i++) {
    const socket = round[i]!
    if (socket.writableCorked > 0) socket.uncork()
  }
  round.length = 0
  spare = round
}

/**
 * hold makes what is written to `socket` from now until the end of this event-loop round leave with the round's
 * other writes. A socket already corked (held, or corked by its owner) is left as it is.
 */
export function hold(socket: Socket): void {
  if (socket.writableCorked > 0) return
  socket.cork()
  held.push(socket)
  if (!scheduled) {
    scheduled = true
    setImmediate(flush)
  }
}

/** release writes what `socket` holds now (before a destroy, which would drop it). */
export function release(socket: Socket): void {
  while (socket.writableCorked > 0) socket.uncork()
}
