//! The wire protocol between devices and the relay: versioned messages in
//! length-prefixed frames. Pure encoding and decoding, no I/O: the sync state
//! machines produce and consume [`Message`]s, and a transport moves the frames.
//!
//! The format is documented in PROTOCOL.md.

mod error;
mod frame;
mod message;

pub use error::{ErrorCode, ProtocolError};
pub use frame::{FrameDecoder, encode_frame};
pub use message::{
    Changes, Cursor, DocSnapshot, DocSync, DocSyncComplete, DocSyncOffered, Hello, LogEntry,
    Message, Refusal, Snapshots, Unshare, Upload, UploadAck, UploadChange, Version, Welcome,
    WireError,
};

/// Four bytes opening every `Hello`, so a relay can tell a Waybill peer from noise.
pub const MAGIC: [u8; 4] = *b"WYBL";

/// The protocol version this build speaks (1.1 added [`Snapshots`]).
pub const PROTOCOL_VERSION: Version = Version { major: 1, minor: 1 };

/// The first version whose relay sends a never-synced device [`Snapshots`].
pub const SNAPSHOTS_SINCE: Version = Version { major: 1, minor: 1 };

/// Largest frame payload accepted unless configured otherwise (8 MiB).
pub const DEFAULT_MAX_FRAME: u32 = 8 * 1024 * 1024;

/// Encode a message as one frame (length prefix + postcard payload).
pub fn encode(message: &Message, max_frame: u32) -> Result<Vec<u8>, ProtocolError> {
    let payload = postcard::to_stdvec(message).map_err(|e| ProtocolError::Encode(e.to_string()))?;
    encode_frame(&payload, max_frame)
}

/// Decode one frame's payload into a message.
pub fn decode(payload: &[u8]) -> Result<Message, ProtocolError> {
    let (message, rest) = postcard::take_from_bytes::<Message>(payload)
        .map_err(|e| ProtocolError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(ProtocolError::Malformed(format!(
            "{} trailing bytes after the message",
            rest.len()
        )));
    }
    Ok(message)
}

/// Agree on a version with a peer: the major versions must match; the lower minor
/// wins, so neither side sends what the other cannot read.
pub fn negotiate(ours: Version, theirs: Version) -> Result<Version, ProtocolError> {
    if ours.major != theirs.major {
        return Err(ProtocolError::UnsupportedVersion { ours, theirs });
    }
    Ok(Version {
        major: ours.major,
        minor: ours.minor.min(theirs.minor),
    })
}

/// Check the first message of a connection: a `Hello` with the magic bytes and a
/// version we can speak. Returns the hello and the negotiated version.
pub fn accept_hello(message: Message) -> Result<(Hello, Version), ProtocolError> {
    match message {
        Message::Hello(hello) => {
            if hello.magic != MAGIC {
                return Err(ProtocolError::Malformed(
                    "hello without the Waybill magic bytes".into(),
                ));
            }
            let version = negotiate(PROTOCOL_VERSION, hello.version)?;
            Ok((hello, version))
        }
        other => Err(ProtocolError::Unexpected {
            expected: "hello",
            got: other.name(),
        }),
    }
}

#[cfg(test)]
mod tests;
