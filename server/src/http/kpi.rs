//! The dashboard's KPIs over a time range, computed from the dispatcher's
//! documents on request (cost: one document read per order created in the
//! range and per delivery of those orders).
//!
//! Definitions (also in the OpenAPI file):
//! - **fulfilment time**: from the order's creation to its `completed` event
//!   (a delivery's `delivered` completes its order), over completed orders;
//!   p50 and p90 by nearest rank.
//! - **on-time rate**: delivered deliveries with a time window whose
//!   `delivered` event is at or before the window's end, over delivered
//!   deliveries with a window.
//! - **failed-attempt rate**: `failed_attempt` events over delivery attempts
//!   (`failed_attempt` + `delivered` events).
//! - **return rate**: orders with a return (a return entry, or a
//!   `return_requested`/`returned` event) over orders that reached the customer
//!   (completed, or with a return).
//! - **cash collected per courier**: cash payments recorded at a delivery's door,
//!   by the delivery's current courier and currency.
//! - **unreconciled cash**: orders where cash was collected at the door but the
//!   order's ledger does not balance (`balance.due != 0`): the amount still due
//!   (positive) or over-collected (negative), per currency.

use std::collections::BTreeMap;

use serde::Serialize;
use waybill_core::model::{EntryKind, PaymentMethod};
use waybill_core::replica::{DeliveryView, OrderView};

/// One order with its deliveries.
#[derive(Debug, Clone)]
pub struct OrderFacts {
    /// The order.
    pub order: OrderView,
    /// Its deliveries that the dispatcher holds.
    pub deliveries: Vec<DeliveryView>,
}

/// A ratio with its parts, so a chart can say "3 of 4".
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Rate {
    /// The count on top.
    pub count: u64,
    /// Out of.
    pub of: u64,
    /// `count / of`, or null when `of` is 0.
    pub rate: Option<f64>,
}

impl Rate {
    fn new(count: u64, of: u64) -> Self {
        Self {
            count,
            of,
            rate: (of > 0).then(|| count as f64 / of as f64),
        }
    }
}

/// Money per currency.
pub type Amounts = BTreeMap<String, i64>;

/// The KPIs of a range.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Kpis {
    /// Range start (Unix ms, inclusive).
    pub from_ms: i64,
    /// Range end (Unix ms, exclusive).
    pub to_ms: i64,
    /// Orders created in the range.
    pub orders: u64,
    /// Orders per channel.
    pub orders_per_channel: BTreeMap<String, u64>,
    /// Orders per status now.
    pub orders_per_status: BTreeMap<String, u64>,
    /// Orders created per bucket (`bucket_ms` wide, starting at `from_ms`).
    pub orders_over_time: Vec<u64>,
    /// Width of a bucket of `orders_over_time`.
    pub bucket_ms: i64,
    /// Completed orders with a fulfilment time.
    pub fulfilled: u64,
    /// Median fulfilment time (ms).
    pub fulfilment_p50_ms: Option<i64>,
    /// 90th percentile fulfilment time (ms).
    pub fulfilment_p90_ms: Option<i64>,
    /// Delivered on time.
    pub on_time: Rate,
    /// Failed attempts.
    pub failed_attempts: Rate,
    /// Returns.
    pub returns: Rate,
    /// Cash collected at the door, per courier and currency.
    pub cash_per_courier: BTreeMap<String, Amounts>,
    /// Unreconciled cash per currency (see the module docs).
    pub unreconciled_cash: Amounts,
    /// Orders with unreconciled cash.
    pub unreconciled_orders: Vec<String>,
    /// True when the range held more orders than one request reads (the newest
    /// ones were counted); narrow the range.
    pub truncated: bool,
}

