// Waybill dispatch dashboard: plain JS, no build step, no network but the relay.
"use strict";

const ORDER_STATUSES = ["placed", "confirmed", "picking", "packed", "ready_for_pickup", "handed_over",
  "completed", "cancelled", "return_requested", "returned", "conflict"];
const DELIVERY_STATUSES = ["assigned", "picked_up", "in_transit", "arrived", "delivered",
  "failed_attempt", "returned_to_store", "conflict"];

const $ = (sel) => document.querySelector(sel);
const state = { token: localStorage.getItem("waybill-token") || "", tab: "board", order: null,
  feedAfter: 0, refreshTimer: null, pollTimer: null, stream: null, lastBoard: new Map() };

function esc(s) {
  return String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}
function when(ms) {
  if (ms == null) return "—";
  return new Date(ms).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}
function ago(ms, now) {
  if (ms == null) return "never";
  const s = Math.max(0, Math.round(((now || Date.now()) - ms) / 1000));
  if (s < 60) return s + " s ago";
  if (s < 3600) return Math.round(s / 60) + " min ago";
  if (s < 86400) return Math.round(s / 3600) + " h ago";
  return Math.round(s / 86400) + " d ago";
}
function money(amount, currency) {
  return Number(amount).toLocaleString("en") + " " + esc(currency || "");
}
function duration(ms) {
  if (ms == null) return "—";
  const m = Math.round(ms / 60000);
  if (m < 60) return m + " min";
  return Math.floor(m / 60) + " h " + (m % 60) + " min";
}
function pct(rate) {
  return rate.rate == null ? "—" : (rate.rate * 100).toFixed(1) + "%";
}

async function api(path, options = {}) {
  const headers = Object.assign({ Authorization: "Bearer " + state.token }, options.headers || {});
  if (options.body) headers["Content-Type"] = "application/json";
  const res = await fetch("/api/v1" + path, Object.assign({}, options, { headers }));
  if (res.status === 401) { logout("The token was refused; enter a valid admin token."); throw new Error("unauthorized"); }
  const body = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(body.error ? body.error.code + ": " + body.error.message : res.statusText);
  return body;
}

// ------------------------------------------------------------------ login

function logout(message) {
  localStorage.removeItem("waybill-token");
  state.token = "";
  $("#app").hidden = true;
  $("#login").hidden = false;
  $("#login-error").textContent = message || "";
  if (state.stream) state.stream.abort();
}

$("#login-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  state.token = $("#token").value.trim();
  try {
    await api("/board");
    localStorage.setItem("waybill-token", state.token);
    start();
  } catch (err) {
    $("#login-error").textContent = String(err.message || err);
  }
});

// ------------------------------------------------------------------ tabs

function show(tab) {
  state.tab = tab;
  document.querySelectorAll("#tabs button").forEach((b) => b.classList.toggle("active", b.dataset.tab === tab));
  document.querySelectorAll(".tab").forEach((s) => { s.hidden = s.id !== "tab-" + tab; });
  refresh();
}
document.querySelectorAll("#tabs button").forEach((b) => b.addEventListener("click", () => show(b.dataset.tab)));

function refresh() {
  const tasks = { board: loadBoard, order: loadOrder, devices: loadDevices, issues: loadIssues, kpis: loadKpis };
  (tasks[state.tab] || loadBoard)().catch((err) => console.error(err));
  loadIssueCount().catch(() => {});
}

function scheduleRefresh() {
  clearTimeout(state.refreshTimer);
  state.refreshTimer = setTimeout(refresh, 250);
}

// ------------------------------------------------------------------ board

