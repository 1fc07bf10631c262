package org.waybill

import kotlinx.coroutines.CoroutineScope
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.flow.MutableStateFlow
import kotlinx.coroutines.flow.first
import kotlinx.coroutines.launch
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeout
import uniffi.waybill_ffi.ChangeOrigin
import uniffi.waybill_ffi.ConnectionStateRecord
import uniffi.waybill_ffi.DocumentChange
import uniffi.waybill_ffi.PaymentMethod
import uniffi.waybill_ffi.WaybillException
import java.io.File
import java.net.DatagramSocket
import java.net.InetAddress
import java.util.concurrent.CopyOnWriteArrayList
import java.util.concurrent.CountDownLatch
import java.util.concurrent.TimeUnit
import kotlin.system.exitProcess
import kotlin.time.Duration.Companion.seconds

// The Kotlin SDK end to end on the JVM, against the host build of libwaybill_ffi and a
// relay on loopback: a store tablet and a courier's phone, as in the README's tour.
// Run by scripts/kotlin-test.sh, which passes:
//   -Djna.library.path=<dir of libwaybill_ffi.so>
//   -Dwaybill.bin=<the waybill binary>  -Dwaybill.tmp=<a scratch directory>
// A plain main with a tiny harness (no JUnit on this machine); it ends with the line
// `kotlin sdk: N passed, N failed` and exits non-zero if anything failed.

private var passed = 0
private var failed = 0

private suspend fun test(name: String, body: suspend () -> Unit) {
    try {
        body()
        passed++
        println("ok   $name")
    } catch (e: Throwable) {
        failed++
        println("FAIL $name: $e")
        e.printStackTrace(System.out)
    }
}

private fun expect(condition: Boolean, message: () -> String) {
    if (!condition) throw AssertionError(message())
}

private fun <T> expectEq(actual: T, expected: T, what: String) =
    expect(actual == expected) { "$what: expected <$expected>, got <$actual>" }

/** Runs [body] and returns the [WaybillException] it must throw. */
private inline fun <reified E : WaybillException> expectFailure(body: () -> Unit): E {
    try {
        body()
    } catch (e: WaybillException) {
        expect(e is E) { "expected ${E::class.simpleName}, got ${e::class.simpleName}: ${e.message}" }
        return e as E
    }
    throw AssertionError("expected ${E::class.simpleName}, but the call succeeded")
}

private val ORDER_JSON = """
    {"number": "S1-000123", "channel": "web", "store": "S1",
     "customer": {"id": "c-88", "name": "Leila Karimi", "phone": "+98 912 000 0000",
                  "address": "12 Vali-Asr St, Tehran"},
     "currency": "IRR", "fulfilment": "delivery",
     "lines": [{"sku": "TEA-500", "name": "Black tea 500 g", "qty": 2, "unit_price": 1850000}]}
""".trimIndent()

/** `waybill serve` on a free loopback UDP port, with credentials for a store and a courier. */
private class Relay(bin: String, val dir: File) : AutoCloseable {
    val addr: String
    private val process: Process
    private val reader: Thread
    private val log = StringBuffer()

    init {
        val port = DatagramSocket(0, InetAddress.getLoopbackAddress()).use { it.localPort }
        addr = "127.0.0.1:$port"
        val data = File(dir, "relay").path
        fun waybill(vararg args: String) {
            val p = ProcessBuilder(bin, *args).redirectErrorStream(true).start()
            val out = p.inputStream.bufferedReader().readText()
            check(p.waitFor() == 0) { "waybill ${args.joinToString(" ")} failed: $out" }
        }
        waybill("enroll", "--data", data, "--role", "store", "--store", "S1", "--device-id", "tablet-1",
            "--relay-addr", addr, "--out", File(dir, "tablet.cred").path)
        waybill("enroll", "--data", data, "--role", "courier", "--courier", "c1", "--device-id", "phone-c1",
            "--relay-addr", addr, "--out", File(dir, "phone.cred").path)

        val pb = ProcessBuilder(bin, "serve", "--data", data, "--listen", addr).redirectErrorStream(true)
        pb.environment()["NO_COLOR"] = "1"
        pb.environment()["RUST_LOG"] = "info"
        process = pb.start()
        val listening = CountDownLatch(1)
        reader = Thread {
            process.inputStream.bufferedReader().forEachLine { line ->
                log.append(line).append('\n')
                if ("relay listening" in line) listening.countDown()
            }
        }.apply { isDaemon = true }
        reader.start()
        if (!listening.await(30, TimeUnit.SECONDS)) {
            close()
            error("the relay did not start listening on $addr:\n$log")
        }
    }

