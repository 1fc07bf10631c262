// Runs the automerge-repo side of every scenario: a fresh sync server process per
// scenario, the client roles of peer.mjs in their own processes, and prints one
// JSON figure per line (the same scenario/metric names as `waybill bench --json`).
//
//   node run.mjs --work DIR --docs N --changed N --writers N --orders N --changes N
//                --devices N --rounds N --idle 1000,10000 [--scenarios sync,ingest,fanout,idle]
//                [--concurrency N] [--sync-cap-s S] [--restart-cap-s S (0: skip)]
import { spawn } from "node:child_process"
import fs from "node:fs"
import path from "node:path"
import net from "node:net"
import { fileURLToPath } from "node:url"
import { controlClient } from "./control.mjs"

const here = path.dirname(fileURLToPath(import.meta.url))
const args = {}
for (let i = 2; i < process.argv.length; i += 2) args[process.argv[i].replace(/^--/, "")] = process.argv[i + 1]
const n = (k, d) => (args[k] === undefined ? d : Number(args[k]))
const work = args.work ?? fs.mkdtempSync("/tmp/peer-bench-")
const scenarios = (args.scenarios ?? "sync,ingest,fanout,idle").split(",")
const sleep = ms => new Promise(r => setTimeout(r, ms))
const log = m => process.stderr.write(`[peer] ${m}\n`)
// Every server started, so a failed scenario does not leave one running.
const servers = new Set()
process.on("exit", () => { for (const child of servers) child.kill("SIGTERM") })

function emit(scenario, metric, value, unit, note = "") {
  console.log(JSON.stringify({ scenario, metric, value, unit, note }))
}
const mib = kib => kib / 1024

function freePort() {
  return new Promise(resolve => {
    const s = net.createServer().listen(0, "127.0.0.1", () => { const p = s.address().port; s.close(() => resolve(p)) })
  })
}

// Run a client role; resolves with its JSON output.
function client(role, extra, env = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(here, "peer.mjs"), role, ...extra], {
      stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, ...env },
    })
    let out = "", err = ""
    child.stdout.on("data", d => (out += d))
    child.stderr.on("data", d => (err += d))
    child.on("exit", code => {
      if (code !== 0) return reject(new Error(`${role} exited ${code}: ${err.trim().slice(-2000)}`))
      try { resolve(JSON.parse(out.trim().split("\n").pop())) } catch (e) { reject(new Error(`${role}: unreadable output ${out}`)) }
    })
  })
}

async function startServer(name) {
  const dir = path.join(work, name)
  fs.rmSync(dir, { recursive: true, force: true })
  fs.mkdirSync(dir, { recursive: true })
  const port = await freePort(), controlPort = await freePort()
  const child = spawn(process.execPath, ["--max-old-space-size=8192", path.join(here, "peer.mjs"), "server", "--port", String(port), "--control", String(controlPort), "--dir", dir], {
    stdio: ["ignore", "pipe", "inherit"],
  })
  servers.add(child)
  await new Promise((resolve, reject) => {
    child.stdout.once("data", resolve)
    child.once("exit", code => reject(new Error(`server exited ${code}`)))
  })
  const control = controlClient(controlPort)
  return { dir, port, controlPort, control, stop: () => { child.kill("SIGTERM"); servers.delete(child); return sleep(200) } }
}
const common = s => ["--port", String(s.port), "--control", String(s.controlPort)]

// Figures the peer could not finish within its cap carry `bound: "lower"`: the true
// value is at least this (table.mjs prints "> value" and the ratio as "≥ N×").
function emitBound(capped, scenario, metric, value, unit, note) {
  if (!capped) return emit(scenario, metric, value, unit, note)
  console.log(JSON.stringify({ scenario, metric, value, unit, note, bound: "lower" }))
}

// Wall-clock caps (s) for the peer's two long phases, so the full run fits its
// budget; a capped phase is reported as a bound with how far it got.
const syncCap = n("sync-cap-s", 600), restartCap = n("restart-cap-s", 120)
const concurrency = n("concurrency", 50)