async function loadBoard() {
  const b = await api("/board");
  const orderCount = Object.values(b.orders).reduce((a, n) => a + n, 0);
  const deliveryCount = Object.values(b.deliveries).reduce((a, n) => a + n, 0);
  $("#board-summary").innerHTML =
    `<span data-testid="order-total">${orderCount} orders</span><span data-testid="delivery-total">${deliveryCount} deliveries</span>` +
    `<span class="muted">feed #${b.feed_head}</span>`;
  const previous = state.lastBoard;
  const seen = new Map();
  const column = (status, rows, render, kind) => {
    const cards = rows.filter((r) => r.status === status).map((r) => {
      const key = kind + r.id;
      const flash = previous.size && previous.get(key) !== r.status ? " flash" : "";
      seen.set(key, r.status);
      return `<div class="card${flash}" data-id="${esc(r.id)}" data-order="${esc(r.order_id || r.id)}" data-testid="${kind}-card">${render(r)}</div>`;
    }).join("");
    const count = (kind === "order" ? b.orders : b.deliveries)[status] || 0;
    return `<div class="column ${esc(status)}" data-status="${esc(status)}" data-testid="${kind}-column-${esc(status)}">` +
      `<h3><span>${esc(status.replace(/_/g, " "))}</span><span data-testid="count">${count}</span></h3>${cards}</div>`;
  };
  const statuses = (known, counts) => known.filter((s) => counts[s]).concat(Object.keys(counts).filter((s) => !known.includes(s)));
  $("#order-board").innerHTML = statuses(ORDER_STATUSES, b.orders).map((s) => column(s, b.recent_orders,
    (o) => `<b>${esc(o.number)}</b><small>${esc(o.store)} · ${esc(o.channel)} · ${money(o.total, o.currency)}</small>`, "order")).join("")
    || `<p class="muted">No orders yet.</p>`;
  $("#delivery-board").innerHTML = statuses(DELIVERY_STATUSES, b.deliveries).map((s) => column(s, b.recent_deliveries,
    (d) => `<b>${esc(d.courier || "unassigned")}</b><small>${esc(d.store)} · ${esc(d.id.slice(0, 12))}…</small>`, "delivery")).join("")
    || `<p class="muted">No deliveries yet.</p>`;
  state.lastBoard = seen;
  document.querySelectorAll("#tab-board .card").forEach((c) => c.addEventListener("click", () => openOrder(c.dataset.order)));
}

// ------------------------------------------------------------------ order timeline

function openOrder(id) {
  state.order = id;
  $("#order-id").value = id;
  show("order");
}
$("#order-open").addEventListener("submit", (e) => { e.preventDefault(); openOrder($("#order-id").value.trim()); });

