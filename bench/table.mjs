// Prints the side-by-side table from the JSON figures of `waybill bench --json`
// and `bench/peer/run.mjs` (one object per line; several runs: the median is shown).
//
//   node bench/table.mjs waybill.jsonl peer.jsonl [--markdown]
//
// "ratio" says how many times better Waybill's figure is (above 1: Waybill ahead):
// peer ÷ Waybill for times, bytes, messages and memory; Waybill ÷ peer for rates.
import fs from "node:fs"

const [wFile, pFile] = process.argv.slice(2).filter(a => !a.startsWith("--"))
const markdown = process.argv.includes("--markdown")

function load(file) {
  const out = new Map()
  if (!file || !fs.existsSync(file)) return out
  for (const line of fs.readFileSync(file, "utf8").split("\n")) {
    if (!line.trim().startsWith("{")) continue
    const f = JSON.parse(line)
    const key = `${f.scenario}\t${f.metric}`
    if (!out.has(key)) out.set(key, { ...f, values: [] })
    out.get(key).values.push(f.value)
    // A figure the peer reached its wall-clock cap on is a lower bound.
    if (f.bound === "lower") out.get(key).bound = "lower"
  }
  for (const f of out.values()) {
    const v = [...f.values].sort((a, b) => a - b)
    f.median = v.length % 2 ? v[(v.length - 1) / 2] : (v[v.length / 2 - 1] + v[v.length / 2]) / 2
  }
  return out
}

export function ratio(unit, waybill, peer) {
  if (waybill === undefined || peer === undefined || waybill === 0 || peer === 0) return undefined
  if (unit === "ratio") return undefined
  return unit.endsWith("/s") ? waybill / peer : peer / waybill
}

const fmt = v => {
  if (v === undefined) return "—"
  const a = Math.abs(v)
  if (a >= 1e6) return v.toExponential(2)
  if (a >= 100) return Math.round(v).toLocaleString("en-US")
  if (a >= 10) return v.toFixed(1)
  return v.toFixed(2)
}

const w = load(wFile), p = load(pFile)
const keys = [...new Set([...w.keys(), ...p.keys()])]
const order = ["reconnect", "initial_sync", "relay_memory", "bulk_upload", "ingest", "fanout", "idle"]
const rank = k => { const i = order.findIndex(o => k.startsWith(o)); return i < 0 ? order.length : i }
keys.sort((a, b) => rank(a) - rank(b) || (a.startsWith("idle") && b.startsWith("idle") ? Number(a.split("\t")[0].slice(5)) - Number(b.split("\t")[0].slice(5)) : 0))
// The peer's restarted-client reconnect is compared with Waybill's reconnect, whose
// device process is always restarted.
const sameAs = { "reconnect\twall_time_restarted": "reconnect\twall_time" }
const rows = keys.map(k => {
  const [scenario, metric] = k.split("\t")
  const wf = w.get(k) ?? w.get(sameAs[k]), pf = p.get(k)
  const unit = (wf ?? pf).unit
  const r = ratio(unit, wf?.median, pf?.median)
  // For a capped peer figure the ratio is a bound too (times, bytes, messages,
  // memory: the peer would only have grown; no rate is ever capped).
  const bounded = pf?.bound === "lower"
  const peerCell = pf === undefined ? "—" : `${bounded ? "> " : ""}${fmt(pf.median)}`
  const ratioCell = r === undefined ? "—" : `${bounded ? "≥ " : ""}${fmt(r)}×`
  const note = pf?.note && wf?.note !== pf?.note ? `peer: ${bounded ? "CAPPED, a bound: " : ""}${pf.note}` : (wf ?? pf).note
  return [scenario, metric, unit, fmt(wf?.median), peerCell, ratioCell, note]
})
const head = ["scenario", "metric", "unit", "Waybill", "automerge-repo", "ratio", "scale / note"]
if (markdown) {
  console.log(`| ${head.join(" | ")} |`)
  console.log(`|${head.map(() => "---").join("|")}|`)
  for (const r of rows) console.log(`| ${r.join(" | ")} |`)
} else {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map(r => String(r[i]).length)))
  const line = r => r.map((c, i) => (i >= 3 && i <= 5 ? String(c).padStart(widths[i]) : String(c).padEnd(widths[i]))).join("  ")
  console.log(line(head))
  console.log(widths.map(n => "-".repeat(n)).join("  "))
  for (const r of rows) console.log(line(r))
}
