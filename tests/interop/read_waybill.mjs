#!/usr/bin/env node
// Reads a Waybill document (order or delivery) with the JavaScript Automerge
// implementation, checks it against SCHEMA.md field by field (exact Automerge types,
// not just JavaScript types), prints a JSON summary on stdout, and optionally writes
// the document back with one new status event and a note, the way SCHEMA.md says a
// non-Rust writer must.
//
//   node read_waybill.mjs IN [OUT] [--event KIND] [--note TEXT] [--actor ID]
//                                 [--lat DEG --lon DEG] [--naive] [--schema-version N]
//
// IN    a document as saved by Waybill (`Replica::export`) or any Automerge save.
// OUT   where to write the modified document (omit to only read and check).
// --event KIND        kind of the appended event (default: `confirmed` on an order,
//                     `in_transit` on a delivery).
// --note TEXT         line appended to the document's `notes` text.
// --actor ID          device id recorded as the event's actor (default `js-interop`).
// --lat/--lon         record a location on the event (stored as f64 even when integral).
// --naive             negative check: append the event as a plain object literal, the
//                     way JS code would by default. The result does NOT match the schema
//                     (text instead of str, f64 instead of int); Waybill must refuse it.
// --schema-version N  negative check: also overwrite `schema_version` with N.
//
// Exit status: 0 when IN matches the schema (and OUT was written and matches it, unless
// --naive or --schema-version made it wrong on purpose); 1 on any schema mismatch,
// with every mismatch listed in the summary's `errors` and on stderr; 2 on bad usage
// or an unreadable file.

import * as A from "@automerge/automerge";
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import { parseArgs } from "node:util";

/** The newest schema version this reader understands (SCHEMA.md, "Versioning"). */
const SUPPORTED_SCHEMA_VERSION = 1;

const AUTOMERGE_JS_VERSION = (() => {
  try {
    const url = new URL("./node_modules/@automerge/automerge/package.json", import.meta.url);
    return JSON.parse(fs.readFileSync(url, "utf8")).version;
  } catch {
    return "unknown";
  }
})();

// ---------------------------------------------------------------------------------
// The schema, as data. Every type is the exact Automerge value type (SCHEMA.md).

const str = (extra = {}) => ({ t: "str", ...extra });
const int = (extra = {}) => ({ t: "int", ...extra });
const f64 = (extra = {}) => ({ t: "f64", ...extra });
const text = () => ({ t: "text" });
const list = (of) => ({ t: "list", of });
const map = (fields) => ({ t: "map", fields });
const nullable = (inner) => ({ nullable: inner });
const oneOf = (...names) => str({ oneOf: names });

const ORDER_KINDS = [
  "placed", "confirmed", "picking", "packed", "ready_for_pickup", "handed_over",
  "completed", "cancelled", "return_requested", "returned", "conflict_resolved",
];
const DELIVERY_KINDS = [
  "assigned", "picked_up", "in_transit", "arrived", "delivered", "failed_attempt",
  "returned_to_store", "conflict_resolved",
];

const ORDER_ID = /^ord_[A-Za-z0-9_-]{1,64}$/;
const DELIVERY_ID = /^dlv_[A-Za-z0-9_-]{1,64}$/;
const CURRENCY = /^[A-Z]{3}$/;

const hlc = map({ wall_ms: int(), counter: int({ min: 0 }) });
const geo = map({
  lat: f64({ min: -90, max: 90 }),
  lon: f64({ min: -180, max: 180 }),
  accuracy_m: nullable(f64({ min: 0 })),
});
const event = (kinds) =>
  map({
    id: str({ nonEmpty: true }),
    kind: oneOf(...kinds),
    actor: str({ nonEmpty: true }),
    at: hlc,
    after: list(str()),
    location: nullable(geo),
    note: nullable(str()),
    resolution: nullable(oneOf(...kinds.filter((k) => k !== "conflict_resolved"))),
    courier: nullable(str()),
  });

