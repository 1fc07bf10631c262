import Foundation
import Waybill
import XCTest

/// The SDK scenario the Kotlin and Python tests run, through the Swift layer:
/// open a store with a credential, create an order, assign a courier, record
/// events, query, observe, see a refused write as the right Swift error, and sync
/// both ways through a relay.
///
/// The local test needs nothing. The sync test needs a relay on loopback and two
/// enrolled devices (`bash ios/with-test-relay.sh swift test --package-path ios`
/// provides them); without them it is skipped, and says so.
final class ReplicaTests: XCTestCase {
    private var directory: URL!

    override func setUpWithError() throws {
        directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("waybill-tests-\(UUID().uuidString)", isDirectory: true)
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: directory)
    }

    // MARK: On one device, offline

    func testStoreTabletWorksOfflineAndRefusalsAreSwiftErrors() async throws {
        // Opening a store does not check the credential's signature (only the relay
        // can), so a local test can make its own.
        let tablet = try Replica(
            databasePath: path("tablet.db"),
            credentialJSON: unsignedCredential(deviceId: "swift-tablet", role: "store", storeId: "S1")
        )
        XCTAssertEqual(tablet.deviceId, "swift-tablet")
        XCTAssertEqual(tablet.role, .store)
        XCTAssertEqual(tablet.storeId, "S1")

        let changes = tablet.documentChanges()
        let orderId = try tablet.createOrder(json: orderJSON)
        XCTAssertTrue(orderId.hasPrefix("ord_"), orderId)
        let heard = await waitFor(changes, within: 10) { batch in
            batch.contains { $0.docId == orderId && $0.origin == .local }
        }
        XCTAssertTrue(heard, "the document observer did not hear about the new order")

        try tablet.recordEvent("confirmed", on: orderId)
        let deliveryId = try tablet.assignCourier(orderId: orderId, courierId: "courier-7")
        XCTAssertTrue(deliveryId.hasPrefix("dlv_"), deliveryId)

        let order = try tablet.order(id: orderId)
        XCTAssertEqual(order.status, "confirmed")
        XCTAssertEqual(order.total, 3_700_000)
        XCTAssertEqual(order.balanceDue, 3_700_000)
        XCTAssertEqual(order.deliveries, [deliveryId])
        XCTAssertEqual(order.timeline.map(\.kind), ["placed", "confirmed"])
        let delivery = try tablet.delivery(id: deliveryId)
        XCTAssertEqual(delivery.status, "assigned")
        XCTAssertEqual(delivery.courier, "courier-7")
        XCTAssertEqual(try tablet.orders().map(\.id), [orderId])
        XCTAssertGreaterThan(try tablet.pendingUploads(), 0)

        // Refusals: each is the matching ReplicaError case, and nothing is written.
        XCTAssertThrowsError(try tablet.recordEvent("returned", on: orderId)) { error in
            guard case let ReplicaError.invalidTransition(docId, status, kind) = error else {
                return XCTFail("expected invalidTransition, got \(error)")
            }
            XCTAssertEqual(docId, orderId)
            XCTAssertEqual(status, "confirmed")
            XCTAssertEqual(kind, "returned")
            XCTAssertTrue((error as? ReplicaError)?.isRefusal ?? false)
        }
        XCTAssertThrowsError(try tablet.recordEvent("teleported", on: orderId)) { error in
            XCTAssertEqual(error as? ReplicaError, .unknownEventKind(docKind: "order", kind: "teleported"))
        }
        XCTAssertThrowsError(try tablet.order(id: "nope")) { error in
            XCTAssertEqual(error as? ReplicaError, .invalidDocId(id: "nope"))
        }
        XCTAssertEqual(try tablet.order(id: orderId).timeline.map(\.kind), ["placed", "confirmed"])

        let phone = try Replica(
            databasePath: path("phone.db"),
            credentialJSON: unsignedCredential(
                deviceId: "swift-phone", role: "courier", storeId: "S1", courierId: "courier-7")
        )
        XCTAssertThrowsError(try phone.createOrder(json: orderJSON)) { error in
            guard case let ReplicaError.forbidden(role, _) = error else {
                return XCTFail("expected forbidden, got \(error)")
            }
            XCTAssertEqual(role, "courier")
        }

        guard case .stopped = tablet.syncStatus.state else {
            return XCTFail("sync was never started, yet the status is \(tablet.syncStatus)")
        }
    }

    // MARK: Two devices and a relay

    func testSyncBothWaysThroughTheRelay() async throws {
        let environment = ProcessInfo.processInfo.environment
        guard
            let relay = environment["WAYBILL_TEST_RELAY"],
            let storeCredential = try credential(environment["WAYBILL_TEST_STORE_CREDENTIAL"]),
            let courierCredential = try credential(environment["WAYBILL_TEST_COURIER_CREDENTIAL"])
        else {
            throw XCTSkip("""
                skipped the sync test: set WAYBILL_TEST_RELAY (host:port), WAYBILL_TEST_STORE_CREDENTIAL \
                and WAYBILL_TEST_COURIER_CREDENTIAL (credential files, or their JSON) for a relay \
                on loopback, e.g. `bash ios/with-test-relay.sh swift test --package-path ios`
                """)
        }
        let tablet = try Replica(databasePath: path("tablet.db"), credentialJSON: storeCredential)
        let phone = try Replica(databasePath: path("phone.db"), credentialJSON: courierCredential)
        let courierId = try XCTUnwrap(phone.courierId, "WAYBILL_TEST_COURIER_CREDENTIAL is not a courier's")

        // The tablet takes an order and assigns the phone's courier, then syncs once.
        let orderId = try tablet.createOrder(json: orderJSON)
        try tablet.recordEvent("confirmed", on: orderId)
        let deliveryId = try tablet.assignCourier(orderId: orderId, courierId: courierId)
        let upload = try await tablet.syncNow(timeout: 30)
        XCTAssertGreaterThan(upload.uploaded, 0)
        XCTAssertEqual(try tablet.pendingUploads(), 0)

        // The phone syncs in the background and hears the delivery arrive.
        let phoneChanges = phone.documentChanges()
        let phoneStatus = phone.syncStatusUpdates(bufferingPolicy: .unbounded)
        phone.startSync(relayAddress: relay)
        defer { phone.stopSync() }
        let arrived = await waitFor(phoneChanges, within: 30) { batch in
            batch.contains { $0.docId == deliveryId && $0.origin == .remote }
        }
        XCTAssertTrue(arrived, "the phone did not receive the delivery")
        let live = await waitFor(phoneStatus, within: 30) { $0.state == .live }
        XCTAssertTrue(live, "the phone's background sync did not go live: \(phone.syncStatus)")

        // Delivered and paid at the door, offline-first: written locally, then uploaded.
        try phone.recordEvent("picked_up", on: deliveryId)
        try phone.recordEvent("delivered", on: deliveryId)
        try phone.recordPayment(
            orderId: orderId, amount: 3_700_000, currency: "IRR", method: .cash, deliveryId: deliveryId)
        let uploaded = await eventually(within: 30) { (try? phone.pendingUploads()) == 0 }
        XCTAssertTrue(uploaded, "the relay did not acknowledge the phone's changes: \(phone.syncStatus)")
        phone.stopSync()

        // The tablet catches up.
        let download = try await tablet.syncNow(timeout: 30)
        XCTAssertGreaterThan(download.received, 0)
        let order = try tablet.order(id: orderId)
        XCTAssertEqual(order.status, "completed")
        XCTAssertEqual(order.balanceDue, 0)
        XCTAssertEqual(try tablet.delivery(id: deliveryId).status, "delivered")
    }

    // MARK: Helpers

    private let orderJSON = """
        {"number": "S1-000123", "channel": "web", "store": "S1",
         "customer": {"id": "c-88", "name": "Leila Karimi", "phone": "+98 912 000 0000",
                      "address": "12 Vali-Asr St, Tehran"},
         "currency": "IRR", "fulfilment": "delivery",
         "lines": [{"sku": "TEA-500", "name": "Black tea 500 g", "qty": 2, "unit_price": 1850000}]}
        """

    private func path(_ name: String) -> String {
        directory.appendingPathComponent(name).path
    }

    /// A credential of the file format with no valid signature: enough to open a
    /// store, refused by any relay.
    private func unsignedCredential(
        deviceId: String, role: String, storeId: String? = nil, courierId: String? = nil
    ) throws -> String {
        let body: [String: Any] = [
            "format": 1, "device_id": deviceId, "role": role,
            "store_id": storeId.map { $0 as Any } ?? NSNull(),
            "courier_id": courierId.map { $0 as Any } ?? NSNull(),
            "relay_id": "rly_local_test", "relay_addr": "127.0.0.1:9", "relay_cert": "",
            "issued_ms": 0, "expires_ms": 4_102_444_800_000,
        ]
        let data = try JSONSerialization.data(withJSONObject: ["credential": body, "signature": ""])
        return String(decoding: data, as: UTF8.self)
    }

    /// A credential given as a file path or as the JSON itself.
    private func credential(_ value: String?) throws -> String? {
        guard let value, !value.isEmpty else { return nil }
        if value.trimmingCharacters(in: .whitespaces).hasPrefix("{") { return value }
        return try String(contentsOfFile: value, encoding: .utf8)
    }
}

/// Whether an element of `stream` satisfies `predicate` within `seconds`. Ends the
/// iteration either way, which cancels the stream's subscription.
private func waitFor<Element>(
    _ stream: AsyncStream<Element>,
    within seconds: TimeInterval,
    until predicate: @escaping (Element) -> Bool
) async -> Bool {
    let search = Task { () -> Bool in
        for await element in stream where predicate(element) {
            return true
        }
        return false
    }
    let timer = Task {
        try await Task.sleep(nanoseconds: UInt64(seconds * 1_000_000_000))
        search.cancel()
    }
    let found = await search.value
    timer.cancel()
    return found
}

/// Whether `condition` holds within `seconds`, checking every 50 ms.
private func eventually(within seconds: TimeInterval, _ condition: () -> Bool) async -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if condition() { return true }
        try? await Task.sleep(nanoseconds: 50_000_000)
    }
    return condition()
}
