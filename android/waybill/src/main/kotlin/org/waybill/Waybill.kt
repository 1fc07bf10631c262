package org.waybill

import kotlinx.coroutines.CoroutineDispatcher
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.channels.awaitClose
import kotlinx.coroutines.flow.Flow
import kotlinx.coroutines.flow.MutableStateFlow
import kotlinx.coroutines.flow.StateFlow
import kotlinx.coroutines.flow.asStateFlow
import kotlinx.coroutines.flow.buffer
import kotlinx.coroutines.flow.callbackFlow
import kotlinx.coroutines.withContext
import uniffi.waybill_ffi.DeliveryDetails
import uniffi.waybill_ffi.DeliverySummary
import uniffi.waybill_ffi.DocumentChange
import uniffi.waybill_ffi.DocumentObserver
import uniffi.waybill_ffi.NewOrderRecord
import uniffi.waybill_ffi.OrderDetails
import uniffi.waybill_ffi.OrderSummary
import uniffi.waybill_ffi.PaymentMethod
import uniffi.waybill_ffi.Subscription
import uniffi.waybill_ffi.SyncStatusObserver
import uniffi.waybill_ffi.SyncStatusRecord
import uniffi.waybill_ffi.WaybillReplica
import kotlin.time.Duration
import kotlin.time.Duration.Companion.seconds
import kotlinx.coroutines.channels.Channel as CoroutineChannel

/** A device's sync state: connection, pending uploads, last sync, initial-sync progress. */
typealias SyncStatus = SyncStatusRecord

/**
 * One device's Waybill replica, for Kotlin apps: every call that touches the store is a
 * `suspend` function that runs on [io] (never on the caller's thread), observers are
 * [Flow]s, and failures are [WaybillFailure]s.
 *
 * ```
 * val waybill = Waybill.open(dbPath, credentialJson)
 * waybill.startSync()
 * scope.launch { waybill.syncStatus.collect { render(it) } }
 * scope.launch { waybill.changes.collect { changes -> refresh(changes.map { it.docId }) } }
 * val orderId = waybill.createOrder(orderJson)
 * ```
 *
 * Everything the generated bindings offer is reachable through [replica] or [call];
 * this class adds no behaviour of its own.
 */
class Waybill(
    /** The generated binding this wraps (uniffi.waybill_ffi). */
    val replica: WaybillReplica,
    private val io: CoroutineDispatcher = Dispatchers.IO,
) : AutoCloseable {

    private val status: MutableStateFlow<SyncStatus>
    private val statusSubscription: Subscription

    init {
        val initial = replica.syncStatus()
        status = MutableStateFlow(initial)
        statusSubscription = replica.subscribeSyncStatus(object : SyncStatusObserver {
            override fun statusChanged(status: SyncStatusRecord) {
                this@Waybill.status.value = status
            }
        })
        // A change between the first read and the subscription is not lost; one the
        // observer already delivered is not overwritten.
        status.compareAndSet(initial, replica.syncStatus())
    }

    /** The current sync status, updated by the SDK's sync client (see [startSync]). */
    val syncStatus: StateFlow<SyncStatus> = status.asStateFlow()

    /**
     * The documents that changed — local writes, merged remote changes, and documents
     * removed from this device — one list per committed batch. Collecting subscribes;
     * cancelling the collector cancels the subscription. Never drops a batch: a slow
     * collector buffers.
     */
    val changes: Flow<List<DocumentChange>> = callbackFlow {
        val subscription = replica.subscribe(object : DocumentObserver {
            override fun documentsChanged(changes: List<DocumentChange>) {
                trySend(changes)
            }
        })
        awaitClose { subscription.cancel() }
    }.buffer(CoroutineChannel.UNLIMITED)

    /**
     * Listener style for callers without coroutines: [listener] runs on the thread that
     * committed the change (an SDK thread for remote changes) until the returned
     * [Subscription] is cancelled or closed.
     */
    fun observeChanges(listener: (List<DocumentChange>) -> Unit): Subscription =
        replica.subscribe(object : DocumentObserver {
            override fun documentsChanged(changes: List<DocumentChange>) = listener(changes)
        })

    /** Runs [block] against the generated API on the I/O dispatcher. */
    suspend fun <T> call(block: (WaybillReplica) -> T): T = withContext(io) { block(replica) }

    // ---- mutations (each committed to the store before it returns) ----

    /** Creates an order from the integrator's `NewOrder` JSON; returns its id (`ord_…`). */
    suspend fun createOrder(orderJson: String): String = call { it.createOrder(orderJson) }

    /** Creates an order from typed fields; returns its id. */
    suspend fun createOrder(order: NewOrderRecord): String = call { it.createOrderTyped(order) }

    /** Assigns (or reassigns) the order's delivery to [courierId]; returns the delivery id. */
    suspend fun assignCourier(orderId: String, courierId: String): String =
        call { it.assignCourier(orderId, courierId) }

    /** Records a status event (`confirmed`, `picked_up`, `delivered`, …) on an order or delivery. */
    suspend fun recordEvent(docId: String, kind: String, note: String? = null) =
        call { it.recordEvent(docId, kind, note) }

    /** Records money received, in minor units of the order's currency; returns the entry id. */
    suspend fun recordPayment(
        orderId: String,
        amount: Long,
        currency: String,
        method: PaymentMethod,
        deliveryId: String? = null,
    ): String = call { it.recordPayment(orderId, amount, currency, method, deliveryId) }

    // ---- queries ----

    /** The full view of an order: status, balance, lines, payments, timeline, conflicts. */
    suspend fun order(orderId: String): OrderDetails = call { it.order(orderId) }

    /** The full view of a delivery. */
    suspend fun delivery(deliveryId: String): DeliveryDetails = call { it.delivery(deliveryId) }

    /** Orders newest first, optionally of one status. */
    suspend fun orders(status: String? = null, limit: Int = 100): List<OrderSummary> =
        call { it.orders(status, limit.toUInt()) }

    /** Deliveries, optionally of one courier and/or status. */
    suspend fun deliveries(courier: String? = null, status: String? = null): List<DeliverySummary> =
        call { it.deliveries(courier, status) }

    // ---- sync ----

    /**
     * Keeps the replica in sync with the relay in the background (the SDK's own runtime;
     * reconnects with backoff) until [stopSync] or [close]. Progress is in [syncStatus].
     */
    fun startSync(relayAddr: String? = null) = replica.startSync(relayAddr)

    /** Stops background sync; everything acknowledged is already durable. */
    fun stopSync() = replica.stopSync()

    /**
     * One exchange with the relay now: catch up, upload everything pending, disconnect.
     * Suspends without blocking a thread; throws [WaybillFailure] on failure.
     */
    suspend fun syncNow(timeout: Duration = 30.seconds): SyncReport =
        replica.syncOnce(timeout.inWholeMilliseconds.toULong())

    /** Stops sync and observers and releases the native replica. */
    override fun close() {
        statusSubscription.cancel()
        replica.stopSync()
        replica.close()
    }

    companion object {
        /** Opens (or creates) the store at [dbPath] as the device [credentialJson] names. */
        suspend fun open(
            dbPath: String,
            credentialJson: String,
            io: CoroutineDispatcher = Dispatchers.IO,
        ): Waybill = withContext(io) { Waybill(WaybillReplica.open(dbPath, credentialJson), io) }
    }
}