const ORDER = map({
  schema_version: int({ min: 1 }),
  type: str({ equals: "order" }),
  id: str({ pattern: ORDER_ID }),
  number: str({ nonEmpty: true }),
  channel: oneOf("web", "app", "pos", "call_centre", "social"),
  store: str({ nonEmpty: true }),
  customer: map({ id: str({ nonEmpty: true }), name: str({ nonEmpty: true }), phone: str(), address: str() }),
  currency: str({ pattern: CURRENCY }),
  fulfilment: oneOf("delivery", "pickup", "ship_from_store"),
  lines: list(
    map({
      id: str({ nonEmpty: true }),
      sku: str({ nonEmpty: true }),
      name: str({ nonEmpty: true }),
      qty: int({ min: 1 }),
      unit_price: int({ min: 0 }),
    }),
  ),
  deliveries: list(str({ pattern: DELIVERY_ID })),
  payments: list(
    map({
      id: str({ nonEmpty: true }),
      kind: oneOf("payment", "refund", "store_credit"),
      method: oneOf("cash", "card", "online", "in_app", "account"),
      amount: int({ min: 1 }),
      currency: str({ pattern: CURRENCY }),
      delivery_id: nullable(str({ pattern: DELIVERY_ID })),
      reference: nullable(str()),
      actor: str({ nonEmpty: true }),
      at: hlc,
    }),
  ),
  returns: list(
    map({
      id: str({ nonEmpty: true }),
      lines: list(map({ sku: str({ nonEmpty: true }), qty: int({ min: 1 }) })),
      reason: str(),
      delivery_id: nullable(str({ pattern: DELIVERY_ID })),
      actor: str({ nonEmpty: true }),
      at: hlc,
    }),
  ),
  notes: text(),
  events: list(event(ORDER_KINDS)),
  created_at: hlc,
  created_by: str({ nonEmpty: true }),
});

const DELIVERY = map({
  schema_version: int({ min: 1 }),
  type: str({ equals: "delivery" }),
  id: str({ pattern: DELIVERY_ID }),
  order_id: str({ pattern: ORDER_ID }),
  store: str({ nonEmpty: true }),
  stop: map({
    address: str(),
    geo: nullable(geo),
    contact_name: nullable(str()),
    contact_phone: nullable(str()),
  }),
  window: nullable(map({ start_ms: int(), end_ms: int() })),
  proofs: list(
    map({
      id: str({ nonEmpty: true }),
      kind: oneOf("signature", "photo"),
      blob: str({ nonEmpty: true }),
      media_type: str({ nonEmpty: true }),
      actor: str({ nonEmpty: true }),
      at: hlc,
    }),
  ),
  notes: text(),
  events: list(event(DELIVERY_KINDS)),
  created_at: hlc,
  created_by: str({ nonEmpty: true }),
});

// ---------------------------------------------------------------------------------
// Reading with exact types. The materialised JS view cannot tell an Automerge `int`
// from an integral `f64`, so the checker reads through the backend's getWithType.

class Checker {
  constructor(doc) {
    this.backend = A.getBackend(doc);
    this.errors = [];
    this.unknown = [];
  }

  fail(path, message) {
    this.errors.push(`${path}: ${message}`);
  }

  /** Read `prop` of object `obj` against `spec`; returns a plain JS value. */
  at(spec, obj, prop, path) {
    const got = this.backend.getWithType(obj, prop);
    if (got == null) {
      this.fail(path, `missing (every field must be present${spec.nullable ? "; write null when absent" : ""})`);
      return undefined;
    }
    return this.value(spec, got[0], got[1], path);
  }