async function loadOrder() {
  const box = $("#order-detail");
  if (!state.order) return;
  let order;
  try { order = await api("/orders/" + encodeURIComponent(state.order)); } catch (err) {
    box.innerHTML = `<p class="error">${esc(err.message)}</p>`; return;
  }
  const deliveries = await Promise.all(order.deliveries.map((d) => api("/deliveries/" + encodeURIComponent(d)).catch(() => null)));
  const events = order.timeline.map((e) => Object.assign({ doc: "order" }, e));
  deliveries.filter(Boolean).forEach((d) => d.timeline.forEach((e) => events.push(Object.assign({ doc: "delivery " + d.id.slice(0, 12) + "…" }, e))));
  events.sort((a, b) => a.at.wall_ms - b.at.wall_ms || a.at.counter - b.at.counter);
  const where = (l) => (l ? `${l.lat.toFixed(5)}, ${l.lon.toFixed(5)}` : "—");
  box.innerHTML = `
    <div class="panel"><h3>Order ${esc(order.number)} <span class="status ${esc(order.status)}" data-testid="order-status">${esc(order.status)}</span></h3>
      <div class="kv"><span>Id</span><span>${esc(order.id)}</span><span>Store</span><span>${esc(order.store)}</span>
      <span>Channel</span><span>${esc(order.channel)}</span><span>Fulfilment</span><span>${esc(order.fulfilment)}</span>
      <span>Total</span><span>${money(order.balance.total, order.currency)}</span>
      <span>Paid</span><span>${money(order.balance.paid, order.currency)}</span>
      <span>Due</span><span data-testid="order-due">${money(order.balance.due, order.currency)}</span></div></div>
    <div class="panel"><h3>Timeline</h3><div class="scroll"><table data-testid="timeline"><thead><tr><th>When</th><th>Event</th><th>Document</th><th>Who (device)</th><th>Where</th><th>Note</th></tr></thead><tbody>
      ${events.map((e) => `<tr data-testid="timeline-row"><td>${when(e.at.wall_ms)}</td><td data-testid="event-kind">${esc(e.kind)}${e.resolution ? " → " + esc(e.resolution) : ""}${e.courier ? " (" + esc(e.courier) + ")" : ""}</td>
        <td>${esc(e.doc)}</td><td data-testid="event-actor">${esc(e.actor)}</td><td>${where(e.location)}</td><td>${esc(e.note || "")}</td></tr>`).join("")}
    </tbody></table></div></div>
    ${deliveries.filter(Boolean).map((d) => `<div class="panel"><h3>Delivery ${esc(d.id)} <span class="status ${esc(d.status)}">${esc(d.status)}</span></h3>
      <div class="kv"><span>Courier</span><span data-testid="delivery-courier">${esc(d.courier || "—")}</span><span>Window</span><span>${d.window ? when(d.window.start_ms) + " – " + when(d.window.end_ms) : "—"}</span>
      <span>Failed attempts</span><span>${d.failed_attempts}</span><span>Proofs</span><span>${d.proofs.length}</span></div>
      <form class="row reassign" data-id="${esc(d.id)}" style="margin-top:.6rem"><input name="courier" placeholder="courier id" aria-label="New courier" required><button type="submit">Reassign</button><span class="muted msg"></span></form></div>`).join("")}
    <div class="panel"><h3>Payments</h3>${order.payments.length ? `<table><tbody>${order.payments.map((p) => `<tr><td>${when(p.at.wall_ms)}</td><td>${esc(p.kind)}</td><td>${esc(p.method)}</td><td>${money(p.amount, p.currency)}</td><td>${esc(p.actor)}</td></tr>`).join("")}</tbody></table>` : `<p class="muted">None.</p>`}</div>`;
  box.querySelectorAll("form.reassign").forEach((f) => f.addEventListener("submit", async (e) => {
    e.preventDefault();
    const msg = f.querySelector(".msg");
    try {
      const r = await api(`/deliveries/${encodeURIComponent(f.dataset.id)}/assign`, { method: "POST", body: JSON.stringify({ courier: f.courier.value.trim() }) });
      msg.textContent = "assigned (" + r.sync + ")";
      scheduleRefresh();
    } catch (err) { msg.textContent = err.message; }
  }));
}

// ------------------------------------------------------------------ devices

async function loadDevices() {
  const r = await api("/devices");
  $("#devices tbody").innerHTML = r.devices.map((d) => `<tr data-testid="device-row" data-device="${esc(d.device_id)}">
    <td>${esc(d.device_id)}</td><td>${esc(d.role)}${d.store_id ? " · " + esc(d.store_id) : ""}${d.courier_id ? " · " + esc(d.courier_id) : ""}</td>
    <td data-testid="device-online"><span class="dot ${d.online ? "on" : "off"}"></span>${d.online ? "online" : "offline"}</td>
    <td title="${when(d.last_sync_ms)}">${ago(d.last_sync_ms, r.now_ms)}</td><td title="${when(d.last_seen_ms)}">${ago(d.last_seen_ms, r.now_ms)}</td>
    <td>${d.behind ?? "—"}</td><td>${d.uploads_in_flight}</td><td data-testid="device-uploaded">${d.uploaded}</td><td>${d.refused}</td></tr>`).join("")
    || `<tr><td colspan="9" class="muted">No device has connected since the relay started.</td></tr>`;
}

// ------------------------------------------------------------------ conflicts and quarantine

async function loadIssueCount() {
  const c = await api("/conflicts");
  const badge = $("#issue-count");
  badge.hidden = c.conflicts.length === 0;
  badge.textContent = c.conflicts.length;
}

