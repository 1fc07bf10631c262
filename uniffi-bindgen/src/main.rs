//! The workspace's pinned `uniffi-bindgen`: the same uniffi version as `waybill-ffi`,
//! so generated bindings always match the library's scaffolding.
//! Run it through `scripts/generate-bindings.sh`.

fn main() {
    uniffi::uniffi_bindgen_main()
}