/// Compute the KPIs of orders created in `[from_ms, to_ms)`.
pub fn compute(facts: &[OrderFacts], from_ms: i64, to_ms: i64) -> Kpis {
    let span = (to_ms - from_ms).max(1);
    // Hourly buckets up to two days, daily beyond.
    let bucket_ms = if span <= 2 * 86_400_000 {
        3_600_000
    } else {
        86_400_000
    };
    let buckets = usize::try_from((span + bucket_ms - 1) / bucket_ms).unwrap_or(0);
    let mut k = Kpis {
        from_ms,
        to_ms,
        orders: 0,
        orders_per_channel: BTreeMap::new(),
        orders_per_status: BTreeMap::new(),
        orders_over_time: vec![0; buckets.min(1000)],
        bucket_ms,
        fulfilled: 0,
        fulfilment_p50_ms: None,
        fulfilment_p90_ms: None,
        on_time: Rate::new(0, 0),
        failed_attempts: Rate::new(0, 0),
        returns: Rate::new(0, 0),
        cash_per_courier: BTreeMap::new(),
        unreconciled_cash: BTreeMap::new(),
        unreconciled_orders: Vec::new(),
        truncated: false,
    };
    let mut fulfilment = Vec::new();
    let (mut on_time, mut with_window) = (0, 0);
    let (mut failed, mut attempts) = (0, 0);
    let (mut returned, mut reached) = (0, 0);
    for f in facts {
        let o = &f.order;
        let created = o.created_at.wall_ms;
        if created < from_ms || created >= to_ms {
            continue;
        }
        k.orders += 1;
        *k.orders_per_channel
            .entry(enum_name(&o.channel))
            .or_default() += 1;
        *k.orders_per_status.entry(o.status.clone()).or_default() += 1;
        if let Some(slot) = usize::try_from((created - from_ms) / bucket_ms)
            .ok()
            .and_then(|i| k.orders_over_time.get_mut(i))
        {
            *slot += 1;
        }
        let completed = o
            .timeline
            .iter()
            .find(|e| e.kind == "completed")
            .map(|e| e.at.wall_ms);
        if let Some(at) = completed {
            fulfilment.push((at - created).max(0));
        }
        let has_return = !o.returns.is_empty()
            || o.timeline
                .iter()
                .any(|e| e.kind == "return_requested" || e.kind == "returned");
        if has_return {
            returned += 1;
        }
        if completed.is_some() || has_return {
            reached += 1;
        }
        let mut door_cash = false;
        for entry in &o.payments {
            if entry.kind != EntryKind::Payment || entry.method != PaymentMethod::Cash {
                continue;
            }
            let Some(delivery_id) = &entry.delivery_id else {
                continue;
            };
            door_cash = true;
            let courier = f
                .deliveries
                .iter()
                .find(|d| &d.id == delivery_id)
                .and_then(|d| d.courier.clone())
                .unwrap_or_else(|| "(unknown)".to_owned());
            *k.cash_per_courier
                .entry(courier)
                .or_default()
                .entry(entry.currency.clone())
                .or_default() += entry.amount;
        }
        if door_cash && o.balance.due != 0 {
            *k.unreconciled_cash.entry(o.currency.clone()).or_default() += o.balance.due;
            k.unreconciled_orders.push(o.id.clone());
        }
        for d in &f.deliveries {
            let delivered = d
                .timeline
                .iter()
                .filter(|e| e.kind == "delivered")
                .map(|e| e.at.wall_ms)
                .min();
            failed += d
                .timeline
                .iter()
                .filter(|e| e.kind == "failed_attempt")
                .count() as u64;
            attempts += d
                .timeline
                .iter()
                .filter(|e| e.kind == "failed_attempt" || e.kind == "delivered")
                .count() as u64;
            if let (Some(at), Some(window)) = (delivered, d.window) {
                with_window += 1;
                if at <= window.end_ms {
                    on_time += 1;
                }
            }
        }
    }
    fulfilment.sort_unstable();
    k.fulfilled = fulfilment.len() as u64;
    k.fulfilment_p50_ms = percentile(&fulfilment, 50);
    k.fulfilment_p90_ms = percentile(&fulfilment, 90);
    k.on_time = Rate::new(on_time, with_window);
    k.failed_attempts = Rate::new(failed, attempts);
    k.returns = Rate::new(returned, reached);
    k
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[i64], p: usize) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len()).div_ceil(100).max(1);
    sorted.get(rank - 1).copied()
}

fn enum_name<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        _ => "unknown".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<i64> = (1..=10).collect();
        assert_eq!(percentile(&v, 50), Some(5));
        assert_eq!(percentile(&v, 90), Some(9));
        assert_eq!(percentile(&[7], 90), Some(7));
        assert_eq!(percentile(&[], 50), None);
        assert_eq!(percentile(&[1, 2, 3], 50), Some(2));
    }

    #[test]
    fn an_empty_range_has_no_rates() {
        let k = compute(&[], 0, 3_600_000);
        assert_eq!(k.orders, 0);
        assert_eq!(k.on_time.rate, None);
        assert_eq!(k.orders_over_time, vec![0]);
    }
}
