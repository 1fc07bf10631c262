// The automerge-repo side of `bench/run.sh`: a sync server (automerge-repo with its
// websocket server adapter and node-fs storage) and the clients that run the same
// scenarios as `waybill bench`. One role per process:
//
//   node peer.mjs server    --port P --control C --dir D     the sync server
//   node peer.mjs seed      --dir D --docs N --out urls.json  orders written to D
//   node peer.mjs initial   --port P --dir D --urls F         fresh client syncs all
//   node peer.mjs reconnect --port P --dir D --urls F ...     restarted client, offline edits
//   node peer.mjs ingest    --port P --control C ...          many writers
//   node peer.mjs fanout    --port P --control C ...          one change, many clients
//   node peer.mjs idle      --port P --control C --counts ... idle connections
//
// Clients print one JSON object on stdout. `run.mjs` starts them and turns their
// output into figures.
import * as A from "@automerge/automerge"
import { Repo, cbor, generateAutomergeUrl, parseAutomergeUrl } from "@automerge/automerge-repo"
import {
  WebSocketClientAdapter,
  WebSocketServerAdapter,
} from "@automerge/automerge-repo-network-websocket"
import { NodeFSStorageAdapter } from "@automerge/automerge-repo-storage-nodefs"
import { WebSocketServer, WebSocket } from "ws"
import fs from "node:fs"
import http from "node:http"
import { controlClient } from "./control.mjs"

const args = parseArgs(process.argv.slice(3))
const role = process.argv[2]

function parseArgs(list) {
  const out = {}
  for (let i = 0; i < list.length; i += 2) out[list[i].replace(/^--/, "")] = list[i + 1]
  return out
}
const int = (name, fallback) => (args[name] === undefined ? fallback : Number(args[name]))
const sleep = ms => new Promise(r => setTimeout(r, ms))
const now = () => performance.now()

export function memory() {
  const text = fs.readFileSync("/proc/self/status", "utf8")
  const field = name => Number((text.match(new RegExp(`^${name}:\\s+(\\d+)`, "m")) || [0, 0])[1])
  return { rss_kib: field("VmRSS"), hwm_kib: field("VmHWM") }
}

// ---- documents: the same order as Waybill's (SCHEMA.md §4), same edits ----

const FIRST = ["Leila", "Reza", "Sara", "Omid", "Maryam", "Kian", "Nika", "Arash"]
const LAST = ["Karimi", "Ahmadi", "Hosseini", "Rahimi", "Moradi", "Jafari", "Sadeghi", "Tehrani"]
const PRODUCTS = ["Black tea 500 g", "Basmati rice 5 kg", "Saffron 2 g", "Pistachios 1 kg", "Dates 600 g", "Olive oil 1 l"]
const CHANNELS = ["web", "app", "pos", "call_centre"]
let counter = 0
const hex = n => Array.from({ length: n }, () => Math.floor(Math.random() * 16).toString(16)).join("")
const id = prefix => `${prefix}${Date.now().toString(16).padStart(12, "0")}${hex(20)}`
const at = () => ({ wall_ms: Date.now(), counter: counter++ % 1000 })

