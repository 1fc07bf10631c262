//! `waybill`: the relay and the operators' command line.

fn main() {
    println!("waybill {}", env!("CARGO_PKG_VERSION"));
}
