//! Realistic orders for the load generator, built through the core's typed API so
//! the figures use the real document model: an order has a customer (id, name,
//! phone, address), channel, store, currency, fulfilment, a note, 3 lines, and
//! after creation (`placed`) the events `confirmed` and `picking`: 3 Automerge
//! changes. `bench/peer/` builds the same object with the same edits.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use waybill_core::ReplicaError;
use waybill_core::ids::DocId;
use waybill_core::model::{Channel, Customer, EventDetails, Fulfilment, NewLine, NewOrder};
use waybill_core::replica::Replica;

const FIRST: [&str; 8] = [
    "Leila", "Reza", "Sara", "Omid", "Maryam", "Kian", "Nika", "Arash",
];
const LAST: [&str; 8] = [
    "Karimi", "Ahmadi", "Hosseini", "Rahimi", "Moradi", "Jafari", "Sadeghi", "Tehrani",
];
const PRODUCTS: [&str; 6] = [
    "Black tea 500 g",
    "Basmati rice 5 kg",
    "Saffron 2 g",
    "Pistachios 1 kg",
    "Dates 600 g",
    "Olive oil 1 l",
];
const CHANNELS: [Channel; 4] = [
    Channel::Web,
    Channel::App,
    Channel::Pos,
    Channel::CallCentre,
];

/// Events recorded after creation, in order.
pub const SEED_EVENTS: [&str; 2] = ["confirmed", "picking"];
/// The event each side records in the reconnect scenario.
pub const RECONNECT_EVENT: &str = "packed";

/// Deterministic order `i` of `store`.
pub fn new_order(store: &str, i: usize) -> NewOrder {
    let mut rng = StdRng::seed_from_u64(i as u64 ^ 0x5741_5942);
    let lines = (0..3)
        .map(|_| {
            let p = rng.gen_range(0..PRODUCTS.len());
            NewLine {
                sku: format!("SKU-{p:03}-{:02}", rng.gen_range(0..20)),
                name: PRODUCTS[p].to_owned(),
                qty: rng.gen_range(1..5),
                unit_price: 100_000 * rng.gen_range(1..40),
            }
        })
        .collect();
    let first = FIRST[rng.gen_range(0..FIRST.len())];
    let last = LAST[rng.gen_range(0..LAST.len())];
    NewOrder {
        number: format!("{store}-{i:06}"),
        channel: CHANNELS[i % CHANNELS.len()],
        store: store.to_owned(),
        customer: Customer {
            id: format!("c-{}", rng.gen_range(0..5000)),
            name: format!("{first} {last}"),
            phone: format!(
                "+98 912 {:03} {:04}",
                rng.gen_range(0..1000),
                rng.gen_range(0..10000)
            ),
            address: format!("{} Vali-Asr St, Tehran", rng.gen_range(1..400)),
        },
        currency: "IRR".to_owned(),
        fulfilment: Fulfilment::Delivery,
        lines,
        note: Some("Ring twice; leave with the doorman.".to_owned()),
    }
}

/// Create order `i` of `store` on `replica` and record the seed events: 3 changes.
pub fn seed_order(replica: &Replica, store: &str, i: usize) -> Result<DocId, ReplicaError> {
    let id = replica.create_order(&new_order(store, i))?;
    for kind in SEED_EVENTS {
        replica.record_event(&id, kind, &EventDetails::default())?;
    }
    Ok(id)
}

/// Record `kind` on each of `ids`.
pub fn record_all(replica: &Replica, ids: &[DocId], kind: &str) -> Result<(), ReplicaError> {
    for id in ids {
        replica.record_event(id, kind, &EventDetails::default())?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use waybill_core::identity::DeviceIdentity;
    use waybill_core::replica::ReplicaOptions;

    #[test]
    fn orders_are_deterministic_and_valid() {
        assert_eq!(new_order("S1", 7), new_order("S1", 7));
        assert_ne!(new_order("S1", 7), new_order("S1", 8));
        let replica =
            Replica::open_in_memory(DeviceIdentity::store("t", "S1"), ReplicaOptions::default())
                .unwrap();
        let id = seed_order(&replica, "S1", 1).unwrap();
        record_all(&replica, std::slice::from_ref(&id), RECONNECT_EVENT).unwrap();
        assert_eq!(replica.pending_uploads().unwrap(), 4);
    }
}
