//! Feeding what the relay sent into a [`ClientSession`], shared by the one-shot
//! sync and the background loop.

use super::error::NetError;
use super::link::{Inbound, Link, close_code};
use crate::protocol::ProtocolError;
use crate::replica::Replica;
use crate::sync::{ClientSession, SyncEvent};

/// What one message from the relay did.
pub(crate) enum Received {
    /// The session moved on.
    Events(Vec<SyncEvent>),
    /// The relay said goodbye.
    RelayClosed,
}

/// Why the session cannot go on.
pub(crate) enum Failure {
    /// The relay sent bytes that are not a message: tell it, then close.
    Undecodable(ProtocolError),
    /// Anything else: send what the session queued (an error, perhaps), then close.
    Net(NetError),
}

/// Wait for the relay's next message and hand it to the session. The session's
/// replies are not written here (see [`Link::flush`]). Cancel-safe until a
/// message arrives.
pub(crate) async fn receive(
    link: &mut Link,
    session: &mut ClientSession,
    replica: &Replica,
) -> Result<Received, Failure> {
    let inbound = link.recv().await;
    handle(link, session, replica, inbound)
}

/// Hand one inbound item to the session.
pub(crate) fn handle(
    link: &Link,
    session: &mut ClientSession,
    replica: &Replica,
    inbound: Inbound,
) -> Result<Received, Failure> {
    let lost = |reason: String| {
        Failure::Net(NetError::Connection {
            addr: link.addr.clone(),
            reason,
        })
    };
    match inbound {
        Inbound::Message(message, _) => match session.handle(replica, message) {
            Ok(_) if session.is_closed() => Ok(Received::RelayClosed),
            Ok(events) => Ok(Received::Events(events)),
            Err(source) => Err(Failure::Net(NetError::Sync {
                addr: link.addr.clone(),
                source,
            })),
        },
        Inbound::Invalid(error) => Err(Failure::Undecodable(error)),
        Inbound::Finished if session.is_closed() => Ok(Received::RelayClosed),
        Inbound::Finished => Err(lost("the relay ended the session".into())),
        Inbound::Lost(reason) => Err(lost(reason)),
    }
}

/// End a failed session and return the error to report.
pub(crate) async fn fail(
    mut link: Link,
    session: &mut ClientSession,
    failure: Failure,
) -> NetError {
    match failure {
        Failure::Undecodable(error) => link.refuse(error).await,
        Failure::Net(error) => {
            // The session may have queued an error for the relay; best effort.
            let _ = link.flush(session).await;
            link.close(close_code::PROTOCOL_ERROR, b"session failed")
                .await;
            error
        }
    }
}

/// Say goodbye and close.
pub(crate) async fn goodbye(mut link: Link, session: &mut ClientSession) {
    session.close();
    let _ = link.flush(session).await;
    link.close(close_code::BYE, b"bye").await;
}
