//! Policy on one XMPP element: a message, carbon or file offer becomes an [`Event`], is
//! evaluated, recorded, and its effect decided: forwarded as it is, with its body rewritten,
//! preceded by the conversation's disclaimer, or bounced to the sender as a
//! `<policy-violation/>` error. Presence goes to [`super::xmpp_rooms`]. Stream management
//! goes no further: a client's request to start it is answered with `<failed/>` and any
//! other of its elements is dropped, from either side, since its counts would ignore what
//! imgate injects and blocks. Everything else passes untouched.
//!
//! Invariants: an element is archived at most once, even when it also arrives as a carbon
//! ([`super::copies`]); the disclaimer goes once per conversation per session; the bytes
//! returned are the element's own unless policy changed them, so passing costs no copy.

use std::borrow::Cow;
use std::sync::Mutex;

use imgate_crds::policy::{Direction, Protocol};
use tokio::io::AsyncWrite;

use super::copies::MessageCopy;
use super::shared::{ClientWriter, SessionInfo, Shared, now_ms, send};
use super::xmpp_inspect::{State, bare};
use crate::archive::record::{Body, Kind, Participant, RecordedVerdict};
use crate::inspect::event::{Content, ConversationKind, Event, FileOffer};
use crate::inspect::policy::{Action, Verdict};
use crate::inspect::xmpp::{
    Carbon, Forwarded, Stanza, StreamManagement, policy_error, stream_management_refused,
};

