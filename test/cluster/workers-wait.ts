/** waitUntilAsync polls an async condition every 50 ms until it holds, or fails after timeoutMs with `message`. */
export async function waitUntilAsync(
  condition: () => Promise<boolean>,
  message: string,
  timeoutMs = 10_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms: ${message}`)
    await new Promise((r) => setTimeout(r, 50))
  }
}