  value(spec, type, value, path) {
    if (spec.nullable) {
      if (type === "null") return null;
      spec = spec.nullable;
    } else if (type === "null") {
      this.fail(path, `is null, expected ${spec.t}`);
      return undefined;
    }
    if (type !== spec.t) {
      this.fail(path, `is an Automerge ${type}, expected ${spec.t}${hint(spec.t, type)}`);
      return undefined;
    }
    switch (spec.t) {
      case "str":
        if (spec.equals !== undefined && value !== spec.equals) this.fail(path, `is ${JSON.stringify(value)}, expected ${JSON.stringify(spec.equals)}`);
        if (spec.oneOf && !spec.oneOf.includes(value)) this.fail(path, `${JSON.stringify(value)} is not one of ${spec.oneOf.join(", ")}`);
        if (spec.pattern && !spec.pattern.test(value)) this.fail(path, `${JSON.stringify(value)} does not match ${spec.pattern}`);
        if (spec.nonEmpty && value.trim() === "") this.fail(path, "must not be empty");
        return value;
      case "int": {
        const big = BigInt(value);
        if (spec.min !== undefined && big < BigInt(spec.min)) this.fail(path, `${big} is below ${spec.min}`);
        return big;
      }
      case "f64":
        if (!Number.isFinite(value)) this.fail(path, `${value} is not a finite number`);
        if (spec.min !== undefined && value < spec.min) this.fail(path, `${value} is below ${spec.min}`);
        if (spec.max !== undefined && value > spec.max) this.fail(path, `${value} is above ${spec.max}`);
        return value;
      case "text":
        return this.backend.text(value);
      case "list": {
        const out = [];
        const n = this.backend.length(value);
        for (let i = 0; i < n; i++) out.push(this.at(spec.of, value, i, `${path}[${i}]`));
        return out;
      }
      case "map": {
        const out = {};
        for (const [key, fieldSpec] of Object.entries(spec.fields)) {
          out[key] = this.at(fieldSpec, value, key, path ? `${path}.${key}` : key);
        }
        for (const key of this.backend.keys(value)) {
          if (!(key in spec.fields)) this.unknown.push(path ? `${path}.${key}` : key);
        }
        return out;
      }
      default:
        throw new Error(`bad spec ${spec.t}`);
    }
  }
}

function hint(expected, found) {
  if (expected === "str" && found === "text") return " (a JS string becomes text: write new ImmutableString(s))";
  if (expected === "int" && found === "f64") return " (write new Int(n), assigned as a single property)";
  if (expected === "f64" && found === "int") return " (an integral JS number becomes int: write new Float64(x))";
  return "";
}

/** Check a whole document; returns { errors, unknown, doc } (doc is plain JS). */
function check(doc) {
  const c = new Checker(doc);
  // The header first, as Waybill's reader does: a newer schema is refused outright.
  const version = c.at(int(), "_root", "schema_version", "schema_version");
  if (version !== undefined && version > BigInt(SUPPORTED_SCHEMA_VERSION)) {
    c.errors = [`schema_version: document schema version ${version} is newer than the supported ${SUPPORTED_SCHEMA_VERSION}; upgrade this reader`];
    return { errors: c.errors, unknown: [], doc: null, type: null };
  }
  const type = c.at(oneOf("order", "delivery"), "_root", "type", "type");
  if (c.errors.length > 0) return { errors: c.errors, unknown: [], doc: null, type: null };
  const plain = c.value(type === "order" ? ORDER : DELIVERY, "map", "_root", "");

  // Cross-field rules a writer must keep.
  if (type === "order") {
    plain.payments?.forEach((p, i) => {
      if (p && p.currency !== undefined && p.currency !== plain.currency) {
        c.fail(`payments[${i}].currency`, `${p.currency} is not the order's ${plain.currency}`);
      }
    });
  }
  if (plain.window && plain.window.start_ms > plain.window.end_ms) c.fail("window", "start_ms is after end_ms");
  return { errors: c.errors, unknown: c.unknown, doc: plain, type };
}

// ---------------------------------------------------------------------------------
// Summary (nothing fancy: no status fold, just what is plainly there).

function summarise(doc, type) {
  const events = doc.events ?? [];
  const referenced = new Set();
  for (const e of events) for (const a of e?.after ?? []) if (a !== e.id) referenced.add(a);
  const ids = [...new Set(events.map((e) => e?.id))];
  const summary = {
    type,
    id: doc.id,
    schema_version: doc.schema_version,
    event_kinds: events.map((e) => e?.kind),
    event_ids: events.map((e) => e?.id),
    frontier: ids.filter((id) => !referenced.has(id)),
    notes: doc.notes,
  };
  if (type === "order") {
    summary.number = doc.number;
    summary.currency = doc.currency;
    summary.deliveries = doc.deliveries;
    summary.payment_total = sumEntries(doc.payments, "payment");
    summary.balance = balance(doc);
  } else {
    summary.order_id = doc.order_id;
    const assigned = events.filter((e) => e?.kind === "assigned" && e.courier != null);
    summary.couriers = assigned.map((e) => e.courier);
    summary.proofs = (doc.proofs ?? []).length;
  }
  return summary;
}