function order(store, i, actor) {
  const rand = seeded(i ^ 0x57415942)
  const lines = [0, 1, 2].map(() => {
    const p = rand(PRODUCTS.length)
    return { id: id("ln_"), sku: `SKU-${String(p).padStart(3, "0")}-${String(rand(20)).padStart(2, "0")}`,
      name: PRODUCTS[p], qty: 1 + rand(4), unit_price: 100000 * (1 + rand(39)) }
  })
  const placed = event("placed", actor, [])
  return {
    schema_version: 1, type: "order", id: id("ord_"),
    number: `${store}-${String(i).padStart(6, "0")}`, channel: CHANNELS[i % 4], store,
    customer: { id: `c-${rand(5000)}`, name: `${FIRST[rand(8)]} ${LAST[rand(8)]}`,
      phone: `+98 912 ${String(rand(1000)).padStart(3, "0")} ${String(rand(10000)).padStart(4, "0")}`,
      address: `${1 + rand(399)} Vali-Asr St, Tehran` },
    currency: "IRR", fulfilment: "delivery", lines, deliveries: [], payments: [], returns: [],
    notes: "Ring twice; leave with the doorman.\n", events: [placed],
    created_at: placed.at, created_by: actor,
  }
}
function event(kind, actor, after) {
  return { id: id("ev_"), kind, actor, at: at(), after, location: null, note: null, resolution: null, courier: null }
}
function seeded(seed) {
  let s = seed >>> 0 || 1
  return n => { s = (s * 1664525 + 1013904223) >>> 0; return s % n }
}
// One status event, as one change: the new event follows the last one.
function recordEvent(handle, kind, actor) {
  handle.change(d => {
    const last = d.events[d.events.length - 1]
    d.events.push(event(kind, actor, [last.id]))
  })
}
// One note appended to the notes text, as one change.
function addNote(handle, text) {
  handle.change(d => { A.splice(d, ["notes"], d.notes.length, 0, text + "\n") })
}
const heads = handle => A.getHeads(handle.doc())
const docId = url => url.replace(/^automerge:/, "")
const sameHeads = (a, b) => a.length === b.length && [...a].sort().join() === [...b].sort().join()

// ---- the server ----

async function server() {
  const traffic = { in: { bytes: 0, messages: 0 }, out: { bytes: 0, messages: 0 } }
  const wss = new WebSocketServer({ port: int("port"), host: "127.0.0.1" })
  // Count frames before the adapter's own listener sees them.
  wss.on("connection", socket => {
    socket.on("message", data => { traffic.in.bytes += data.length; traffic.in.messages++ })
    const send = socket.send.bind(socket)
    socket.send = (data, ...rest) => { traffic.out.bytes += data.byteLength ?? data.length; traffic.out.messages++; return send(data, ...rest) }
  })
  const repo = new Repo({
    network: [new WebSocketServerAdapter(wss)],
    storage: new NodeFSStorageAdapter(args.dir),
    peerId: `sync-server-${process.pid}`,
    // The usual sync-server setting: answer requests, do not announce documents.
    sharePolicy: async () => false,
  })
  const body = req => new Promise(resolve => {
    let s = ""; req.on("data", c => (s += c)); req.on("end", () => resolve(s ? JSON.parse(s) : {}))
  })
  http.createServer(async (req, res) => {
    const reply = obj => { res.writeHead(200, { "content-type": "application/json" }); res.end(JSON.stringify(obj)) }
    try {
      if (req.url === "/memory") return reply(memory())
      if (req.url === "/reset-peak") { fs.writeFileSync("/proc/self/clear_refs", "5"); return reply({}) }
      if (req.url === "/traffic") return reply(traffic)
      if (req.url === "/traffic/reset") { traffic.in = { bytes: 0, messages: 0 }; traffic.out = { bytes: 0, messages: 0 }; return reply({}) }
      if (req.url === "/change") {
        // Server-side edits (the "relay side" of the reconnect scenario).
        const { urls, kind } = await body(req)
        const out = {}
        for (const url of urls) {
          const handle = await repo.find(url)
          recordEvent(handle, kind, "server")
          out[url] = heads(handle)
        }
        await repo.flush()
        return reply(out)
      }
      if (req.url === "/check") {
        // How many of these documents the server does not hold with exactly these heads.
        const { docs } = await body(req)
        let missing = 0
        for (const [url, want] of Object.entries(docs)) {
          const handle = repo.handles[docId(url)]
          if (!(handle && handle.isReady() && sameHeads(heads(handle), want))) missing++
        }
        return reply({ missing })
      }
      res.writeHead(404); res.end()
    } catch (e) { res.writeHead(500); res.end(String(e)) }
  }).listen(int("control"), "127.0.0.1", () => console.log(JSON.stringify({ ready: true })))
}

