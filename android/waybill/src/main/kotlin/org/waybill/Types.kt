package org.waybill

import uniffi.waybill_ffi.ConnectionStateRecord
import uniffi.waybill_ffi.SyncReportRecord
import uniffi.waybill_ffi.WaybillException

/**
 * Every failure of the SDK: the generated sealed class, so a `when` over it is
 * exhaustive and the compiler points at every `when` to revisit when a case is added.
 * (Kotlin does not reach nested classes through an alias: the cases are named
 * `WaybillException.Forbidden`, `WaybillException.Network`, ….)
 *
 * ```
 * try { waybill.recordEvent(orderId, "cancelled") } catch (e: WaybillFailure) {
 *     when (e) {
 *         is WaybillException.Forbidden -> showNotAllowed(e.action)
 *         is WaybillException.InvalidTransition -> showCannot(e.kind, e.status)
 *         else -> showError(e)
 *     }
 * }
 * ```
 */
typealias WaybillFailure = WaybillException

/** What one [Waybill.syncNow] exchange moved. */
typealias SyncReport = SyncReportRecord

/** The connection part of [SyncStatus]: offline, connecting, syncing, live, or stopped. */
typealias ConnectionState = ConnectionStateRecord

/**
 * Whether the same call may succeed later without anything changing on this device
 * (the network or the relay was unreachable or slow). Refusals and invalid input fail
 * the same way every time; storage, credential and internal failures need attention.
 */
val WaybillFailure.isRetryable: Boolean
    get() = when (this) {
        is WaybillException.Network, is WaybillException.Timeout -> true
        is WaybillException.InvalidInput,
        is WaybillException.UnknownEventKind,
        is WaybillException.InvalidTransition,
        is WaybillException.CurrencyMismatch,
        is WaybillException.Forbidden,
        is WaybillException.NotFound,
        is WaybillException.Incomplete,
        is WaybillException.InvalidDocId,
        is WaybillException.WrongKind,
        is WaybillException.FutureSchema,
        is WaybillException.CorruptDocument,
        is WaybillException.Storage,
        is WaybillException.Credential,
        is WaybillException.RelayRefused,
        is WaybillException.Internal,
        -> false
    }

/** True once the sync client is connected and caught up with the relay. */
val SyncStatus.isLive: Boolean get() = state is ConnectionStateRecord.Live