/** Sum of ledger amounts of one kind, each entry id counted once (first occurrence). */
function sumEntries(entries, kind) {
  const seen = new Set();
  let total = 0n;
  for (const e of entries ?? []) {
    if (!e || seen.has(e.id)) continue;
    seen.add(e.id);
    if (e.kind === kind) total += e.amount;
  }
  return total;
}

/** SCHEMA.md "Money": due = total − returned − paid + refunded + credited. */
function balance(order) {
  const total = (order.lines ?? []).reduce((s, l) => s + l.qty * l.unit_price, 0n);
  const seen = new Set();
  let returned = 0n;
  for (const r of order.returns ?? []) {
    if (!r || seen.has(r.id)) continue;
    seen.add(r.id);
    for (const rl of r.lines ?? []) {
      const line = (order.lines ?? []).find((l) => l.sku === rl.sku);
      returned += rl.qty * (line ? line.unit_price : 0n);
    }
  }
  const paid = sumEntries(order.payments, "payment");
  const refunded = sumEntries(order.payments, "refund");
  const credited = sumEntries(order.payments, "store_credit");
  return { total, returned, paid, refunded, credited, due: total - returned - paid + refunded + credited };
}

// ---------------------------------------------------------------------------------
// Writing the way SCHEMA.md says a JS writer must.

/** `<prefix><uuid v7, 32 lower-case hex digits>`, like Waybill's entry ids. */
function entryId(prefix) {
  const b = randomBytes(16);
  let ms = BigInt(Date.now());
  for (let i = 5; i >= 0; i--) {
    b[i] = Number(ms & 0xffn);
    ms >>= 8n;
  }
  b[6] = (b[6] & 0x0f) | 0x70;
  b[8] = (b[8] & 0x3f) | 0x80;
  return prefix + b.toString("hex");
}

/** A hybrid-logical-clock tick after every timestamp already in the document. */
function nextHlc(doc) {
  const stamps = [doc.created_at];
  for (const key of ["events", "payments", "returns", "proofs"]) for (const e of doc[key] ?? []) stamps.push(e.at);
  let last = { wall_ms: 0n, counter: 0n };
  for (const s of stamps) {
    if (s && (s.wall_ms > last.wall_ms || (s.wall_ms === last.wall_ms && s.counter > last.counter))) last = s;
  }
  const now = BigInt(Date.now());
  return now > last.wall_ms ? { wall_ms: now, counter: 0n } : { wall_ms: last.wall_ms, counter: last.counter + 1n };
}

/**
 * Put a value with exact Automerge types, one property at a time. Nested object and
 * array literals go through @automerge/automerge's batch path, which (in 3.5.0)
 * stores 0 and negative integers as f64 and turns Int/Float64 wrappers into maps;
 * single-property puts honour the wrappers. Bare JS strings and numbers are refused
 * here because their Automerge type would be a guess.
 */
function put(parent, key, value) {
  if (value === null || value instanceof A.ImmutableString || value instanceof A.Int || value instanceof A.Float64) {
    parent[key] = value;
  } else if (Array.isArray(value)) {
    parent[key] = [];
    const target = parent[key];
    value.forEach((v, i) => put(target, i, v));
  } else if (typeof value === "object") {
    parent[key] = {};
    const target = parent[key];
    for (const [k, v] of Object.entries(value)) put(target, k, v);
  } else {
    throw new TypeError(`${String(key)}: wrap ${typeof value} values in ImmutableString, Int or Float64`);
  }
}

function appendNote(d, note) {
  const len = d.notes.length;
  A.splice(d, ["notes"], len, 0, len === 0 ? note : `\n${note}`);
}

