// The generated records, enums and the FFI class (`OrderDetails`, `DocumentChange`,
// `PaymentMethod`, `WaybillReplica`…) come with `import Waybill`.
@_exported import WaybillBindings
import Foundation

/// One device's replica of the orders and deliveries it can see, opened with the
/// device's credential: a courier's phone, a store's tablet, a dispatcher's desk.
///
/// Every mutation is durable on the device before it returns and works offline;
/// ``startSync(relayAddress:)`` (while the app runs) or ``syncNow(timeout:)`` (once)
/// carries it to the relay and brings other devices' changes back.
///
/// Calls are thread-safe. Mutations and queries are quick local SQLite work; only
/// the sync calls touch the network, on the SDK's own threads, never the caller's.
/// Failures are ``ReplicaError``s.
///
/// ```swift
/// let replica = try Replica(databaseURL: dbURL, credentialURL: credentialURL)
/// let orderId = try replica.createOrder(json: orderJSON)
/// try replica.recordEvent("confirmed", on: orderId)
/// let deliveryId = try replica.assignCourier(orderId: orderId, courierId: "courier-7")
/// for await changes in replica.documentChanges() { reload(changes.map(\.docId)) }
/// ```
public final class Replica: @unchecked Sendable {
    // @unchecked: the only state is the FFI object, which is thread-safe (Rust side).

    /// The generated object, for calls this layer does not wrap (they throw the
    /// generated `WaybillError`; ``call(_:)`` turns that into ``ReplicaError``).
    public let ffi: WaybillReplica

    /// Open (or create) the store at `databasePath` for the device that
    /// `credentialJSON` (the contents of the file `waybill enroll` wrote) names.
    public init(databasePath: String, credentialJSON: String) throws {
        ffi = try Replica.mapErrors { try WaybillReplica.open(dbPath: databasePath, credentialJson: credentialJSON) }
    }

    /// Open (or create) the store at `databaseURL` with the credential file at
    /// `credentialURL` (keep it out of backups: it is a bearer token).
    public convenience init(databaseURL: URL, credentialURL: URL) throws {
        let credential: String
        do {
            credential = try String(contentsOf: credentialURL, encoding: .utf8)
        } catch {
            throw ReplicaError.credential(reason: "cannot read \(credentialURL.path): \(error.localizedDescription)")
        }
        try self.init(databasePath: databaseURL.path, credentialJSON: credential)
    }

    /// Wrap an object opened through the generated API.
    public init(_ ffi: WaybillReplica) {
        self.ffi = ffi
    }

    // MARK: Who this device is

    /// This device's id (the actor of every event it records).
    public var deviceId: String { ffi.deviceId() }
    /// This device's role.
    public var role: Role { ffi.role() }
    /// The store this device acts for (store tablets; some couriers).
    public var storeId: String? { ffi.storeId() }
    /// The courier this device acts for (courier phones).
    public var courierId: String? { ffi.courierId() }
    /// When the credential expires; enrol the device again before then.
    public var credentialExpiry: Date {
        Date(timeIntervalSince1970: TimeInterval(ffi.credentialExpiresMs()) / 1000)
    }

    // MARK: Orders and deliveries

    /// Create an order from the integrator's JSON (see the top-level README; amounts in
    /// minor units; unknown fields are refused). Returns the order id (`ord_…`).
    public func createOrder(json: String) throws -> String {
        try call { try $0.createOrder(orderJson: json) }
    }

    /// Create an order from typed fields. Returns the order id.
    public func createOrder(_ order: NewOrderRecord) throws -> String {
        try call { try $0.createOrderTyped(order: order) }
    }

    /// Assign (or reassign) a courier to deliver the order to the customer's address.
    /// Returns the delivery id (`dlv_…`).
    @discardableResult
    public func assignCourier(orderId: String, courierId: String) throws -> String {
        try call { try $0.assignCourier(orderId: orderId, courierId: courierId) }
    }