    fun credential(name: String) = File(dir, "$name.cred").readText()

    override fun close() {
        // SIGTERM (the relay shuts down gracefully), through the handle so that the
        // output is read to its end; SIGKILL if it has not exited in 10 s.
        process.toHandle().destroy()
        if (!process.waitFor(10, TimeUnit.SECONDS)) {
            log.append("(the relay did not stop on SIGTERM within 10 s: killed)\n")
            process.destroyForcibly().waitFor()
        }
        reader.join(5_000)
    }

    fun logTail(lines: Int = 40) = log.toString().lines().takeLast(lines).joinToString("\n")
}

fun main() {
    val bin = System.getProperty("waybill.bin") ?: error("-Dwaybill.bin=<waybill binary> is required")
    val base = File(System.getProperty("waybill.tmp") ?: System.getProperty("java.io.tmpdir"))
    val dir = kotlin.io.path.createTempDirectory(base.also { it.mkdirs() }.toPath(), "kotlin-test-").toFile()

    var relay: Relay? = null
    try {
        relay = Relay(bin, dir)
        println("relay on ${relay.addr}, scratch ${dir.path}")
        runBlocking { scenario(relay, dir) }
    } catch (e: Throwable) {
        failed++
        println("FAIL setup: $e")
        e.printStackTrace(System.out)
    } finally {
        relay?.close()
    }
    if (failed > 0 && relay != null) println("relay log (last lines):\n${relay.logTail()}")
    println()
    println("kotlin sdk: $passed passed, $failed failed")
    // JNA and the SDK's runtime keep non-daemon threads: leave explicitly.
    exitProcess(if (failed == 0 && passed > 0) 0 else 1)
}