function writeModified(doc, plain, type, opts) {
  const kinds = type === "order" ? ORDER_KINDS : DELIVERY_KINDS;
  const kind = opts.event ?? (type === "order" ? "confirmed" : "in_transit");
  if (!kinds.includes(kind)) usage(`--event: \`${kind}\` is not a ${type} event`);
  if (kind === "conflict_resolved" || kind === "assigned") {
    usage(`--event: this script does not write \`${kind}\` (it needs a resolution or a courier)`);
  }
  const at = nextHlc(plain);
  const after = [...new Set(plain.events.map((e) => e.id))];
  const id = entryId("ev_");
  const actor = opts.actor ?? "js-interop";
  const note = opts.note ?? `${kind} from the JavaScript interop check`;
  const location =
    opts.lat !== undefined && opts.lon !== undefined ? { lat: Number(opts.lat), lon: Number(opts.lon), accuracy_m: null } : null;

  const next = A.change(doc, { message: `${kind} (js interop)` }, (d) => {
    if (opts.naive) {
      // What JS code writes by default: strings become text, 0 becomes f64.
      d.events.push({ id, kind, actor, at: { wall_ms: Number(at.wall_ms), counter: Number(at.counter) }, after, location, note: null, resolution: null, courier: null });
    } else {
      const S = (s) => new A.ImmutableString(s);
      put(d.events, d.events.length, {
        id: S(id),
        kind: S(kind),
        actor: S(actor),
        at: { wall_ms: new A.Int(Number(at.wall_ms)), counter: new A.Int(Number(at.counter)) },
        after: after.map(S),
        location: location && { lat: new A.Float64(location.lat), lon: new A.Float64(location.lon), accuracy_m: null },
        note: null,
        resolution: null,
        courier: null,
      });
    }
    appendNote(d, note);
    if (opts["schema-version"] !== undefined) d.schema_version = new A.Int(Number(opts["schema-version"]));
  });
  fs.writeFileSync(opts.out, A.save(next));
  const recheck = check(A.load(fs.readFileSync(opts.out)));
  return {
    path: opts.out,
    event: { id, kind, actor, at, after, location },
    note,
    naive: Boolean(opts.naive),
    valid: recheck.errors.length === 0,
    errors: recheck.errors,
    heads: A.getHeads(next),
  };
}

// ---------------------------------------------------------------------------------

function usage(message) {
  process.stderr.write(`read_waybill: ${message}\nusage: node read_waybill.mjs IN [OUT] [--event KIND] [--note TEXT] [--actor ID] [--lat DEG --lon DEG] [--naive] [--schema-version N]\n`);
  process.exit(2);
}

function json(value) {
  return JSON.stringify(
    value,
    (_, v) => (typeof v === "bigint" ? (v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v.toString()) : v),
    2,
  );
}

function main() {
  let parsed;
  try {
    parsed = parseArgs({
      allowPositionals: true,
      options: {
        event: { type: "string" },
        note: { type: "string" },
        actor: { type: "string" },
        lat: { type: "string" },
        lon: { type: "string" },
        naive: { type: "boolean" },
        "schema-version": { type: "string" },
      },
    });
  } catch (e) {
    usage(e.message);
  }
  const [input, out, ...rest] = parsed.positionals;
  if (!input || rest.length > 0) usage("expected IN and optionally OUT");
  if ((parsed.values.lat === undefined) !== (parsed.values.lon === undefined)) usage("--lat and --lon go together");
  for (const k of ["lat", "lon", "schema-version"]) {
    if (parsed.values[k] !== undefined && !Number.isFinite(Number(parsed.values[k]))) usage(`--${k}: not a number`);
  }

  let bytes;
  try {
    bytes = new Uint8Array(fs.readFileSync(input));
  } catch (e) {
    usage(`cannot read ${input}: ${e.message}`);
  }
  let doc;
  try {
    doc = A.load(bytes);
  } catch (e) {
    process.stdout.write(`${json({ ok: false, file: input, errors: [`not an Automerge document: ${e.message}`] })}\n`);
    process.exit(1);
  }

  const result = check(doc);
  const summary = { ok: result.errors.length === 0, automerge_js: AUTOMERGE_JS_VERSION, file: input };
  if (result.errors.length > 0) {
    summary.errors = result.errors;
    process.stdout.write(`${json(summary)}\n`);
    for (const e of result.errors) process.stderr.write(`schema mismatch: ${e}\n`);
    process.exit(1);
  }
  Object.assign(summary, summarise(result.doc, result.type), { unknown_fields: result.unknown, heads: A.getHeads(doc) });
  summary.written = out ? writeModified(doc, result.doc, result.type, { ...parsed.values, out }) : null;
  process.stdout.write(`${json(summary)}\n`);
  const deliberatelyWrong = parsed.values.naive || parsed.values["schema-version"] !== undefined;
  if (summary.written && !summary.written.valid && !deliberatelyWrong) {
    for (const e of summary.written.errors) process.stderr.write(`written document mismatch: ${e}\n`);
    process.exit(1);
  }
}

main();