    /// Record a status event (`confirmed`, `packed`, `picked_up`, `delivered`…) on an
    /// order or a delivery. A delivery's `delivered` also completes its order.
    public func recordEvent(_ kind: String, on docId: String, note: String? = nil) throws {
        try call { try $0.recordEvent(docId: docId, kind: kind, note: note) }
    }

    /// Record a payment received, in minor units of the order's currency (at the door
    /// when `deliveryId` is given). Returns the ledger entry id.
    @discardableResult
    public func recordPayment(
        orderId: String,
        amount: Int64,
        currency: String,
        method: PaymentMethod,
        deliveryId: String? = nil
    ) throws -> String {
        try call {
            try $0.recordPayment(orderId: orderId, amount: amount, currency: currency, method: method, deliveryId: deliveryId)
        }
    }

    /// Everything about an order: status, lines, balance, timeline, conflicts.
    public func order(id: String) throws -> OrderDetails {
        try call { try $0.order(orderId: id) }
    }

    /// Everything about a delivery.
    public func delivery(id: String) throws -> DeliveryDetails {
        try call { try $0.delivery(deliveryId: id) }
    }

    /// Orders on this device, newest first, optionally with one status.
    public func orders(status: String? = nil, limit: UInt32 = 100) throws -> [OrderSummary] {
        try call { try $0.orders(status: status, limit: limit) }
    }

    /// Deliveries on this device, optionally of one courier and/or with one status.
    public func deliveries(courier: String? = nil, status: String? = nil) throws -> [DeliverySummary] {
        try call { try $0.deliveries(courier: courier, status: status) }
    }

    /// Local changes the relay has not acknowledged yet.
    public func pendingUploads() throws -> UInt64 {
        try call { try $0.pendingUploads() }
    }

    /// Local changes the relay refused; they never silently disappear.
    public func refusedChanges() throws -> [RefusedChangeRecord] {
        try call { try $0.refusedChanges() }
    }

    /// Run any generated call (returns, notes, proofs, filters…) with its error
    /// turned into a ``ReplicaError``:
    /// `try replica.call { try $0.addNote(docId: id, text: "gate code 4411") }`.
    public func call<T>(_ body: (WaybillReplica) throws -> T) throws -> T {
        try Replica.mapErrors { try body(ffi) }
    }

    static func mapErrors<T>(_ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch {
            throw ReplicaError(error)
        }
    }

    // MARK: Sync

    /// Start syncing with the relay in the background and return at once: connect
    /// (to `relayAddress`, `host:port`, if given, else the credential's address),
    /// catch up, upload every local write as it happens, receive other devices'
    /// changes, and reconnect with backoff after any failure. Starting again
    /// restarts it. Watch it with ``syncStatusUpdates(bufferingPolicy:)``.
    public func startSync(relayAddress: String? = nil) {
        ffi.startSync(relayAddr: relayAddress)
    }

    /// Stop the background sync (it says goodbye to the relay on the SDK's threads).
    public func stopSync() {
        ffi.stopSync()
    }

    /// The background sync's status now (`stopped` when it is not running).
    public var syncStatus: SyncStatus { SyncStatus(ffi.syncStatus()) }

    /// Sync once, whether or not the background sync runs: connect to the relay at
    /// the credential's address, upload everything pending, catch up with what other
    /// devices did, disconnect. Throws ``ReplicaError/timeout(reason:)`` after
    /// `timeout` seconds, connecting included. The work runs on the SDK's threads;
    /// cancelling the calling task does not cut it short (the timeout does).
    @discardableResult
    public func syncNow(timeout: TimeInterval = 30) async throws -> SyncReportRecord {
        let timeoutMs = UInt64(max(0, (timeout * 1000).rounded()))
        do {
            return try await ffi.syncOnce(timeoutMs: timeoutMs)
        } catch {
            throw ReplicaError(error)
        }
    }
}