async function sync() {
  const docs = n("docs", 10000), changed = n("changed", 100)
  const scale = `${docs} orders`
  // The orders go straight into the server's storage (not measured), as Waybill's
  // relay holds them before the fresh device connects.
  const serverDir = path.join(work, "sync-server")
  fs.rmSync(serverDir, { recursive: true, force: true })
  const urls = path.join(work, "urls.json")
  const seeded = await client("seed", ["--dir", serverDir, "--docs", String(docs), "--out", urls])
  log(`seeded ${docs} orders in ${(seeded.seed_ms / 1000).toFixed(1)} s`)
  const dir = serverDir
  const port = await freePort(), controlPort = await freePort()
  const child = spawn(process.execPath, ["--max-old-space-size=8192", path.join(here, "peer.mjs"), "server", "--port", String(port), "--control", String(controlPort), "--dir", dir], { stdio: ["ignore", "pipe", "inherit"] })
  servers.add(child)
  await new Promise(r => child.stdout.once("data", r))
  const control = controlClient(controlPort)
  const s = { port, controlPort }
  const clientDir = path.join(work, "sync-client")
  fs.rmSync(clientDir, { recursive: true, force: true })
  await control("/traffic/reset"); await control("/reset-peak")
  // The fresh client syncs every order, then (same process, all documents loaded)
  // goes offline, edits, and reconnects: the warm reconnect.
  let phase = Date.now()
  const first = await client("initial", [...common(s), "--dir", clientDir, "--urls", urls, "--concurrency", String(concurrency), "--cap-s", String(syncCap), "--warm-changed", String(changed)])
  log(`initial sync: ${first.documents} of ${docs} documents in ${(first.sync_ms / 1000).toFixed(1)} s (${concurrency} finds in flight${first.capped ? `; capped at ${syncCap} s` : ""}); with the warm reconnect ${((Date.now() - phase) / 1000).toFixed(1)} s`)
  let t = first.server.traffic; const relayPeak = first.server.memory.hwm_kib
  const capped = first.capped
  const reached = capped ? `capped at ${syncCap} s: ${first.documents} of ${docs} documents; ` : ""
  emitBound(capped, "initial_sync", "wall_time", first.sync_ms, "ms", `${reached}${scale}; ${concurrency} finds in flight, ${first.retries} outlived automerge-repo's 60 s request timeout and were awaited`)
  emitBound(capped, "initial_sync", "bytes_to_device", t.out.bytes, "bytes", `${reached}${scale}`)
  emitBound(capped, "initial_sync", "bytes_from_device", t.in.bytes, "bytes", `${reached}${scale}`)
  emitBound(capped, "initial_sync", "messages", t.in.messages + t.out.messages, "messages", `${reached}both ways`)
  if (!capped) emit("initial_sync", "bytes_per_saved_byte", (t.in.bytes + t.out.bytes) / seeded.saved_bytes, "ratio", `saved size ${seeded.saved_bytes} bytes`)
  emitBound(capped, "initial_sync", "device_peak_memory", mib(first.hwm_kib), "MiB", `${reached}client process VmHWM`)
  emitBound(capped, "initial_sync", "relay_peak_memory", mib(relayPeak), "MiB", `${reached}server VmHWM during the sync`)
  emitBound(capped, "relay_memory", "rss_holding_docs", mib(first.server.memory.rss_kib), "MiB", `${reached}${scale} (after the initial sync)`)
  if (capped) return log(`initial sync capped at ${syncCap} s (${first.documents} of ${docs} documents): the reconnect rows are not measured`), child.kill("SIGTERM")
  const rscale = `${docs} held, ${changed} changed each side`
  const warm = first.warm
  if (warm.missing) throw new Error(`warm reconnect: ${warm.missing} device edits missing on the server`)
  emit("reconnect", "wall_time", warm.sync_ms, "ms", `client process kept up (${docs} documents loaded), offline by removing its network adapter; Waybill's device process is restarted and reopens its store (< 1 ms)`)
  emit("reconnect", "bytes_to_device", warm.traffic.out.bytes, "bytes", `${rscale}; client kept up`)
  emit("reconnect", "bytes_from_device", warm.traffic.in.bytes, "bytes", `${rscale}; client kept up`)
  emit("reconnect", "messages", warm.traffic.in.messages + warm.traffic.out.messages, "messages", "both ways; client kept up")
  // The like-for-like variant: the client process is started again, as Waybill's
  // device is. Other documents change this time.
  if (restartCap > 0) {
    const serverHeads = await control("/change", { urls: JSON.parse(fs.readFileSync(urls, "utf8")).slice(2 * changed, 3 * changed), kind: "packed" })
    const headsFile = path.join(work, "server-heads.json")
    fs.writeFileSync(headsFile, JSON.stringify(serverHeads))
    await control("/traffic/reset")
    phase = Date.now()
    const again = await client("reconnect", [...common(s), "--dir", clientDir, "--urls", urls, "--server-heads", headsFile, "--edit-from", String(3 * changed), "--count", String(changed), "--concurrency", String(concurrency), "--cap-s", String(restartCap)])
    log(`reconnect, client restarted: ${again.documents} of ${docs} documents in ${(again.sync_ms / 1000).toFixed(1)} s${again.capped ? ` (capped at ${restartCap} s)` : ""}; process ${((Date.now() - phase) / 1000).toFixed(1)} s`)
    if (again.missing) throw new Error(`reconnect: ${again.missing} device edits missing on the server`)
    const note = again.capped
      ? `capped at ${restartCap} s: ${again.documents} of ${docs} documents loaded and synced; client process restarted, like Waybill's device`
      : `client process restarted, like Waybill's device; connect until converged; ${again.retries} finds outlived the 60 s request timeout`
    emitBound(again.capped, "reconnect", "wall_time_restarted", again.sync_ms, "ms", note)
  }
  child.kill("SIGTERM"); await sleep(200)
}

