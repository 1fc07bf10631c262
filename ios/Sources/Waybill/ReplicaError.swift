import Foundation
import WaybillBindings

/// Why a ``Replica`` call failed: the Swift face of the SDK's `WaybillError`, with
/// one case per case of it (so the core's distinctions survive), Swift-style names
/// and messages an app can show or log.
///
/// Refusals (``isRefusal``) leave the store untouched. Network-side failures
/// (``isRetryable``) are worth retrying later; the background sync retries by itself.
public enum ReplicaError: Error, Equatable, Hashable, Sendable {
    /// An input field is missing, malformed or out of range (`lines[0].qty`), or the
    /// order JSON does not parse.
    case invalidInput(field: String, reason: String)
    /// The event kind does not exist for this kind of document (`order`, `delivery`).
    case unknownEventKind(docKind: String, kind: String)
    /// The event is not a valid next step from the document's current status (no
    /// `delivered` before `picked_up`).
    case invalidTransition(docId: String, status: String, kind: String)
    /// An amount in a different currency from the order's.
    case currencyMismatch(expected: String, got: String)
    /// The device's role does not allow this change.
    case forbidden(role: String, action: String)
    /// No such document on this device.
    case notFound(docId: String)
    /// The document's first change has not arrived yet; sync will bring it.
    case incomplete(docId: String)
    /// The string is not a document id (`ord_…`, `dlv_…`).
    case invalidDocId(id: String)
    /// An order id where a delivery was expected, or the other way round.
    case wrongKind(docId: String, expected: String)
    /// A document or the store was written by a newer Waybill: upgrade the app.
    case futureSchema(reason: String)
    /// A document does not match the schema, or change bytes are corrupt.
    case corruptDocument(docId: String, reason: String)
    /// The local store failed (not a database, SQLite error); nothing was changed.
    case storage(reason: String)
    /// The device credential is missing, malformed, forged or expired: enrol again.
    case credential(reason: String)
    /// The relay could not be reached, the connection broke, TLS or certificate
    /// pinning failed, or the relay sent something unexpected.
    case network(reason: String)
    /// A step with the relay did not finish in time.
    case timeout(reason: String)
    /// The relay refused with a typed code (`BadCredential`, `RevokedCredential`,
    /// `UnsupportedVersion`, `ShuttingDown`…).
    case relayRefused(code: String, reason: String)
    /// A failure inside the SDK itself.
    case `internal`(reason: String)

    /// The Swift error for any error an SDK call threw.
    public init(_ error: Error) {
        switch error {
        case let error as ReplicaError:
            self = error
        case let error as WaybillError:
            self = ReplicaError(error)
        default:
            // The generated bindings' own failures (a Rust panic, a buffer that
            // does not decode): nothing the app did.
            self = .internal(reason: String(describing: error))
        }
    }

    /// The Swift error for the generated bindings' `WaybillError`.
    public init(_ error: WaybillError) {
        switch error {
        case let .InvalidInput(field, reason): self = .invalidInput(field: field, reason: reason)
        case let .UnknownEventKind(docKind, kind): self = .unknownEventKind(docKind: docKind, kind: kind)
        case let .InvalidTransition(docId, status, kind):
            self = .invalidTransition(docId: docId, status: status, kind: kind)
        case let .CurrencyMismatch(expected, got): self = .currencyMismatch(expected: expected, got: got)
        case let .Forbidden(role, action): self = .forbidden(role: role, action: action)
        case let .NotFound(docId): self = .notFound(docId: docId)
        case let .Incomplete(docId): self = .incomplete(docId: docId)
        case let .InvalidDocId(id): self = .invalidDocId(id: id)
        case let .WrongKind(docId, expected): self = .wrongKind(docId: docId, expected: expected)
        case let .FutureSchema(reason): self = .futureSchema(reason: reason)
        case let .CorruptDocument(docId, reason): self = .corruptDocument(docId: docId, reason: reason)
        case let .Storage(reason): self = .storage(reason: reason)
        case let .Credential(reason): self = .credential(reason: reason)
        case let .Network(reason): self = .network(reason: reason)
        case let .Timeout(reason): self = .timeout(reason: reason)
        case let .RelayRefused(code, reason): self = .relayRefused(code: code, reason: reason)
        case let .Internal(reason): self = .internal(reason: reason)
        }
    }

    /// The call was refused before anything was written: fix the input or the
    /// workflow, retrying the same call fails the same way.
    public var isRefusal: Bool {
        switch self {
        case .invalidInput, .unknownEventKind, .invalidTransition, .currencyMismatch,
             .forbidden, .invalidDocId, .wrongKind:
            return true
        default:
            return false
        }
    }

    /// A failure on the way to or at the relay that may pass on a later attempt.
    public var isRetryable: Bool {
        switch self {
        case .network, .timeout:
            return true
        case let .relayRefused(code, _):
            return code == "ShuttingDown"
        default:
            return false
        }
    }
}

extension ReplicaError: LocalizedError {
    public var errorDescription: String? {
        switch self {
        case let .invalidInput(field, reason): return "invalid \(field): \(reason)"
        case let .unknownEventKind(docKind, kind): return "`\(kind)` is not a \(docKind) event"
        case let .invalidTransition(docId, status, kind):
            return "cannot record `\(kind)` on \(docId): it is `\(status)`"
        case let .currencyMismatch(expected, got):
            return "currency \(got) does not match the order's \(expected)"
        case let .forbidden(role, action): return "a \(role) device may not \(action)"
        case let .notFound(docId): return "document \(docId) is not on this device"
        case let .incomplete(docId): return "document \(docId) is not complete on this device yet"
        case let .invalidDocId(id): return "`\(id)` is not a document id"
        case let .wrongKind(docId, expected): return "\(docId) is not a \(expected)"
        case let .futureSchema(reason), let .storage(reason), let .credential(reason),
             let .network(reason), let .timeout(reason), let .internal(reason):
            return reason
        case let .corruptDocument(_, reason), let .relayRefused(_, reason):
            return reason
        }
    }
}
