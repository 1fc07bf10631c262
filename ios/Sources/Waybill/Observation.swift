import Foundation
import WaybillBindings

extension Replica {
    /// The documents that change on this device, one batch per durable write or
    /// merge: local writes (`.local`), other devices' changes merged by sync
    /// (`.remote`), and documents the relay no longer shares with this device
    /// (`.removed`). Refresh exactly what you show:
    ///
    /// ```swift
    /// for await changes in replica.documentChanges() {
    ///     await model.reload(changes.map(\.docId))
    /// }
    /// ```
    ///
    /// The subscription starts when this returns (so changes made right after are
    /// not missed) and ends when the iterating task is cancelled or the stream is
    /// dropped. Each call makes an independent stream with one consumer.
    public func documentChanges(
        bufferingPolicy: AsyncStream<[DocumentChange]>.Continuation.BufferingPolicy = .unbounded
    ) -> AsyncStream<[DocumentChange]> {
        AsyncStream(bufferingPolicy: bufferingPolicy) { continuation in
            let subscription = ffi.subscribe(observer: DocumentChangeForwarder(continuation))
            continuation.onTermination = { _ in subscription.cancel() }
        }
    }

    /// The background sync's status: the current status first, then every change of
    /// it, across ``stopSync()`` and ``startSync(relayAddress:)``. By default only the
    /// newest status waits for a slow consumer, which is what a status bar wants.
    ///
    /// ```swift
    /// for await status in replica.syncStatusUpdates() {
    ///     banner.show(status.state, pending: status.pendingUploads)
    /// }
    /// ```
    public func syncStatusUpdates(
        bufferingPolicy: AsyncStream<SyncStatus>.Continuation.BufferingPolicy = .bufferingNewest(1)
    ) -> AsyncStream<SyncStatus> {
        AsyncStream(bufferingPolicy: bufferingPolicy) { continuation in
            let forwarder = SyncStatusForwarder(continuation)
            // Subscribe before reading the current status, so no change falls in
            // between; the forwarder holds changes back until the current one is out.
            let subscription = ffi.subscribeSyncStatus(observer: forwarder)
            forwarder.start(with: SyncStatus(ffi.syncStatus()))
            continuation.onTermination = { _ in subscription.cancel() }
        }
    }
}

/// Hands the SDK's document callbacks (on SDK threads) to a stream.
final class DocumentChangeForwarder: DocumentObserver, @unchecked Sendable {
    // @unchecked: the continuation is safe to use from any thread.
    private let continuation: AsyncStream<[DocumentChange]>.Continuation

    init(_ continuation: AsyncStream<[DocumentChange]>.Continuation) {
        self.continuation = continuation
    }

    func documentsChanged(changes: [DocumentChange]) {
        continuation.yield(changes)
    }
}

/// Hands status callbacks to a stream, after the status current at subscription,
/// without repeating a status.
final class SyncStatusForwarder: SyncStatusObserver, @unchecked Sendable {
    // @unchecked: the mutable state is only touched under `lock`.
    private let continuation: AsyncStream<SyncStatus>.Continuation
    private let lock = NSLock()
    private var started = false
    private var held: SyncStatus?
    private var last: SyncStatus?

    init(_ continuation: AsyncStream<SyncStatus>.Continuation) {
        self.continuation = continuation
    }

    func start(with current: SyncStatus) {
        lock.lock()
        defer { lock.unlock() }
        started = true
        emit(current)
        if let held {
            // Arrived between subscribing and `start`. Callbacks come in order and
            // the newest one is always delivered, so even if `held` is older than
            // `current` the stream ends on the true status.
            emit(held)
            self.held = nil
        }
    }

    func statusChanged(status: SyncStatusRecord) {
        let status = SyncStatus(status)
        lock.lock()
        defer { lock.unlock() }
        if started {
            emit(status)
        } else {
            held = status
        }
    }

    /// Call with `lock` held.
    private func emit(_ status: SyncStatus) {
        guard status != last else { return }
        last = status
        continuation.yield(status)
    }
}
