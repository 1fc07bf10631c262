// The dashboard end to end: a relay on loopback, devices that sync a day's work,
// and headless Chromium checking what a dispatcher sees. Run by run.sh.
import { execFileSync, spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { createSocket } from "node:dgram";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const BIN = process.env.WAYBILL_BIN;
const ARTIFACTS = process.env.ARTIFACTS;
const data = mkdtempSync(join(tmpdir(), "waybill-browser-"));
let passed = 0;
let failed = 0;

function check(name, ok, detail = "") {
  if (ok) { passed++; console.log(`ok   ${name}`); } else { failed++; console.log(`FAIL ${name} ${detail}`); }
}
function equal(name, actual, expected) {
  const a = JSON.stringify(actual), e = JSON.stringify(expected);
  check(name, a === e, `: got ${a}, want ${e}`);
}

function waybill(args, input) {
  return execFileSync(BIN, args, { input, encoding: "utf8", stdio: ["pipe", "pipe", "pipe"] }).trim();
}
function device(name, ...args) { return waybill(["device", "--db", join(data, name + ".db"), ...args]); }
function createOrder(name, json) { return waybill(["device", "--db", join(data, name + ".db"), "order", "create", "--json", "-"], json); }

async function freeTcp() {
  return new Promise((resolve) => { const s = createServer().listen(0, "127.0.0.1", () => { const p = s.address().port; s.close(() => resolve(p)); }); });
}
async function freeUdp() {
  return new Promise((resolve) => { const s = createSocket("udp4"); s.bind(0, "127.0.0.1", () => { const p = s.address().port; s.close(() => resolve(p)); }); });
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function until(what, f, ms = 20000) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await f().catch(() => undefined);
    if (v) return v;
    if (Date.now() > end) throw new Error("timed out waiting for " + what);
    await sleep(100);
  }
}

const order = (number, channel) => JSON.stringify({
  number, channel, store: "S1", currency: "IRR", fulfilment: "delivery",
  customer: { id: "c-" + number, name: "Customer " + number, phone: "+98 912 000 0000", address: "12 Vali-Asr St, Tehran" },
  lines: [{ sku: "TEA-500", name: "Black tea 500 g", qty: 2, unit_price: 1850000 }],
});

const quic = await freeUdp();
const httpPort = await freeTcp();
const base = `http://127.0.0.1:${httpPort}`;
const relay = spawn(BIN, ["serve", "--data", data, "--listen", `127.0.0.1:${quic}`, "--http", `127.0.0.1:${httpPort}`],
  { stdio: ["ignore", "ignore", "pipe"], env: { ...process.env, RUST_LOG: "warn" } });
let relayLog = "";
relay.stderr.on("data", (d) => { relayLog += d; });

