import Foundation
import WaybillBindings

/// What the background sync is doing, for status bars and support screens.
public struct SyncStatus: Equatable, Hashable, Sendable {
    /// The connection.
    public var state: ConnectionState
    /// Local changes the relay has not acknowledged yet.
    public var pendingUploads: UInt64
    /// When the device was last fully in sync with the relay.
    public var lastSynced: Date?
    /// While catching up after connecting: how far.
    public var initialSync: InitialSyncProgress?
    /// The last failure, kept after recovering so support can see it.
    public var lastError: String?

    /// Everything local has reached the relay and the connection is live.
    public var isUpToDate: Bool { state == .live && pendingUploads == 0 }

    public init(
        state: ConnectionState,
        pendingUploads: UInt64 = 0,
        lastSynced: Date? = nil,
        initialSync: InitialSyncProgress? = nil,
        lastError: String? = nil
    ) {
        self.state = state
        self.pendingUploads = pendingUploads
        self.lastSynced = lastSynced
        self.initialSync = initialSync
        self.lastError = lastError
    }

    /// The status from the generated record.
    public init(_ record: SyncStatusRecord) {
        self.init(
            state: ConnectionState(record.state),
            pendingUploads: record.pendingUploads,
            lastSynced: record.lastSyncedMs.map { Date(timeIntervalSince1970: TimeInterval($0) / 1000) },
            initialSync: record.initialSync.map(InitialSyncProgress.init),
            lastError: record.lastError
        )
    }
}

/// The connection to the relay, as an app shows it.
public enum ConnectionState: Equatable, Hashable, Sendable {
    /// Not connected; a retry is scheduled.
    case offline
    /// Connecting and handshaking.
    case connecting
    /// Connected, catching up with the relay's log.
    case syncing
    /// Connected and caught up: changes flow both ways as they happen.
    case live
    /// The background sync has ended (or was never started) and will not retry.
    case stopped(reason: String)

    /// The state from the generated record.
    public init(_ record: ConnectionStateRecord) {
        switch record {
        case .offline: self = .offline
        case .connecting: self = .connecting
        case .syncing: self = .syncing
        case .live: self = .live
        case let .stopped(reason): self = .stopped(reason: reason)
        }
    }
}

/// How far a catch-up with the relay has come.
public struct InitialSyncProgress: Equatable, Hashable, Sendable {
    /// Changes received so far in this session.
    public var received: UInt64
    /// The relay log position applied so far.
    public var cursor: UInt64
    /// The relay's log head when the session opened.
    public var head: UInt64

    /// From 0 to 1, for a progress bar.
    public var fractionCompleted: Double {
        head == 0 ? 1 : min(1, Double(cursor) / Double(head))
    }

    public init(received: UInt64, cursor: UInt64, head: UInt64) {
        self.received = received
        self.cursor = cursor
        self.head = head
    }

    /// The progress from the generated record.
    public init(_ record: InitialSyncProgressRecord) {
        self.init(received: record.received, cursor: record.cursor, head: record.head)
    }
}