/// Applies policy to one element, already parsed as `stanza`; returns the bytes to pass on,
/// if any: `bytes` themselves unless policy rewrites them.
pub(super) async fn judge<'a, C: AsyncWrite + Unpin>(
    shared: &Shared,
    info: &SessionInfo,
    state: &Mutex<State>,
    wire: Direction,
    stanza: Stanza,
    bytes: &'a [u8],
    client: &ClientWriter<C>,
) -> std::io::Result<Option<Cow<'a, [u8]>>> {
    if let Some(sm) = stanza.stream_management {
        if let (StreamManagement::Start(namespace), Direction::Outbound) = (sm, wire) {
            tracing::debug!(target: "imgate::session", session = %info.session, "stream management refused: it does not cross imgate");
            send(
                &mut *client.lock().await,
                &stream_management_refused(namespace),
            )
            .await?;
        }
        return Ok(None);
    }
    if stanza.name == "presence" && wire == Direction::Outbound {
        let forward = super::xmpp_rooms::presence(shared, info, state, &stanza).await;
        return Ok(forward.then_some(Cow::Borrowed(bytes)));
    }
    if stanza.sasl || stanza.starttls || (stanza.body.is_none() && stanza.file.is_none()) {
        // Markup alone (XHTML-IM without a body) is text policy does not read: it does not
        // go on.
        return Ok(Some(stanza.forwardable(bytes, None)));
    }
    let (me, domain) = {
        let state = state.lock().unwrap_or_else(|p| p.into_inner());
        (state.me(), state.domain.clone())
    };
    // A carbon is judged as the message it copies: sent by the user, or to them.
    let (direction, address) = match (stanza.carbon, &stanza.forwarded) {
        (Some(Carbon::Sent), Some(inner)) => (Direction::Outbound, inner.clone()),
        (Some(Carbon::Received), Some(inner)) => (Direction::Inbound, inner.clone()),
        _ => (
            wire,
            Forwarded {
                from: stanza.from.clone(),
                to: stanza.to.clone(),
                kind: stanza.kind.clone(),
                id: stanza.id.clone(),
            },
        ),
    };
    let group = address.kind.as_deref() == Some("groupchat");
    let (sender, peer) = match direction {
        Direction::Outbound => (
            me.clone(),
            address
                .to
                .as_deref()
                .map(bare)
                .unwrap_or_else(|| domain.clone()),
        ),
        Direction::Inbound => (
            address
                .from
                .as_deref()
                .map(|f| if group { f.to_owned() } else { bare(f) })
                .unwrap_or_else(|| domain.clone()),
            me.clone(),
        ),
    };
    let room = group.then(|| {
        bare(if direction == Direction::Outbound {
            address.to.as_deref().unwrap_or_default()
        } else {
            address.from.as_deref().unwrap_or_default()
        })
    });
    let conv = match &room {
        Some(room) => format!("xmpp:{room}"),
        None => {
            let mut pair = [bare(&sender), peer.clone()];
            pair.sort();
            format!("xmpp:{}", pair.join("/"))
        }
    };
    let party = shared
        .party(info, Some(Protocol::Xmpp), sender.clone())
        .await;
    let recipients = if room.is_some() {
        Vec::new()
    } else {
        vec![peer.clone()]
    };
    let content = match (&stanza.body, &stanza.file) {
        (Some(text), _) => Content::Message { text: text.clone() },
        (None, Some(file)) => Content::File(FileOffer {
            name: file
                .name
                .clone()
                .unwrap_or_else(|| format!("({} transfer)", file.mechanism)),
            size: file.size,
            sha256: None,
        }),
        (None, None) => return Ok(Some(Cow::Borrowed(bytes))),
    };
    let event = Event {
        tenant: shared.tenant.clone(),
        protocol: Protocol::Xmpp,
        service: None,
        direction,
        sender: party.clone(),
        recipients: recipients.clone(),
        conversation: if room.is_some() {
            ConversationKind::Group
        } else {
            ConversationKind::Direct
        },
        room: room.clone(),
        content: content.clone(),
        urls: stanza.urls.clone(),
        at_ms: now_ms(),
    };
    let verdict = shared.evaluate(&event);
    let from = Participant::from(&party);
    let (body, text) = match &content {
        Content::Message { text } => {
            let delivered = verdict.delivered(text).into_owned();
            let record = Body::Message {
                session: info.session.clone(),
                dir: direction,
                protocol: Protocol::Xmpp,
                from,
                to: recipients,
                room: room.clone(),
                kind: if room.is_some() {
                    Kind::Group
                } else {
                    Kind::Direct
                },
                text: text.clone(),
                // An XML parser takes only UTF-8: what was read is what was sent.
                text_base64: None,
                delivered: (delivered != *text).then_some(delivered),
                verdict: RecordedVerdict::from(&verdict),
                msgid: address.id.clone(),
            };
            (record, text.clone())
        }
        Content::File(file) => {
            let record = Body::FileOffer {
                session: info.session.clone(),
                dir: direction,
                protocol: Protocol::Xmpp,
                from,
                to: recipients,
                name: file.name.clone(),
                size: file.size,
                sha256: None,
                verdict: RecordedVerdict::from(&verdict),
            };
            (record, format!("offers {}", file.name))
        }
        _ => return Ok(Some(Cow::Borrowed(bytes))),
    };
    // A carbon of a message already archived (or the direct copy of one archived from its
    // carbon) is judged but not archived again.
    let sender_bare = bare(&sender);
    let copy = match (&room, &stanza.body, &address.id) {
        (None, Some(text), Some(id)) => Some(MessageCopy {
            from: &sender_bare,
            to: &peer,
            id,
            text,
        }),
        _ => None,
    };
    let first = shared.copies.first(copy, stanza.carbon.is_some());
    let action = if first {
        shared.archive_verdict(&conv, body, &verdict)
    } else {
        verdict.action
    };
    tracing::info!(
        target: "imgate::message",
        session = %info.session,
        "{} {sender} in {conv}: {text:?} -> {}{}{}",
        if direction == Direction::Outbound { "out" } else { "in " },
        action.as_str(),
        verdict.rules_note(),
        if first { "" } else { " (a copy, already archived)" }
    );
    match action {
        Action::Allow | Action::Redact => {
            let mut disclaimer = None;
            if wire == Direction::Outbound
                && let (Some(text), Some(to)) = (&verdict.disclaimer, &stanza.to)
                && state
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .disclaimed
                    .insert(conv.clone())
            {
                let kind = stanza.kind.as_deref().unwrap_or("chat");
                // Known to the copies, so that its carbon is not taken for a message.
                let id = format!("{}-disclaimer", info.session);
                shared.copies.first(
                    Some(MessageCopy {
                        from: &me,
                        to: &peer,
                        id: &id,
                        text: &text.text,
                    }),
                    false,
                );
                disclaimer = Some(format!(
                    "<message to='{}' type='{}' id='{}'><body>{}</body></message>",
                    quick_xml::escape::escape(to.as_str()),
                    quick_xml::escape::escape(kind),
                    quick_xml::escape::escape(&id),
                    quick_xml::escape::escape(&*text.text)
                ));
            }
            let element = match (&stanza.body, action) {
                (Some(text), Action::Redact) => {
                    stanza.forwardable(bytes, Some(&verdict.delivered(text)))
                }
                _ => stanza.forwardable(bytes, None),
            };
            Ok(Some(match disclaimer {
                None => element,
                Some(disclaimer) => Cow::Owned([disclaimer.as_bytes(), &element].concat()),
            }))
        }
        Action::Block | Action::Quarantine => {
            if wire == Direction::Outbound {
                let bounce = policy_error(&stanza, &notice(&verdict));
                send(&mut *client.lock().await, &bounce).await?;
            }
            Ok(None)
        }
    }
}

fn notice(verdict: &Verdict) -> String {
    verdict.notices.first().cloned().unwrap_or_else(|| {
        let rules: Vec<&str> = verdict.rule_names().collect();
        format!("Blocked by policy ({})", rules.join(", "))
    })
}