// The server's control endpoint, for the client modes (`--control PORT`).
function control(path, payload) {
  return controlClient(args.control)(path, payload)
}
// Poll the server until it holds these heads (short requests: a long-held one was
// cut by the HTTP client while the server was busy syncing).
async function awaitServer({ docs }, timeoutMs = 600000) {
  const until = now() + timeoutMs
  let missing = Object.keys(docs).length
  while (now() < until) {
    ;({ missing } = await control("/check", { docs }))
    if (missing === 0) break
    await sleep(50)
  }
  return { missing }
}
const wsUrl = () => `ws://127.0.0.1:${args.port}`
async function connected(repo) {
  // Until the server has answered the join (a peer exists).
  while (repo.peers.length === 0) await sleep(5)
}

// ---- clients ----

// Find every document, at most `--concurrency` requests in flight (default 50; with
// far more, requests queue at the server past automerge-repo's 60 s timeouts and the
// finds fail). A handle whose request timed out on the client (automerge-repo marks it
// "unavailable" after its request delay while the server is still busy) is waited on
// until the document arrives; how many did is reported. At `deadline` (a
// performance.now() time) no further find starts and the ones in flight are left:
// the caller reports how far it got, as a bound.
let retries = 0
async function findAll(repo, urls, deadline = Infinity) {
  const out = new Array(urls.length)
  let next = 0
  const inTime = () => now() < deadline
  const untilDeadline = () => sleep(Math.max(0, Math.min(600000, deadline - now())))
  async function worker() {
    while (next < urls.length && inTime()) {
      const i = next++
      const found = repo.find(urls[i], { allowableStates: ["ready", "unavailable"] })
      const handle = await Promise.race([found, untilDeadline()])
      if (!handle) return
      if (!handle.isReady()) {
        retries++
        await Promise.race([handle.whenReady(["ready"]), untilDeadline()])
        if (!handle.isReady()) {
          if (!inTime()) return
          throw new Error(`${urls[i]} never arrived`)
        }
      }
      out[i] = handle
    }
  }
  await Promise.all(Array.from({ length: Math.min(int("concurrency", 50), urls.length) }, worker))
  const found = out.filter(Boolean).length
  return { handles: out, found, capped: found < urls.length }
}
const capMs = () => (args["cap-s"] === undefined ? Infinity : Number(args["cap-s"]) * 1000)
async function seed() {
  // Straight into the server's storage with plain Automerge (3 changes per order, as
  // a Repo would make them): creating 10,000 handles in one Repo slows down with
  // every handle and took over 5 minutes here, and seeding is not what is measured.
  const storage = new NodeFSStorageAdapter(args.dir)
  const urls = []
  const started = now()
  let saved = 0
  for (let i = 0; i < int("docs"); i++) {
    let doc = A.from(order(`S${String(1 + (i % 10)).padStart(2, "0")}`, i, "seeder"))
    for (const kind of ["confirmed", "picking"]) {
      doc = A.change(doc, d => { const last = d.events[d.events.length - 1]; d.events.push(event(kind, "seeder", [last.id])) })
    }
    const url = generateAutomergeUrl()
    const bytes = A.save(doc)
    saved += bytes.length
    await storage.save([parseAutomergeUrl(url).documentId, "snapshot", "seed"], bytes)
    urls.push(url)
  }
  fs.writeFileSync(args.out, JSON.stringify(urls))
  console.log(JSON.stringify({ seed_ms: now() - started, saved_bytes: saved }))
}

async function initial() {
  const urls = JSON.parse(fs.readFileSync(args.urls, "utf8"))
  const adapter = new WebSocketClientAdapter(wsUrl())
  const repo = new Repo({ storage: new NodeFSStorageAdapter(args.dir), network: [adapter] })
  await connected(repo)
  const started = now()
  const { handles, found, capped } = await findAll(repo, urls, started + capMs())
  if (!capped) await repo.flush()
  const sync_ms = now() - started
  const result = { sync_ms, documents: found, capped, retries, ...memory() }
  // The server's side of the initial sync, before the warm reconnect resets it.
  if (args.control) result.server = { traffic: await control("/traffic"), memory: await control("/memory") }
  if (args["warm-changed"] !== undefined && !capped) {
    result.warm = await warmReconnect(repo, adapter, urls, handles, int("warm-changed"))
  }
  console.log(JSON.stringify(result))
  process.exit(0)
}

