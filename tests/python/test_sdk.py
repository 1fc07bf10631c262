"""The mobile SDK scenario through the generated Python bindings.

A store tablet and a courier's phone, each opened through `WaybillReplica.open`
with a credential from `waybill enroll`, work against a relay started on loopback:
the tablet creates an order, confirms it and assigns courier c1; the phone syncs,
sees its delivery, delivers it and takes cash; the tablet sees the order
`completed`. Observers, typed records, both sync paths (`start_sync` and the async
`sync_once`) and typed errors are checked on the way. The Kotlin test runs the
same scenario.

Run with `bash tests/python/run.sh` (it generates the bindings and sets
PYTHONPATH and WAYBILL_BIN). Plain python3, no packages.
"""

import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback

import waybill_ffi as w

WAYBILL = os.environ.get("WAYBILL_BIN", "target/debug/waybill")

ORDER = {
    "number": "S1-000123",
    "channel": "web",
    "store": "S1",
    "customer": {
        "id": "c-88",
        "name": "Leila Karimi",
        "phone": "+98 912 000 0000",
        "address": "12 Vali-Asr St, Tehran",
    },
    "currency": "IRR",
    "fulfilment": "delivery",
    "lines": [{"sku": "TEA-500", "name": "Black tea 500 g", "qty": 2, "unit_price": 1850000}],
}
TOTAL = 2 * 1850000


