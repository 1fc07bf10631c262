//! `waybill admin-token`: a bearer token for the HTTP API and dashboard.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;

use super::output::write_line;
use super::{CliError, now_ms};
use crate::http::auth;

/// `waybill admin-token`.
#[derive(Args, Debug)]
pub struct AdminTokenArgs {
    /// The relay's data directory.
    #[arg(long, env = "WAYBILL_DATA", value_name = "DIR")]
    pub data: PathBuf,
    /// Revoke every admin token issued before this one.
    #[arg(long = "revoke-all")]
    pub revoke_all: bool,
}

/// Issue a token, store its hash and print the token (it is shown only once).
pub(crate) fn run(args: &AdminTokenArgs, out: &mut dyn Write) -> Result<(), CliError> {
    // Like `revoke`: a directory without a relay is a typo, not a new relay.
    if !args.data.join("relay-id").is_file() {
        return Err(CliError::NoRelay {
            data: args.data.clone(),
        });
    }
    let token = auth::issue(&args.data, now_ms(), args.revoke_all)
        .map_err(|e| CliError::io(e.path.display(), e.source))?;
    write_line(out, token)
}