// Reconnect with the client process kept up (all documents loaded): it goes offline
// by removing its network adapter, the server records `changed` events on the first
// documents, the client `changed` on the next ones, then the client adds a websocket
// adapter again and both sync. Measured from adding the adapter until each side
// holds the other's edits; the server's traffic counters cover that part only.
async function warmReconnect(repo, adapter, urls, handles, changed) {
  // As the ingest writers go offline (the peer list does not empty on removal).
  repo.networkSubsystem.removeNetworkAdapter(adapter)
  await sleep(200)
  const serverHeads = await control("/change", { urls: urls.slice(0, changed), kind: "packed" })
  const mine = {}
  for (const handle of handles.slice(changed, 2 * changed)) {
    recordEvent(handle, "packed", "device")
    mine[handle.url] = heads(handle)
  }
  await repo.flush()
  await control("/traffic/reset")
  const started = now()
  repo.networkSubsystem.addNetworkAdapter(new WebSocketClientAdapter(wsUrl()))
  await connected(repo)
  const byUrl = new Map(handles.map(h => [h.url, h]))
  const theirs = Object.entries(serverHeads)
  while (!theirs.every(([url, want]) => sameHeads(heads(byUrl.get(url)), want))) await sleep(5)
  const { missing } = await awaitServer({ docs: mine })
  const sync_ms = now() - started
  const traffic = await control("/traffic")
  return { sync_ms, missing, traffic }
}

async function reconnect() {
  const urls = JSON.parse(fs.readFileSync(args.urls, "utf8"))
  const serverHeads = JSON.parse(fs.readFileSync(args["server-heads"], "utf8"))
  const from = int("edit-from"), count = int("count")
  let started = now()
  const repo = new Repo({ storage: new NodeFSStorageAdapter(args.dir), network: [] })
  // Offline edits, as the device makes them before it reconnects.
  const mine = {}
  for (const url of urls.slice(from, from + count)) {
    const handle = await repo.find(url)
    recordEvent(handle, "packed", "device")
    mine[url] = heads(handle)
  }
  await repo.flush()
  const edit_ms = now() - started
  started = now()
  repo.networkSubsystem.addNetworkAdapter(new WebSocketClientAdapter(wsUrl()))
  await connected(repo)
  // automerge-repo syncs the documents a client has loaded: load them all.
  const { handles, found, capped } = await findAll(repo, urls, started + capMs())
  if (capped) {
    console.log(JSON.stringify({ sync_ms: now() - started, documents: found, capped, edit_ms, retries, ...memory() }))
    process.exit(0)
  }
  const byUrl = new Map(handles.map(h => [h.url, h]))
  // Converged: the server's edits are here, and ours are on the server.
  const theirs = Object.entries(serverHeads)
  while (!theirs.every(([url, want]) => sameHeads(heads(byUrl.get(url)), want))) await sleep(5)
  const { missing } = await awaitServer({ docs: mine })
  await repo.flush()
  console.log(JSON.stringify({ sync_ms: now() - started, documents: found, capped, edit_ms, missing, retries, ...memory() }))
  process.exit(0)
}

