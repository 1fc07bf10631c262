//! The command line of `waybill device`: its flags and subcommands (the handlers
//! are in `device.rs`).

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};
use waybill_core::model::PaymentMethod;

/// `waybill device`.
#[derive(Args, Debug)]
pub struct DeviceArgs {
    /// The device's store file (SQLite); `init` creates it.
    #[arg(long, env = "WAYBILL_DB", value_name = "FILE")]
    pub db: PathBuf,
    /// What to do.
    #[command(subcommand)]
    pub command: DeviceCommand,
}

/// A payment method, as the command line spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MethodArg {
    /// Cash.
    Cash,
    /// Card terminal.
    Card,
    /// Paid online.
    Online,
    /// Paid in the retailer's app.
    #[value(name = "in_app")]
    InApp,
    /// Charged to the customer's account.
    Account,
}

impl From<MethodArg> for PaymentMethod {
    fn from(method: MethodArg) -> Self {
        match method {
            MethodArg::Cash => PaymentMethod::Cash,
            MethodArg::Card => PaymentMethod::Card,
            MethodArg::Online => PaymentMethod::Online,
            MethodArg::InApp => PaymentMethod::InApp,
            MethodArg::Account => PaymentMethod::Account,
        }
    }
}

/// The device commands: `init`, and the commands on an initialised device.
#[derive(Subcommand, Debug)]
pub enum DeviceCommand {
    /// Set this store file up for the device a credential names.
    Init {
        /// The credential file from `waybill enroll`.
        #[arg(long)]
        credential: PathBuf,
        /// Reach the relay here instead of the address in the credential.
        #[arg(long, value_name = "HOST:PORT")]
        relay: Option<String>,
        /// Print a JSON object instead of a line.
        #[arg(long)]
        json: bool,
    },
    /// A command on an initialised device.
    #[command(flatten)]
    Use(DeviceAction),
}

/// The commands on an initialised device.
#[derive(Subcommand, Debug)]
pub enum DeviceAction {
    /// Create or show an order.
    Order {
        /// What to do.
        #[command(subcommand)]
        command: OrderCommand,
    },
    /// Show a delivery.
    Delivery {
        /// What to do.
        #[command(subcommand)]
        command: ShowDeliveryCommand,
    },
    /// List orders, newest first.
    Orders {
        /// Only orders with this status (`placed`, `completed`, `conflict`…).
        #[arg(long)]
        status: Option<String>,
        /// Only this store's orders.
        #[arg(long)]
        store: Option<String>,
        /// At most this many (default 100).
        #[arg(long)]
        limit: Option<u32>,
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// List deliveries.
    Deliveries {
        /// Only deliveries with this status (`assigned`, `delivered`…).
        #[arg(long)]
        status: Option<String>,
        /// Only this courier's deliveries.
        #[arg(long)]
        courier: Option<String>,
        /// At most this many (default 100).
        #[arg(long)]
        limit: Option<u32>,
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Assign a courier to an order (creates its delivery, or reassigns it).
    Assign {
        /// The order id.
        #[arg(value_name = "ORDER")]
        order: String,
        /// The courier.
        #[arg(long)]
        courier: String,
    },
    /// Record a status event on an order or a delivery.
    Event {
        /// The order or delivery id.
        #[arg(value_name = "DOC_ID")]
        doc_id: String,
        /// The event kind (`confirmed`, `picked_up`, `delivered`…).
        kind: String,
        /// A note kept with the event.
        #[arg(long)]
        note: Option<String>,
        /// For `conflict_resolved`: the outcome chosen, as an event kind.
        #[arg(long)]
        resolution: Option<String>,
        /// Print a JSON object instead of the new status.
        #[arg(long)]
        json: bool,
    },
    /// Record a payment on an order.
    Pay {
        /// The order id.
        #[arg(value_name = "ORDER")]
        order: String,
        /// The amount in minor units.
        #[arg(long)]
        amount: i64,
        /// The currency (must be the order's).
        #[arg(long)]
        currency: String,
        /// How the money moved.
        #[arg(long, value_enum)]
        method: MethodArg,
        /// The delivery at whose door it was collected.
        #[arg(long)]
        delivery: Option<String>,
        /// A terminal or bank reference.
        #[arg(long)]
        reference: Option<String>,
        /// Print a JSON object instead of a line.
        #[arg(long)]
        json: bool,
    },
    /// Exchange changes with the relay once, until caught up.
    Sync {
        /// Give up after this many seconds (connecting included).
        #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
        timeout: u64,
        /// Print a JSON object instead of a line.
        #[arg(long)]
        json: bool,
    },
    /// Write a document's Automerge bytes to a file.
    Export {
        /// The order or delivery id.
        #[arg(value_name = "DOC_ID")]
        doc_id: String,
        /// Where to write them.
        #[arg(long)]
        out: PathBuf,
    },
    /// The device, its sync position and what waits to be uploaded.
    Status {
        /// Print a JSON object instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// Local changes the relay refused, newest first.
    Refused {
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// `device order …`.
#[derive(Subcommand, Debug)]
pub enum OrderCommand {
    /// Create an order from NewOrder JSON; prints its id.
    Create {
        /// The JSON file, or `-` for stdin.
        #[arg(long, value_name = "FILE|-")]
        json: PathBuf,
    },
    /// Show an order with its status, balance and timeline.
    Show {
        /// The order id.
        id: String,
        /// Print the full JSON view instead of a summary.
        #[arg(long)]
        json: bool,
    },
}

/// `device delivery …`.
#[derive(Subcommand, Debug)]
pub enum ShowDeliveryCommand {
    /// Show a delivery with its status and timeline.
    Show {
        /// The delivery id.
        id: String,
        /// Print the full JSON view instead of a summary.
        #[arg(long)]
        json: bool,
    },
}