let browser;
try {
  await until("the relay's dashboard", async () => (await (await fetch(base + "/health")).json()).status === "ok");
  const token = waybill(["admin-token", "--data", data]);
  check("admin-token prints a token", token.startsWith("wbt_"), token);
  const api = async (path, options = {}) => {
    const res = await fetch(base + "/api/v1" + path, { ...options,
      headers: { Authorization: "Bearer " + token, "Content-Type": "application/json", ...(options.headers || {}) } });
    const body = await res.json();
    if (!res.ok) throw new Error(`${path}: ${res.status} ${JSON.stringify(body)}`);
    return body;
  };

  // Devices: a store tablet and two couriers' phones.
  const enrol = (name, ...flags) => {
    waybill(["enroll", "--data", data, ...flags, "--device-id", name, "--relay-addr", `127.0.0.1:${quic}`, "--out", join(data, name + ".cred")]);
    device(name, "init", "--credential", join(data, name + ".cred"));
  };
  enrol("tablet-1", "--role", "store", "--store", "S1");
  enrol("phone-7", "--role", "courier", "--courier", "courier-7");
  enrol("phone-8", "--role", "courier", "--courier", "courier-8");

  // A day's work. The tablet takes two orders in store and assigns couriers.
  const orderA = createOrder("tablet-1", order("POS-A", "pos"));
  device("tablet-1", "event", orderA, "confirmed");
  const dlvA = device("tablet-1", "assign", orderA, "--courier", "courier-7");
  const orderD = createOrder("tablet-1", order("WEB-D", "web"));
  device("tablet-1", "event", orderD, "confirmed");
  const dlvD = device("tablet-1", "assign", orderD, "--courier", "courier-8");
  device("tablet-1", "sync");

  // Channels feed three more in through the API, with delivery windows.
  const now = Date.now();
  const ingest = async (key, body) => (await api("/orders", { method: "POST", headers: { "Idempotency-Key": key }, body })).order.id;
  const orderB = await ingest("web-B", order("WEB-B", "web"));
  const orderC = await ingest("app-C", order("APP-C", "app"));
  await ingest("social-E", order("SOC-E", "social"));
  const assign = async (id, courier, start, end) =>
    (await api(`/orders/${id}/assign`, { method: "POST", body: JSON.stringify({ courier, window: { start_ms: start, end_ms: end } }) })).delivery.id;
  const dlvB = await assign(orderB, "courier-7", now - 3600000, now + 3600000);   // still open: on time
  const dlvC = await assign(orderC, "courier-8", now - 3 * 3600000, now - 2 * 3600000); // already over: late

  // Couriers sync, deliver, collect cash (courier-7 collects 700,000 short on B), sync.
  device("phone-7", "sync");
  for (const d of [dlvA, dlvB]) { device("phone-7", "event", d, "picked_up"); device("phone-7", "event", d, "delivered"); }
  device("phone-7", "pay", orderA, "--amount", "3700000", "--currency", "IRR", "--method", "cash", "--delivery", dlvA);
  device("phone-7", "pay", orderB, "--amount", "3000000", "--currency", "IRR", "--method", "cash", "--delivery", dlvB);
  device("phone-7", "sync");
  device("phone-8", "sync");
  device("phone-8", "event", dlvC, "picked_up");
  device("phone-8", "event", dlvC, "delivered");
  device("phone-8", "pay", orderC, "--amount", "3700000", "--currency", "IRR", "--method", "cash", "--delivery", dlvC);
  device("phone-8", "event", dlvD, "picked_up");
  device("phone-8", "event", dlvD, "failed_attempt", "--note", "nobody home");
  device("phone-8", "sync");
  await until("the dispatcher to hold the day", async () => (await api("/orders?status=completed")).items.length === 3);

  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  page.on("pageerror", (e) => check("no script error", false, String(e)));
  const cspViolations = [];
  page.on("console", (m) => { if (m.type() === "error" && /Content Security Policy/.test(m.text())) cspViolations.push(m.text()); });
  await page.goto(base + "/");

  // A wrong token is refused; the right one opens the board.
  await page.fill("#token", "wbt_wrong");
  await page.click("#login-form button");
  await page.waitForSelector("#login-error:not(:empty)");
  check("a wrong token is refused", await page.isVisible("#login"));
  await page.fill("#token", token);
  await page.click("#login-form button");
  await page.waitForSelector("[data-testid=order-column-completed]");
  const count = (kind, status) => page.textContent(`[data-testid=${kind}-column-${status}] [data-testid=count]`).catch(() => null);
  equal("board: completed orders", await count("order", "completed"), "3");
  equal("board: placed orders", await count("order", "placed"), "1");
  equal("board: confirmed orders", await count("order", "confirmed"), "1");
  equal("board: delivered deliveries", await count("delivery", "delivered"), "3");
  equal("board: failed attempts", await count("delivery", "failed_attempt"), "1");
  equal("board: cards in the completed column",
    (await page.$$("[data-testid=order-column-completed] [data-testid=order-card]")).length, 3);
  await page.waitForSelector("[data-testid=live].on");
  check("the board is live", true);
  await page.screenshot({ path: join(ARTIFACTS, "01-board.png"), fullPage: true });

  // A timeline: every event of order A and its delivery, who recorded it.
  await page.click("[data-testid=order-column-completed] [data-testid=order-card]:has-text('POS-A')");
  await page.waitForSelector("[data-testid=timeline-row]");
  const rows = await page.$$eval("[data-testid=timeline-row]", (trs) => trs.map((tr) =>
    [tr.querySelector("[data-testid=event-kind]").textContent.split(" ")[0], tr.querySelector("[data-testid=event-actor]").textContent]));
  equal("timeline: events and devices", rows, [
    ["placed", "tablet-1"], ["confirmed", "tablet-1"], ["assigned", "tablet-1"],
    ["picked_up", "phone-7"], ["delivered", "phone-7"], ["completed", "phone-7"],
  ]);
  equal("timeline: status", await page.textContent("[data-testid=order-status]"), "completed");
  equal("timeline: nothing due", await page.textContent("[data-testid=order-due]"), "0 IRR");
  await page.screenshot({ path: join(ARTIFACTS, "02-timeline.png"), fullPage: true });

  // KPIs over the last 24 hours.
  await page.click("#tabs button[data-tab=kpis]");
  await page.waitForSelector("[data-testid=kpi-orders]");
  const kpi = (id) => page.textContent(`[data-testid=kpi-${id}] [data-testid=kpi-value]`);
  equal("kpi: orders", await kpi("orders"), "5");
  equal("kpi: on-time rate (B on time, C late)", await kpi("on-time"), "50.0%");
  equal("kpi: failed-attempt rate (1 of 4 attempts)", await kpi("failed"), "25.0%");
  equal("kpi: return rate", await kpi("returns"), "0.0%");
  equal("kpi: unreconciled cash (B short)", await kpi("unreconciled"), "700,000 IRR");
  const k = await api(`/kpis?from_ms=${now - 86400000}&to_ms=${Date.now() + 1}`);
  check("kpi: fulfilment p50 and p90 over 3 completed orders",
    k.fulfilled === 3 && k.fulfilment_p50_ms <= k.fulfilment_p90_ms && k.fulfilment_p90_ms < 600000, JSON.stringify(k));
  const bars = (chart) => page.$$eval(`[data-testid=${chart}] [data-testid=bar]`, (gs) => gs.map((g) => [g.dataset.label, Number(g.dataset.value)]));
  equal("kpi chart: orders per channel", await bars("chart-channel"), [["app", 1], ["pos", 1], ["social", 1], ["web", 2]]);
  equal("kpi chart: cash per courier", await bars("chart-cash"), [["courier-7 IRR", 6700000], ["courier-8 IRR", 3700000]]);
  const columns = await page.$$eval("[data-testid=chart-time] [data-testid=column]", (cs) => cs.reduce((a, c) => a + Number(c.dataset.value), 0));
  equal("kpi chart: orders over time add up", columns, 5);
  await page.screenshot({ path: join(ARTIFACTS, "03-kpis.png"), fullPage: true });

  // Devices: the three that synced (offline now) and the relay's own dispatcher.
  await page.click("#tabs button[data-tab=devices]");
  await page.waitForSelector("[data-testid=device-row]");
  const devices = await page.$$eval("[data-testid=device-row]", (trs) => Object.fromEntries(trs.map((tr) =>
    [tr.dataset.device, tr.querySelector("[data-testid=device-online]").textContent.trim()])));
  equal("devices: online and offline", devices,
    { "relay-dispatcher": "online", "phone-7": "offline", "phone-8": "offline", "tablet-1": "offline" });
  await page.screenshot({ path: join(ARTIFACTS, "04-devices.png"), fullPage: true });

  // A live change: the tablet takes another order and syncs; the board shows it
  // without a reload.
  await page.click("#tabs button[data-tab=board]");
  await page.waitForSelector("[data-testid=order-column-placed]");
  await page.evaluate(() => { window.__sameDocument = true; });
  createOrder("tablet-1", order("POS-F", "pos"));
  device("tablet-1", "sync");
  // Selectors, not waitForFunction: the dashboard's CSP forbids eval.
  await page.waitForSelector('[data-testid=order-column-placed] [data-testid=count]:text-is("2")', { timeout: 15000 })
    .then(() => check("live: the new order appears without a reload", true))
    .catch((e) => check("live: the new order appears without a reload", false, String(e)));
  check("live: the page was not reloaded", await page.evaluate(() => window.__sameDocument === true));
  check("live: the new card is on the board", (await page.$("[data-testid=order-card]:has-text('POS-F')")) !== null);
  await page.screenshot({ path: join(ARTIFACTS, "05-live.png"), fullPage: true });

  // A conflict to act on: the store cancels an order its courier is delivering
  // offline. The dispatcher resolves it on the dashboard.
  const orderG = createOrder("tablet-1", order("POS-G", "pos"));
  device("tablet-1", "event", orderG, "confirmed");
  const dlvG = device("tablet-1", "assign", orderG, "--courier", "courier-7");
  device("tablet-1", "sync");
  device("phone-7", "sync");
  device("phone-7", "event", dlvG, "picked_up");
  device("phone-7", "event", dlvG, "delivered");
  device("tablet-1", "event", orderG, "cancelled");
  device("tablet-1", "sync");
  device("phone-7", "sync");
  await page.waitForSelector('[data-testid=order-column-conflict] [data-testid=count]:text-is("1")', { timeout: 15000 })
    .then(() => check("conflict: on the board", true))
    .catch((e) => check("conflict: on the board", false, String(e)));
  await page.click("#tabs button[data-tab=issues]");
  await page.waitForSelector("[data-testid=conflict]");
  equal("conflict: listed once", (await page.$$("[data-testid=conflict]")).length, 1);
  check("conflict: names both events", /cancelled by tablet-1.*completed by phone-7|completed by phone-7.*cancelled by tablet-1/s
    .test(await page.textContent("[data-testid=conflict]")));
  await page.screenshot({ path: join(ARTIFACTS, "05b-conflict.png"), fullPage: true });
  await page.click("[data-testid=conflict] button.resolve[data-resolution=completed]");
  await page.waitForSelector("#conflicts p.muted", { timeout: 15000 })
    .then(() => check("conflict: resolved from the dashboard", true))
    .catch((e) => check("conflict: resolved from the dashboard", false, String(e)));
  equal("conflict: the order is completed", (await api(`/orders/${orderG}`)).status, "completed");
  device("tablet-1", "sync");
  equal("conflict: the store's tablet sees the resolution",
    JSON.parse(device("tablet-1", "order", "show", orderG, "--json")).status, "completed");
  equal("quarantine: empty", await page.textContent("[data-testid=quarantine] tbody"), "Nothing in quarantine.");

  equal("the dashboard runs within its Content-Security-Policy", cspViolations, []);

  // Phone and tablet screens: no sideways scrolling of the page.
  for (const [name, width, height] of [["phone", 390, 844], ["tablet", 820, 1180]]) {
    const small = await browser.newContext({ viewport: { width, height }, isMobile: name === "phone", hasTouch: true });
    const p = await small.newPage();
    await p.goto(base + "/");
    await p.fill("#token", token);
    await p.click("#login-form button");
    await p.waitForSelector("[data-testid=order-column-completed]");
    const overflow = await p.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    check(`${name}: the page fits the screen width`, overflow <= 1, `overflows by ${overflow}px`);
    await p.screenshot({ path: join(ARTIFACTS, `06-${name}-board.png`), fullPage: true });
    await p.click("#tabs button[data-tab=kpis]");
    await p.waitForSelector("[data-testid=kpi-orders]");
    await p.screenshot({ path: join(ARTIFACTS, `07-${name}-kpis.png`), fullPage: true });
    await small.close();
  }
} catch (e) {
  check("scenario ran to the end", false, String(e && e.stack || e));
  if (relayLog) console.log("relay log:\n" + relayLog.slice(-4000));
} finally {
  if (browser) await browser.close().catch(() => {});
  relay.kill("SIGTERM");
  await new Promise((r) => relay.once("exit", r));
  rmSync(data, { recursive: true, force: true });
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