async function loadIssues() {
  const [c, q] = await Promise.all([api("/conflicts"), api("/quarantine")]);
  $("#conflicts").innerHTML = c.conflicts.map((x) => `<div class="panel" data-testid="conflict">
      <h3>${esc(x.kind)} ${esc(x.number || x.id)}</h3>
      ${x.conflicts.map((k) => `<p>${esc(k.first.kind)} by ${esc(k.first.actor)} (${when(k.first.at.wall_ms)}) vs ${esc(k.second.kind)} by ${esc(k.second.actor)} (${when(k.second.at.wall_ms)})</p>
        <div class="row">${[k.first.kind, k.second.kind].map((kind) => `<button class="resolve" data-kind="${esc(x.kind)}" data-id="${esc(x.id)}" data-resolution="${esc(kind)}">Resolve as ${esc(kind)}</button>`).join("")}</div>`).join("")}
      <p class="muted msg"></p></div>`).join("") || `<p class="muted">No open conflicts.</p>`;
  document.querySelectorAll("button.resolve").forEach((b) => b.addEventListener("click", async () => {
    const path = b.dataset.kind === "order" ? "orders" : "deliveries";
    try {
      await api(`/${path}/${encodeURIComponent(b.dataset.id)}/resolve`, { method: "POST", body: JSON.stringify({ resolution: b.dataset.resolution }) });
      scheduleRefresh();
    } catch (err) { b.closest(".panel").querySelector(".msg").textContent = err.message; }
  }));
  $("#quarantine tbody").innerHTML = q.entries.map((e) => `<tr data-testid="quarantine-row"><td>${e.id}</td><td>${when(e.at_ms)}</td><td>${esc(e.device_id)}</td>
      <td>${esc(e.doc_id)}</td><td>${esc(e.code)}</td><td>${esc(e.reason)}</td></tr>`).join("")
    || `<tr><td colspan="6" class="muted">Nothing in quarantine.</td></tr>`;
}

// ------------------------------------------------------------------ KPIs

function range() {
  const preset = $("#kpi-preset").value;
  if (preset !== "custom") {
    const to = Date.now() + 1;
    return { from: to - Number(preset) * 86400000, to };
  }
  const from = Date.parse($("#kpi-from").value + "Z");
  const to = Date.parse($("#kpi-to").value + "Z");
  return { from, to };
}
$("#kpi-range").addEventListener("submit", (e) => { e.preventDefault(); loadKpis().catch((err) => alert(err.message)); });
$("#kpi-preset").addEventListener("change", () => { if ($("#kpi-preset").value !== "custom") loadKpis(); });

function bars(entries, opts = {}) {
  if (!entries.length) return `<p class="muted">No data in this range.</p>`;
  const width = 480, barH = 22, gap = 6, label = 120;
  const max = Math.max(...entries.map((e) => e[1]), 1);
  const h = entries.length * (barH + gap);
  return `<svg viewBox="0 0 ${width} ${h}" width="100%" role="img">${entries.map(([name, v], i) => {
    const w = Math.max(1, ((width - label - 90) * v) / max);
    const y = i * (barH + gap);
    return `<g data-testid="bar" data-label="${esc(name)}" data-value="${v}"><text x="0" y="${y + 15}">${esc(name)}</text>
      <rect class="bar" x="${label}" y="${y}" width="${w}" height="${barH}" rx="3"></rect>
      <text x="${label + w + 6}" y="${y + 15}">${esc(opts.format ? opts.format(v) : v)}</text></g>`;
  }).join("")}</svg>`;
}

function columns(values, start, step) {
  if (!values.some((v) => v > 0)) return `<p class="muted">No orders in this range.</p>`;
  const width = 480, height = 160, pad = 20;
  const max = Math.max(...values, 1);
  const w = (width - pad) / values.length;
  const fmt = (ms) => new Date(ms).toISOString().slice(step >= 86400000 ? 5 : 11, step >= 86400000 ? 10 : 16);
  return `<svg viewBox="0 0 ${width} ${height + 18}" width="100%" role="img">
    <line class="axis" x1="${pad}" y1="${height}" x2="${width}" y2="${height}"></line>
    ${values.map((v, i) => { const h = ((height - 12) * v) / max; return `<rect class="bar" data-testid="column" data-value="${v}" x="${pad + i * w + 1}" y="${height - h}" width="${Math.max(1, w - 2)}" height="${h}"><title>${fmt(start + i * step)}: ${v}</title></rect>`; }).join("")}
    <text x="${pad}" y="${height + 14}">${fmt(start)}</text><text x="${width - 40}" y="${height + 14}">${fmt(start + values.length * step)}</text>
    <text x="0" y="10">${max}</text></svg>`;
}