private suspend fun scenario(relay: Relay, dir: File) {
    val store = Waybill.open(File(dir, "tablet.db").path, relay.credential("tablet"))
    val phone = Waybill.open(File(dir, "phone.db").path, relay.credential("phone"))

    // Everything the store's Flow sees, collected from the start on another thread.
    val seen = MutableStateFlow<List<DocumentChange>>(emptyList())
    val collector = CoroutineScope(Dispatchers.Default).launch {
        store.changes.collect { batch -> seen.value = seen.value + batch }
    }

    lateinit var orderId: String
    lateinit var deliveryId: String

    test("open: a store device and a courier device from their credentials") {
        expectEq(store.replica.deviceId(), "tablet-1", "store device")
        expectEq(store.replica.storeId(), "S1", "store id")
        expectEq(phone.replica.courierId(), "c1", "courier id")
        expectEq(store.syncStatus.value.state is ConnectionStateRecord.Stopped, true, "status before startSync")
    }

    test("a malformed credential is WaybillException.Credential") {
        expectFailure<WaybillException.Credential> {
            Waybill.open(File(dir, "bad.db").path, """{"credential": {}}""").close()
        }
    }

    test("listener: a local write is heard synchronously; cancel stops it") {
        val heard = CopyOnWriteArrayList<DocumentChange>()
        val subscription = store.observeChanges { heard.addAll(it) }
        orderId = store.createOrder(ORDER_JSON)
        expect(orderId.startsWith("ord_")) { "order id $orderId" }
        expect(heard.any { it.docId == orderId && it.origin == ChangeOrigin.LOCAL }) { "heard $heard" }
        expectEq(subscription.isActive(), true, "active before cancel")
        subscription.cancel()
        expectEq(subscription.isActive(), false, "active after cancel")
        val before = heard.size
        store.recordEvent(orderId, "confirmed", note = "phoned the customer")
        expectEq(heard.size, before, "changes heard after cancel")
        subscription.close()
    }

    test("assign courier c1 and query (typed)") {
        deliveryId = store.assignCourier(orderId, "c1")
        expect(deliveryId.startsWith("dlv_")) { "delivery id $deliveryId" }
        val order = store.order(orderId)
        expectEq(order.status, "confirmed", "order status")
        expectEq(order.total, 3_700_000L, "order total")
        expectEq(order.balanceDue, 3_700_000L, "balance due")
        expectEq(order.customer.name, "Leila Karimi", "customer")
        expectEq(order.deliveries, listOf(deliveryId), "deliveries")
        expectEq(order.timeline.map { it.kind }, listOf("placed", "confirmed"), "timeline")
        expectEq(store.orders(status = "confirmed").map { it.id }, listOf(orderId), "orders(confirmed)")
        expectEq(store.orders(status = "completed"), emptyList(), "orders(completed)")
        val dlv = store.deliveries(courier = "c1").single()
        expectEq(dlv.id, deliveryId, "delivery row")
        expectEq(dlv.status, "assigned", "delivery status")
    }

    test("Flow: the store's changes flow names the order") {
        withTimeout(10.seconds) { seen.first { batch -> batch.any { it.docId == orderId } } }
    }

    test("a refused write is the right WaybillException") {
        // The store may not record courier events; unknown kinds and bad ids are typed too.
        val forbidden = expectFailure<WaybillException.Forbidden> { store.recordEvent(deliveryId, "picked_up") }
        expectEq(forbidden.role, "store", "Forbidden.role")
        expectFailure<WaybillException.UnknownEventKind> { store.recordEvent(orderId, "teleported") }
        expectFailure<WaybillException.InvalidDocId> { store.order("not-an-id") }
        expectFailure<WaybillException.InvalidInput> { store.createOrder("""{"number": 1}""") }
        val failure: WaybillFailure = expectFailure<WaybillException.Forbidden> {
            store.recordEvent(deliveryId, "delivered")
        }
        expectEq(failure.isRetryable, false, "isRetryable(Forbidden)")
    }

    test("store syncs: uploads the order and the delivery") {
        val report = store.syncNow()
        expect(report.uploaded > 0u) { "uploaded nothing: $report" }
        expectEq(store.replica.pendingUploads(), 0uL, "pending uploads after sync")
    }

    test("courier syncs: receives its delivery and the order") {
        val report = phone.syncNow()
        expect(report.received > 0u) { "received nothing: $report" }
        expectEq(phone.deliveries(courier = "c1").map { it.id }, listOf(deliveryId), "courier's deliveries")
        expectEq(phone.order(orderId).status, "confirmed", "order status on the phone")
    }

    test("courier: refused writes surface as the specific exception") {
        // A courier may not record order events…
        val e = expectFailure<WaybillException.Forbidden> { phone.recordEvent(orderId, "cancelled") }
        expectEq(e.role, "courier", "Forbidden.role")
        // …nor deliver before picking up.
        val t = expectFailure<WaybillException.InvalidTransition> { phone.recordEvent(deliveryId, "delivered") }
        expectEq(t.status, "assigned", "InvalidTransition.status")
        expectEq(t.kind, "delivered", "InvalidTransition.kind")
        expectFailure<WaybillException.CurrencyMismatch> {
            phone.recordPayment(orderId, 100, "EUR", PaymentMethod.CASH, deliveryId)
        }
    }

    test("courier: picked_up, delivered, cash at the door, sync") {
        phone.recordEvent(deliveryId, "picked_up")
        phone.recordEvent(deliveryId, "delivered", note = "left with the neighbour")
        val entry = phone.recordPayment(orderId, 3_700_000, "IRR", PaymentMethod.CASH, deliveryId)
        expect(entry.startsWith("pay_")) { "entry id $entry" }
        val order = phone.order(orderId)
        expectEq(order.status, "completed", "order status on the phone")
        expectEq(order.balanceDue, 0L, "balance due on the phone")
        val report = phone.syncNow()
        expect(report.uploaded > 0u) { "uploaded nothing: $report" }
    }

    test("store: background sync goes live and merges the courier's changes (StateFlow + Flow)") {
        val remoteBefore = seen.value.count { it.origin == ChangeOrigin.REMOTE }
        store.startSync()
        withTimeout(20.seconds) { store.syncStatus.first { it.isLive && it.pendingUploads == 0uL } }
        withTimeout(20.seconds) {
            seen.first { all ->
                all.count { it.origin == ChangeOrigin.REMOTE } > remoteBefore &&
                    all.any { it.docId == orderId && it.origin == ChangeOrigin.REMOTE }
            }
        }
        val order = store.order(orderId)
        expectEq(order.status, "completed", "order status on the store")
        expectEq(order.balanceDue, 0L, "balance due on the store")
        val payment = order.payments.single()
        expectEq(payment.method, PaymentMethod.CASH, "payment method")
        expectEq(payment.deliveryId, deliveryId, "payment delivery")
        expectEq(store.delivery(deliveryId).status, "delivered", "delivery status on the store")
        expectEq(store.orders(status = "completed").map { it.id }, listOf(orderId), "orders(completed)")
        expect(store.syncStatus.value.lastSyncedMs != null) { "lastSyncedMs is null" }
        store.stopSync()
        withTimeout(10.seconds) { store.syncStatus.first { it.state is ConnectionStateRecord.Stopped } }
    }

    test("close: cancelling the collector and closing the replicas") {
        collector.cancel()
        collector.join()
        store.close()
        phone.close()
    }
}
