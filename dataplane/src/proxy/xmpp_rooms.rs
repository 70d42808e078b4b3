//! Multi-user chat membership in an inspected XMPP session: the user's own joins (presence
//! with the MUC `<x/>` to `room/nick`, XEP-0045) and leaves (unavailable presence to a room
//! they joined) are archived as `presence` records in the room's conversation, so that a
//! transcript shows when they were there.
//!
//! Invariants: a join is recorded once per room until the user leaves it (clients repeat the
//! join presence on reconnection and status changes); the record is appended before the
//! presence is forwarded, and in fail-closed mode a presence whose record failed is not
//! forwarded; every other presence passes unrecorded.

use std::sync::Mutex;

use imgate_crds::policy::{Direction, Protocol};

use super::shared::{SessionInfo, Shared};
use super::xmpp_inspect::{State, bare};
use crate::archive::record::{Body, Participant, PresenceChange};
use crate::inspect::xmpp::Stanza;

/// Records an outbound presence that joins or leaves a room; returns whether to forward it.
pub(super) async fn presence(
    shared: &Shared,
    info: &SessionInfo,
    state: &Mutex<State>,
    stanza: &Stanza,
) -> bool {
    let Some(to) = stanza.to.as_deref() else {
        return true;
    };
    let room = bare(to);
    let (change, me) = {
        let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
        let change = match stanza.kind.as_deref() {
            None if stanza.muc_join && state.rooms.insert(room.clone()) => PresenceChange::Join,
            Some("unavailable") if state.rooms.remove(&room) => PresenceChange::Leave,
            _ => return true,
        };
        (change, state.me())
    };
    let who = shared.party(info, Some(Protocol::Xmpp), me).await;
    let body = Body::Presence {
        session: info.session.clone(),
        dir: Direction::Outbound,
        protocol: Protocol::Xmpp,
        who: Participant::from(&who),
        change,
        text: to.split_once('/').map(|(_, nick)| nick.to_owned()),
        room: Some(room.clone()),
    };
    tracing::info!(
        target: "imgate::message",
        session = %info.session,
        "{} {} room {room}",
        who.handle,
        if change == PresenceChange::Join { "joined" } else { "left" }
    );
    shared.record_event(&format!("xmpp:{room}"), body)
}