def free_udp_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(what, predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def expect_error(cls, f, *args):
    """Call f(*args) and check it raises exactly `cls`; return the exception."""
    try:
        f(*args)
    except w.WaybillError as e:
        assert type(e) is cls, f"expected {cls.__name__}, got {type(e).__name__}: {e}"
        return e
    raise AssertionError(f"expected {cls.__name__}, nothing was raised")


class Recorder:
    """Remembers what an observer heard (the callbacks run on SDK threads)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.heard = []

    def snapshot(self):
        with self.lock:
            return list(self.heard)

    def saw(self, doc_id, origin):
        return any(c.doc_id == doc_id and c.origin == origin for c in self.snapshot())


class ChangeRecorder(Recorder, w.DocumentObserver):
    def documents_changed(self, changes):
        with self.lock:
            self.heard.extend(changes)


class StatusRecorder(Recorder, w.SyncStatusObserver):
    def status_changed(self, status):
        with self.lock:
            self.heard.append(status)


class Relay:
    def __init__(self, tmp):
        self.data = os.path.join(tmp, "relay")
        self.port = free_udp_port()
        self.addr = f"127.0.0.1:{self.port}"
        self.proc = None
        self.log = os.path.join(tmp, "relay.log")

    def enroll(self, out, *args):
        subprocess.run(
            [WAYBILL, "enroll", "--data", self.data, "--relay-addr", self.addr, "--out", out, *args],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        with open(out, encoding="utf-8") as f:
            return f.read()

    def start(self):
        log = open(self.log, "w", encoding="utf-8")
        self.proc = subprocess.Popen(
            [WAYBILL, "serve", "--data", self.data, "--listen", self.addr],
            stdout=log,
            stderr=log,
            env={**os.environ, "RUST_LOG": "info"},
        )

        def listening():
            if self.proc.poll() is not None:
                raise AssertionError(f"the relay exited with {self.proc.returncode}: {self.tail()}")
            with open(self.log, encoding="utf-8") as f:
                return "relay listening" in f.read()

        wait_until("the relay to listen", listening, timeout=30)

    def tail(self):
        with open(self.log, encoding="utf-8") as f:
            return f.read()[-2000:]

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Scenario:
    """Steps share state; each is one named check."""

    def __init__(self, tmp, relay):
        self.tmp = tmp
        self.relay = relay

    def step_library(self):
        w.init_logging("warn")
        w.init_logging("debug")  # idempotent: the second call changes nothing
        assert w.core_version(), "core_version is empty"

    def step_enroll_and_open(self):
        self.tablet_cred = self.relay.enroll(
            os.path.join(self.tmp, "tablet.cred"), "--role", "store", "--store", "S1", "--device-id", "tablet-1"
        )
        self.phone_cred = self.relay.enroll(
            os.path.join(self.tmp, "phone.cred"), "--role", "courier", "--courier", "c1", "--device-id", "phone-1"
        )
        self.relay.start()
        self.tablet = w.WaybillReplica.open(os.path.join(self.tmp, "tablet.db"), self.tablet_cred)
        assert self.tablet.device_id() == "tablet-1"
        assert self.tablet.role() == w.Role.STORE
        assert self.tablet.store_id() == "S1"

    def step_bad_credential(self):
        expect_error(w.WaybillError.Credential, w.WaybillReplica.open, os.path.join(self.tmp, "x.db"), "{}")

    def step_create_and_observe(self):
        self.tablet_changes = ChangeRecorder()
        self.tablet_sub = self.tablet.subscribe(self.tablet_changes)
        self.order_id = self.tablet.create_order(json.dumps(ORDER))
        assert self.order_id.startswith("ord_"), self.order_id
        assert self.tablet_changes.saw(self.order_id, w.ChangeOrigin.LOCAL), self.tablet_changes.snapshot()

    def step_invalid_input(self):
        e = expect_error(w.WaybillError.InvalidInput, self.tablet.create_order, '{"number": 1}')
        assert e.field == "order_json", e.field
        bad = dict(ORDER, lines=[dict(ORDER["lines"][0], qty=0)])
        e = expect_error(w.WaybillError.InvalidInput, self.tablet.create_order, json.dumps(bad))
        assert e.field == "lines[0].qty", e.field

    def step_events_and_assign(self):
        self.tablet.record_event(self.order_id, "confirmed", "called the customer")
        self.delivery_id = self.tablet.assign_courier(self.order_id, "c1")
        assert self.delivery_id.startswith("dlv_"), self.delivery_id
        self.tablet.add_note(self.order_id, "ring twice")
        expect_error(w.WaybillError.UnknownEventKind, self.tablet.record_event, self.order_id, "teleported", None)
        e = expect_error(w.WaybillError.InvalidTransition, self.tablet.record_event, self.order_id, "placed", None)
        assert e.doc_id == self.order_id and e.kind == "placed", (e.doc_id, e.kind)
        expect_error(w.WaybillError.WrongKind, self.tablet.order, self.delivery_id)
        expect_error(w.WaybillError.InvalidDocId, self.tablet.order, "nope")

    def step_query_typed(self):
        o = self.tablet.order(self.order_id)
        assert isinstance(o, w.OrderDetails)
        assert o.id == self.order_id and o.number == "S1-000123" and o.store == "S1"
        assert o.status == "confirmed", o.status
        assert o.customer.name == "Leila Karimi"
        assert o.channel == w.Channel.WEB and o.fulfilment == w.Fulfilment.DELIVERY
        assert o.currency == "IRR" and o.total == TOTAL and o.balance_due == TOTAL, (o.total, o.balance_due)
        assert len(o.lines) == 1 and o.lines[0].sku == "TEA-500" and o.lines[0].total == TOTAL
        assert o.deliveries == [self.delivery_id], o.deliveries
        assert [t.kind for t in o.timeline] == ["placed", "confirmed"], [t.kind for t in o.timeline]
        assert "ring twice" in o.notes
        d = self.tablet.delivery(self.delivery_id)
        assert d.order_id == self.order_id and d.courier == "c1" and d.status == "assigned", d
        assert d.stop.address == "12 Vali-Asr St, Tehran"
        rows = self.tablet.orders("confirmed", 10)
        assert [r.id for r in rows] == [self.order_id], rows
        assert self.tablet.orders("completed", 10) == []
        assert [r.id for r in self.tablet.search_orders("karimi", 10)] == [self.order_id]
        assert [r.id for r in self.tablet.deliveries("c1", None)] == [self.delivery_id]
        assert self.tablet.pending_uploads() > 0
        assert self.tablet.refused_changes() == []

    def step_typed_order(self):
        order = w.NewOrderRecord(
            number="S1-000124",
            channel=w.Channel.POS,
            store="S1",
            customer=w.CustomerRecord(id="c-89", name="Sara", phone="", address=""),
            currency="IRR",
            fulfilment=w.Fulfilment.PICKUP,
            lines=[w.NewLineRecord(sku="SUGAR-1", name="Sugar 1 kg", qty=1, unit_price=500000)],
            note=None,
        )
        oid = self.tablet.create_order_typed(order)
        self.tablet.add_line(oid, w.NewLineRecord(sku="SALT", name="Salt", qty=2, unit_price=10000))
        o = self.tablet.order(oid)
        assert o.total == 520000 and len(o.lines) == 2, (o.total, o.lines)
        self.tablet.record_payment(oid, 520000, "IRR", w.PaymentMethod.CARD, None)
        assert self.tablet.order(oid).balance_due == 0
        expect_error(w.WaybillError.CurrencyMismatch, self.tablet.record_payment, oid, 1, "EUR", w.PaymentMethod.CASH, None)

    def step_live_sync_up(self):
        self.tablet_status = StatusRecorder()
        self.status_sub = self.tablet.subscribe_sync_status(self.tablet_status)
        assert self.tablet.sync_status().state.is_stopped()
        started = time.monotonic()
        self.tablet.start_sync(None)
        assert time.monotonic() - started < 1.0, "start_sync blocked its caller"

        def live_and_uploaded():
            s = self.tablet.sync_status()
            return s.state.is_live() and s.pending_uploads == 0 and self.tablet.pending_uploads() == 0

        wait_until("the tablet to be live with nothing pending", live_and_uploaded)
        s = self.tablet.sync_status()
        assert s.last_synced_ms is not None, s
        assert any(st.state.is_live() for st in self.tablet_status.snapshot()), "the status observer never heard Live"

    def step_courier_sync_once(self):
        self.phone = w.WaybillReplica.open(os.path.join(self.tmp, "phone.db"), self.phone_cred)
        assert self.phone.role() == w.Role.COURIER and self.phone.courier_id() == "c1"
        report = asyncio.run(self.phone.sync_once(20000))
        assert isinstance(report, w.SyncReportRecord)
        assert report.received > 0, report
        rows = self.phone.deliveries("c1", None)
        assert [r.id for r in rows] == [self.delivery_id], rows
        assert self.phone.delivery(self.delivery_id).status == "assigned"
        assert self.phone.order(self.order_id).status == "confirmed"

    def step_refused_write(self):
        # A courier may not confirm its store's order: refused locally, nothing written.
        e = expect_error(w.WaybillError.Forbidden, self.phone.record_event, self.order_id, "confirmed", None)
        assert e.role == "courier", e.role
        # A delivery cannot be delivered before it is picked up.
        expect_error(w.WaybillError.InvalidTransition, self.phone.record_event, self.delivery_id, "delivered", None)
        assert self.phone.pending_uploads() == 0

    def step_courier_delivers(self):
        self.phone.record_event(self.delivery_id, "picked_up", None)
        self.phone.record_event_with(
            self.delivery_id, "delivered", w.EventDetailsRecord(note=None, location=w.GeoPointRecord(lat=35.7, lon=51.4, accuracy_m=8.0), resolution=None)
        )
        entry = self.phone.record_payment(self.order_id, TOTAL, "IRR", w.PaymentMethod.CASH, self.delivery_id)
        assert entry
        assert self.phone.delivery(self.delivery_id).status == "delivered"
        assert self.phone.order(self.order_id).status == "completed"
        assert self.phone.cash_collected("c1") == [w.CashTotal(currency="IRR", amount=TOTAL)]
        report = asyncio.run(self.phone.sync_once(20000))
        assert report.uploaded > 0, report
        assert self.phone.pending_uploads() == 0

    def step_store_sees_completed(self):
        # The tablet is live: the relay pushes the courier's changes to it.
        def completed():
            o = self.tablet.order(self.order_id)
            return o.status == "completed" and o.balance_due == 0
        wait_until("the tablet to see the order completed", completed)
        o = self.tablet.order(self.order_id)
        assert len(o.payments) == 1 and o.payments[0].method == w.PaymentMethod.CASH, o.payments
        assert o.payments[0].delivery_id == self.delivery_id
        assert self.tablet.delivery(self.delivery_id).status == "delivered"
        assert self.tablet_changes.saw(self.order_id, w.ChangeOrigin.REMOTE), "the observer never heard the remote change"
        assert [r.id for r in self.tablet.orders("completed", 10)] == [self.order_id]

    def step_stop_and_unsubscribe(self):
        started = time.monotonic()
        self.tablet.stop_sync()
        assert time.monotonic() - started < 1.0, "stop_sync blocked its caller"
        assert self.tablet.sync_status().state.is_stopped()
        wait_until("the status observer to hear Stopped", lambda: any(s.state.is_stopped() for s in self.tablet_status.snapshot()))
        self.tablet_sub.cancel()
        self.tablet_sub.cancel()
        assert not self.tablet_sub.is_active()
        before = len(self.tablet_changes.snapshot())
        self.tablet.add_note(self.order_id, "after unsubscribing")
        assert len(self.tablet_changes.snapshot()) == before, "a cancelled subscription still heard changes"
        self.status_sub.cancel()

    def step_sync_once_errors(self):
        # The relay goes away: sync_once fails with a typed network error or timeout.
        self.relay.stop()
        try:
            asyncio.run(self.tablet.sync_once(3000))
        except (w.WaybillError.Network, w.WaybillError.Timeout):
            pass
        else:
            raise AssertionError("sync_once with no relay did not fail")


def main():
    passed = failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        relay = Relay(tmp)
        scenario = Scenario(tmp, relay)
        steps = [name for name in Scenario.__dict__ if name.startswith("step_")]
        try:
            for name in steps:
                try:
                    getattr(scenario, name)()
                except Exception:  # noqa: BLE001 - report every failure and stop
                    failed += 1
                    print(f"FAIL {name}")
                    traceback.print_exc()
                    if relay.proc is not None:
                        print("--- relay log (tail) ---\n" + relay.tail())
                    break
                else:
                    passed += 1
                    print(f"ok   {name}")
        finally:
            relay.stop()
    skipped = len(steps) - passed - failed
    print(f"python sdk: {passed} passed, {failed} failed" + (f", {skipped} skipped" if skipped else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