async function ingest() {
  const s = await startServer("ingest-server")
  const writers = n("writers", 50), changes = n("changes", 200)
  await s.control("/reset-peak")
  const r = await client("ingest", [...common(s), "--writers", String(writers), "--orders", String(n("orders", 10)), "--changes", String(changes)])
  if (r.missing) throw new Error(`ingest: ${r.missing} documents not converged`)
  const scale = `${writers} writers × ${changes} changes`
  emit("ingest", "changes_per_s", r.changes / (r.wall_ms / 1000), "changes/s", scale)
  emit("ingest", "wall_time", r.wall_ms, "ms", scale)
  emit("ingest", "relay_peak_memory", mib((await s.control("/memory")).hwm_kib), "MiB", "server VmHWM during the ingest")
  await s.stop()
}

function pct(v, p) {
  const s = [...v].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]
}

async function fanout() {
  const s = await startServer("fanout-server")
  const devices = n("devices", 1000), rounds = n("rounds", 5)
  const r = await client("fanout", [...common(s), "--devices", String(devices), "--rounds", String(rounds)], {})
  const scale = `${devices} devices × ${rounds} changes`
  for (const [m, p] of [["p50", 50], ["p99", 99], ["max", 100]]) emit("fanout", m, pct(r.latencies, p), "ms", `${scale}; ${devices} full Repos in one client process`)
  await s.stop()
}

async function idle() {
  const s = await startServer("idle-server")
  const counts = args.idle ?? "1000,10000"
  const r = await client("idle", [...common(s), "--counts", counts])
  for (const p of r.points) {
    emit(`idle_${p.devices}`, "relay_kib_per_device", (p.rss_kib - p.base_kib) / p.devices, "KiB", `server RSS ${mib(p.rss_kib).toFixed(1)} MiB, ${mib(p.base_kib).toFixed(1)} MiB before`)
    emit(`idle_${p.devices}`, "relay_rss", mib(p.rss_kib), "MiB", `${p.devices} devices`)
  }
  await s.stop()
}

const all = { sync, ingest, fanout, idle }
for (const name of scenarios) {
  const started = Date.now()
  log(`scenario ${name}`)
  try { await all[name]() } catch (e) { log(`scenario ${name} FAILED: ${e.message}`); process.exitCode = 1 }
  log(`scenario ${name} done in ${((Date.now() - started) / 1000).toFixed(1)} s`)
}
process.exit(process.exitCode ?? 0)