async function loadKpis() {
  const { from, to } = range();
  if (!Number.isFinite(from) || !Number.isFinite(to)) return;
  const k = await api(`/kpis?from_ms=${from}&to_ms=${to}`);
  const unreconciled = Object.entries(k.unreconciled_cash).map(([c, v]) => money(v, c)).join(", ") || "0";
  const card = (id, label, value, sub) => `<div class="kpi" data-testid="kpi-${id}"><div class="label">${label}</div><div class="value" data-testid="kpi-value">${value}</div><div class="sub">${sub || ""}</div></div>`;
  $("#kpi-cards").innerHTML = [
    card("orders", "Orders", k.orders, `${when(k.from_ms)} → ${when(k.to_ms)}${k.truncated ? " (newest only: narrow the range)" : ""}`),
    card("p50", "Fulfilment p50", duration(k.fulfilment_p50_ms), `${k.fulfilled} completed`),
    card("p90", "Fulfilment p90", duration(k.fulfilment_p90_ms), "order to completed"),
    card("on-time", "On-time delivery", pct(k.on_time), `${k.on_time.count} of ${k.on_time.of} with a window`),
    card("failed", "Failed attempts", pct(k.failed_attempts), `${k.failed_attempts.count} of ${k.failed_attempts.of} attempts`),
    card("returns", "Return rate", pct(k.returns), `${k.returns.count} of ${k.returns.of} orders`),
    card("unreconciled", "Unreconciled cash", unreconciled, `${k.unreconciled_orders.length} orders`),
  ].join("");
  $("#chart-time").innerHTML = columns(k.orders_over_time, k.from_ms, k.bucket_ms);
  $("#chart-channel").innerHTML = bars(Object.entries(k.orders_per_channel));
  const cash = [];
  Object.entries(k.cash_per_courier).forEach(([courier, amounts]) => Object.entries(amounts).forEach(([cur, v]) => cash.push([courier + " " + cur, v])));
  $("#chart-cash").innerHTML = bars(cash, { format: (v) => Number(v).toLocaleString("en") });
  $("#chart-status").innerHTML = bars(Object.entries(k.orders_per_status));
}

// ------------------------------------------------------------------ live feed

// Server-sent events over fetch (EventSource cannot send the bearer token).
async function follow() {
  const head = await api("/events?limit=1&after=0", { headers: { Accept: "application/json" } });
  state.feedAfter = head.head;
  for (;;) {
    const ctrl = new AbortController();
    state.stream = ctrl;
    try {
      const res = await fetch(`/api/v1/events?after=${state.feedAfter}`, {
        headers: { Authorization: "Bearer " + state.token, Accept: "text/event-stream" }, signal: ctrl.signal });
      if (res.status === 401) { logout("The token was revoked."); return; }
      if (!res.ok || !res.body) throw new Error("feed " + res.status);
      setLive(true);
      const reader = res.body.getReader();
      const decoder = new TextDecoder();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += decoder.decode(value, { stream: true });
        let cut;
        while ((cut = buf.indexOf("\n\n")) >= 0) {
          const block = buf.slice(0, cut);
          buf = buf.slice(cut + 2);
          const id = block.split("\n").find((l) => l.startsWith("id:"));
          if (id) { state.feedAfter = Number(id.slice(3).trim()); scheduleRefresh(); }
        }
      }
    } catch (err) {
      if (!state.token) return;
    }
    setLive(false);
    await new Promise((r) => setTimeout(r, 2000));
  }
}

function setLive(on) {
  const el = $("#live");
  el.classList.toggle("on", on);
  el.classList.toggle("off", !on);
  el.textContent = on ? "live" : "offline";
}

function start() {
  $("#login").hidden = true;
  $("#app").hidden = false;
  const now = new Date();
  $("#kpi-to").value = now.toISOString().slice(0, 16);
  $("#kpi-from").value = new Date(now - 86400000).toISOString().slice(0, 16);
  show(state.tab);
  follow().catch(() => setLive(false));
  clearInterval(state.pollTimer);
  // Presence changes are not in the event feed: poll the device list.
  state.pollTimer = setInterval(() => { if (state.tab === "devices") loadDevices().catch(() => {}); }, 3000);
}

if (state.token) start(); else logout();
