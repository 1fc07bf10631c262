//! A store tablet and a courier's phone, each with its own store file, exchanging
//! changes by hand (the sync layer automates exactly this).
//!
//! Run: `cargo run -p waybill-core --example quickstart`

use std::sync::Arc;
use waybill_core::model::{EventDetails, NewDelivery, NewLedgerEntry, NewOrder, PaymentMethod};
use waybill_core::replica::{DocChange, ReplicaOptions};
use waybill_core::store::query::DeliveryQuery;
use waybill_core::{DeviceIdentity, Replica};

/// Send every unacknowledged local change of `from` to `to`, then acknowledge them.
fn exchange(from: &Replica, to: &Replica) -> Result<(), Box<dyn std::error::Error>> {
    let outbox = from.outbox(10_000)?;
    for entry in &outbox {
        to.apply_remote(&entry.doc_id.parse()?, std::slice::from_ref(&entry.bytes))?;
    }
    from.ack(&outbox.iter().map(|e| e.hash.clone()).collect::<Vec<_>>())?;
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("waybill-quickstart-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let tablet = Replica::open(
        dir.join("tablet.db"),
        DeviceIdentity::store("tablet-1", "S1"),
        ReplicaOptions::default(),
    )?;
    let phone = Replica::open(
        dir.join("phone.db"),
        DeviceIdentity::courier("phone-7", "courier-7"),
        ReplicaOptions::default(),
    )?;

    // The store takes an order (the JSON an integrator or the command line hands in).
    let order: NewOrder = serde_json::from_str(
        r#"{"number": "S1-000123", "channel": "web", "store": "S1",
            "customer": {"id": "c-88", "name": "Leila Karimi", "phone": "+98 912 000 0000",
                         "address": "12 Vali-Asr St, Tehran"},
            "currency": "IRR", "fulfilment": "delivery",
            "lines": [{"sku": "TEA-500", "name": "Black tea 500 g", "qty": 2, "unit_price": 1850000}]}"#,
    )?;
    let order_id = tablet.create_order(&order)?;
    for step in ["confirmed", "picking", "packed"] {
        tablet.record_event(&order_id, step, &EventDetails::default())?;
    }
    let delivery_id = tablet.assign_courier(&order_id, "courier-7", &NewDelivery::default())?;

    // The tablet's screen refreshes when the courier's changes arrive.
    let _subscription = tablet.subscribe(Arc::new(|changed: &[DocChange]| {
        for c in changed {
            println!("tablet: {} changed ({:?})", c.doc_id, c.origin);
        }
    }));

    exchange(&tablet, &phone)?;
    let mine = phone.deliveries(&DeliveryQuery {
        courier: Some("courier-7".into()),
        ..Default::default()
    })?;
    println!(
        "phone: {} delivery assigned, status {}",
        mine.len(),
        mine[0].status
    );

    // Offline on the road: pick up, deliver (which completes the order), take cash.
    phone.record_event(&delivery_id, "picked_up", &EventDetails::default())?;
    phone.record_event(&delivery_id, "delivered", &EventDetails::default())?;
    let cash = NewLedgerEntry {
        delivery_id: Some(delivery_id.to_string()),
        ..NewLedgerEntry::payment(PaymentMethod::Cash, 3_700_000, "IRR")
    };
    phone.record_payment(&order_id, &cash)?;
    println!(
        "phone: {} changes waiting to upload",
        phone.pending_uploads()?
    );

    // Back online.
    exchange(&phone, &tablet)?;
    let view = tablet.order(&order_id)?;
    println!(
        "tablet: order {} is {}, balance due {} {}",
        view.number, view.status, view.balance.due, view.currency
    );
    for e in &view.timeline {
        println!("  {} {} by {}", e.at, e.kind, e.actor);
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