async function ingest() {
  const writers = int("writers"), orders = int("orders"), changes = int("changes")
  const repos = [], docs = []
  for (let w = 0; w < writers; w++) {
    const adapter = new WebSocketClientAdapter(wsUrl())
    const repo = new Repo({ network: [adapter] })
    const handles = []
    for (let i = 0; i < orders; i++) handles.push(repo.create(order(`W${w}`, i, `writer-${w}`)))
    repos.push({ repo, adapter, handles })
  }
  for (const { repo } of repos) await connected(repo)
  const want = () => Object.fromEntries(repos.flatMap(r => r.handles.map(h => [h.url, heads(h)])))
  let { missing } = await awaitServer({ docs: want() })
  if (missing) throw new Error(`setup: ${missing} documents missing on the server`)
  // The small changes are made offline, then every writer reconnects: the same
  // work as Waybill's writers uploading their outboxes.
  for (const r of repos) { r.repo.networkSubsystem.removeNetworkAdapter(r.adapter) }
  await sleep(200)
  for (const r of repos) for (let k = 0; k < changes; k++) addNote(r.handles[k % orders], `Call on arrival (${k}).`)
  const started = now()
  for (const r of repos) r.repo.networkSubsystem.addNetworkAdapter(new WebSocketClientAdapter(wsUrl()))
  ;({ missing } = await awaitServer({ docs: want() }))
  const wall_ms = now() - started
  console.log(JSON.stringify({ wall_ms, changes: writers * changes, missing }))
  process.exit(0)
}

async function fanout() {
  const devices = int("devices"), rounds = int("rounds")
  const writer = new Repo({ network: [new WebSocketClientAdapter(wsUrl())] })
  await connected(writer)
  const doc = writer.create(order("F1", 0, "writer"))
  recordEvent(doc, "confirmed", "writer"); recordEvent(doc, "picking", "writer")
  await awaitServer({ docs: { [doc.url]: heads(doc) } })
  const clients = []
  const started = now()
  for (let i = 0; i < devices; i += 50) {
    await Promise.all(Array.from({ length: Math.min(50, devices - i) }, async () => {
      const repo = new Repo({ network: [new WebSocketClientAdapter(wsUrl())] })
      await connected(repo)
      const handle = await repo.find(doc.url)
      clients.push({ repo, handle })
    }))
  }
  const connect_ms = now() - started
  const latencies = []
  for (let round = 0; round < rounds; round++) {
    let reached = 0, sent = 0
    const done = new Promise(resolve => {
      for (const { handle } of clients) handle.once("change", () => { latencies.push(now() - sent); if (++reached === devices) resolve() })
    })
    sent = now()
    addNote(doc, `Customer called (${round}).`)
    await Promise.race([done, sleep(60000)])
    if (reached < devices) throw new Error(`round ${round}: ${reached} of ${devices} reached`)
    await sleep(200)
  }
  console.log(JSON.stringify({ latencies, connect_ms, ...memory() }))
  process.exit(0)
}

// A connected automerge-repo device at the protocol level: a websocket that has
// joined (join → peer), like Waybill's light devices.
function joinOne(i) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(wsUrl())
    ws.binaryType = "arraybuffer"
    ws.on("open", () => ws.send(cbor.encode({ type: "join", senderId: `idle-${i}-${process.pid}`, peerMetadata: {}, supportedProtocolVersions: ["1"] })))
    ws.once("message", data => { const m = cbor.decode(new Uint8Array(data)); m.type === "peer" ? resolve(ws) : reject(new Error(m.type)) })
    ws.on("error", reject)
  })
}

async function idle() {
  const counts = args.counts.split(",").map(Number).sort((a, b) => a - b)
  await sleep(500)
  const base = (await control("/memory")).rss_kib
  const own = memory().rss_kib
  const sockets = [], out = []
  for (const target of counts) {
    const started = now()
    while (sockets.length < target) {
      const batch = Math.min(200, target - sockets.length)
      sockets.push(...await Promise.all(Array.from({ length: batch }, (_, k) => joinOne(sockets.length + k))))
    }
    const connect_ms = now() - started
    await sleep(3000)
    const rss = (await control("/memory")).rss_kib
    out.push({ devices: target, base_kib: base, rss_kib: rss, connect_ms, client_kib: memory().rss_kib - own })
  }
  console.log(JSON.stringify({ points: out }))
  process.exit(0)
}

const roles = { server, seed, initial, reconnect, ingest, fanout, idle }
if (!roles[role]) { console.error(`unknown role ${role}`); process.exit(2) }
roles[role]().catch(e => { console.error(e?.stack ?? String(e)); process.exit(1) })
