/** waitUntil polls a condition every 20 ms until it holds, or fails with the message after timeoutMs. */
export async function waitUntil(condition: () => boolean, message: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms: ${message}`)
    await new Promise((r) => setTimeout(r, 20))
  }
}
