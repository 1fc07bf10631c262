//! Who a device is and what role it plays.

use serde::{Deserialize, Serialize};

/// A device's role, which decides what it may see and change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A courier's phone: its own deliveries.
    Courier,
    /// A store tablet: its store's orders.
    Store,
    /// Dispatch and operations: everything.
    Dispatcher,
}

impl Role {
    /// The name used in credentials and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Courier => "courier",
            Role::Store => "store",
            Role::Dispatcher => "dispatcher",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The identity a replica is opened with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceIdentity {
    /// Unique device id; recorded as the actor of every event it writes.
    pub device_id: String,
    /// What it may do.
    pub role: Role,
    /// The store, for store devices (and optionally couriers based at one).
    pub store_id: Option<String>,
    /// The courier id, for courier devices.
    pub courier_id: Option<String>,
}

impl DeviceIdentity {
    /// A dispatcher device.
    pub fn dispatcher(device_id: impl Into<String>) -> Self {
        Self {
            device_id: device_id.into(),
            role: Role::Dispatcher,
            store_id: None,
            courier_id: None,
        }
    }

    /// A store tablet.
    pub fn store(device_id: impl Into<String>, store_id: impl Into<String>) -> Self {
        Self {
            device_id: device_id.into(),
            role: Role::Store,
            store_id: Some(store_id.into()),
            courier_id: None,
        }
    }

    /// A courier phone.
    pub fn courier(device_id: impl Into<String>, courier_id: impl Into<String>) -> Self {
        Self {
            device_id: device_id.into(),
            role: Role::Courier,
            store_id: None,
            courier_id: Some(courier_id.into()),
        }
    }
}
