// The peer server's control endpoint (`peer.mjs server --control PORT`), as run.mjs
// and the peer's client processes call it. A request the HTTP client gives up on
// while the server's event loop is busy syncing ("fetch failed": a reset or
// timed-out connection) is sent again, a few times, when sending it twice does no
// harm; `/change` records edits on the server, so it is sent once.

const sentOnce = new Set(["/change"])
const attempts = 5
const sleep = ms => new Promise(r => setTimeout(r, ms))

/** `control(path, payload?)` for the server listening on `port`: GET, or POST of
 * `payload` as JSON; resolves to the reply's JSON, throws on an HTTP error. */
export function controlClient(port) {
  return async function control(path, payload) {
    for (let attempt = 1; ; attempt++) {
      let res
      try {
        res = await fetch(`http://127.0.0.1:${port}${path}`, {
          method: payload ? "POST" : "GET",
          body: payload ? JSON.stringify(payload) : undefined,
        })
      } catch (e) {
        const cause = e.cause ? `${e.cause.code ?? ""} ${e.cause.message ?? e.cause}`.trim() : ""
        if (sentOnce.has(path) || attempt >= attempts) {
          throw new Error(`${path}: ${e.message} (${cause}), ${attempt} attempt(s)`)
        }
        console.error(`[peer] control ${path}: ${e.message} (${cause}); retrying`)
        await sleep(1000 * attempt)
        continue
      }
      if (!res.ok) throw new Error(`${path}: ${res.status} ${await res.text()}`)
      return res.json()
    }
  }
}
