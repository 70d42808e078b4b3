//! An inspected IRC session: lines in both directions are framed and parsed; messages and
//! DCC offers go through policy and into the archive before their effect reaches the other
//! side (forwarded, rewritten, or dropped with a NOTICE to the sender); everything else is
//! relayed unchanged.
//!
//! Invariants: lines are forwarded in the order received in each direction; no line is
//! buffered beyond [`MAX_LINE`] (an oversized line is answered with `417 ERR_INPUTTOOLONG`,
//! recorded and dropped); the disclaimer goes out once per conversation per session, before
//! the first message of that conversation.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use imgate_crds::policy::{Direction, Protocol};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, WriteHalf};

use super::lean_io::read_into;
use super::shared::{ClientWriter, SessionInfo, Shared, now_ms, split_for_relay};
use crate::archive::record::{Body, Kind, Participant, PresenceChange, RecordedVerdict};
use crate::inspect::event::{Content, ConversationKind, Event, FileOffer, Party};
use crate::inspect::irc::{Frame, IrcEvent, MAX_LINE, Message, next_line, with_text};
use crate::inspect::irc_credentials;
use crate::inspect::policy::{Action, Verdict};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

struct State {
    nick: String,
    disclaimed: HashSet<String>,
}

/// Relays an IRC session between `client` and `upstream` until either side closes.
pub async fn relay<C, U>(
    shared: Arc<Shared>,
    client: C,
    upstream: U,
    info: SessionInfo,
) -> std::io::Result<()>
where
    C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    U: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (client_read, client_write, upstream_read, upstream_write) =
        split_for_relay(client, upstream);
    let state = Arc::new(Mutex::new(State {
        nick: "*".into(),
        disclaimed: HashSet::new(),
    }));
    let outbound = pump(
        shared.clone(),
        info.clone(),
        state.clone(),
        Direction::Outbound,
        client_read,
        Sink::Upstream(upstream_write),
        client_write.clone(),
    );
    let inbound = pump(
        shared,
        info,
        state,
        Direction::Inbound,
        upstream_read,
        Sink::<U>::Client,
        client_write,
    );
    tokio::select! {
        result = outbound => result,
        result = inbound => result,
    }
}

enum Sink<U> {
    Upstream(WriteHalf<U>),
    Client,
}

async fn pump<R, U, C>(
    shared: Arc<Shared>,
    info: SessionInfo,
    state: Arc<Mutex<State>>,
    direction: Direction,
    mut reader: R,
    mut sink: Sink<U>,
    client: ClientWriter<C>,
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    U: AsyncWrite + Unpin,
    C: AsyncWrite + Unpin,
{
    let mut buffer = Vec::new();
    let mut read_at = Instant::now();
    // Bytes dropped so far of an oversized line whose end has not come yet: the rest of it,
    // up to its end, is dropped too (never read as a line of its own), and the line is
    // recorded once, with its length, when it ends.
    let mut dropping: Option<u64> = None;
    loop {
        // Every complete line in the buffer is judged and recorded first; the batch is
        // forwarded once its records are durable (one fsync for all of them).
        let mut batch = Vec::new();
        loop {
            if let Some(dropped) = dropping.as_mut() {
                let Some(end) = buffer.iter().position(|b| *b == b'\n') else {
                    *dropped += buffer.len() as u64;
                    buffer.clear();
                    break;
                };
                let total = *dropped + end as u64 + 1;
                buffer.drain(..=end);
                dropping = None;
                record_dropped(&shared, &info, direction, total).await;
                continue;
            }
            match next_line(&buffer) {
                Frame::Line { line, consumed } => {
                    // Boxed: an idle relay then does not carry a line's handling state.
                    let output = Box::pin(handle_line(
                        &shared, &info, &state, direction, line, &client,
                    ))
                    .await?;
                    if let Some(bytes) = output {
                        batch.extend_from_slice(&bytes);
                    }
                    buffer.drain(..consumed);
                }
                Frame::Oversized { .. } => {
                    // Dropped from here to the line's end, which may already be in the buffer
                    // with more lines after it.
                    let nick = state.lock().unwrap_or_else(|p| p.into_inner()).nick.clone();
                    dropping = Some(0);
                    if direction == Direction::Outbound {
                        client
                            .lock()
                            .await
                            .write_all(
                                format!(":imgate 417 {nick} :Input line was too long\r\n")
                                    .as_bytes(),
                            )
                            .await?;
                    }
                }
                Frame::NeedMore => break,
            }
        }
        if !batch.is_empty() {
            if let Err(error) = shared.settle().await {
                tracing::error!(%error, "archive failed; not forwarding (fail closed)");
                return Ok(());
            }
            match &mut sink {
                Sink::Upstream(upstream) => upstream.write_all(&batch).await?,
                Sink::Client => client.lock().await.write_all(&batch).await?,
            }
            shared.metrics.held(direction, read_at);
        }
        let read = tokio::time::timeout(shared.limits.idle, read_into(&mut reader, &mut buffer));
        match read.await {
            Ok(Ok(read)) if read > 0 => read_at = Instant::now(),
            ended => {
                // The connection ended in the middle of an oversized line: it is recorded
                // with what came of it.
                if let Some(dropped) = dropping {
                    record_dropped(&shared, &info, direction, dropped).await;
                }
                return match ended {
                    Ok(Err(error)) => Err(error),
                    _ => Ok(()),
                };
            }
        }
    }
}

/// Records that a line of `bytes` bytes, over [`MAX_LINE`], was dropped.
async fn record_dropped(shared: &Shared, info: &SessionInfo, direction: Direction, bytes: u64) {
    let _ = shared
        .archive(
            &info.session,
            Body::System {
                event: "irc-line-too-long".into(),
                detail: format!("{direction:?} line of {bytes} bytes (over {MAX_LINE}) dropped"),
            },
        )
        .await;
}

fn is_channel(target: &str) -> bool {
    target.starts_with(['#', '&', '+', '!'])
}

fn conversation(
    server: &str,
    me: &str,
    targets: &[String],
) -> (String, Option<String>, Vec<String>) {
    match targets.iter().find(|t| is_channel(t)) {
        Some(room) => (
            format!("irc:{server}:{}", room.to_lowercase()),
            Some(room.clone()),
            Vec::new(),
        ),
        None => {
            let mut pair = [
                me.to_lowercase(),
                targets.first().cloned().unwrap_or_default().to_lowercase(),
            ];
            pair.sort();
            (
                format!("irc:{server}:{}", pair.join("/")),
                None,
                targets.to_vec(),
            )
        }
    }
}

/// Handles one line; returns the bytes to pass on, if any.
async fn handle_line<C: AsyncWrite + Unpin>(
    shared: &Shared,
    info: &SessionInfo,
    state: &Mutex<State>,
    direction: Direction,
    line: &[u8],
    client: &ClientWriter<C>,
) -> std::io::Result<Option<Vec<u8>>> {
    let pass = |bytes: &[u8]| Some([bytes, b"\r\n"].concat());
    let Ok(message) = Message::parse(line) else {
        return Ok(pass(line));
    };
    let me = state.lock().unwrap_or_else(|p| p.into_inner()).nick.clone();
    let sender_nick = match direction {
        Direction::Outbound => me.clone(),
        Direction::Inbound => message
            .source
            .map(|s| {
                String::from_utf8_lossy(s.split(|b| *b == b'!').next().unwrap_or(s)).into_owned()
            })
            .unwrap_or_default(),
    };
    let host = info.server.split(':').next().unwrap_or_default();
    let sender = shared
        .party(info, Some(Protocol::Irc), format!("{sender_nick}@{host}"))
        .await;
    match message.event() {
        IrcEvent::Nick(nick) if direction == Direction::Outbound => {
            let previous = std::mem::replace(
                &mut state.lock().unwrap_or_else(|p| p.into_inner()).nick,
                nick.clone(),
            );
            // The first NICK names the session; later ones are renames worth a record.
            let recorded = previous == "*"
                || presence(
                    shared,
                    info,
                    &info.session,
                    &sender,
                    PresenceChange::Nick,
                    None,
                    Some(nick),
                );
            Ok(recorded.then(|| pass(line)).flatten())
        }
        IrcEvent::Join(rooms) if direction == Direction::Outbound => {
            let recorded = channels_presence(shared, info, &sender, PresenceChange::Join, rooms);
            Ok(recorded.then(|| pass(line)).flatten())
        }
        IrcEvent::Part(rooms) if direction == Direction::Outbound => {
            let recorded = channels_presence(shared, info, &sender, PresenceChange::Leave, rooms);
            Ok(recorded.then(|| pass(line)).flatten())
        }
        IrcEvent::Topic {
            channel,
            topic: Some(topic),
        } if direction == Direction::Outbound => {
            let recorded = channel_presence(
                shared,
                info,
                &sender,
                PresenceChange::Topic,
                channel,
                Some(topic),
            );
            Ok(recorded.then(|| pass(line)).flatten())
        }
        IrcEvent::Text { targets, text, .. } => {
            // A password sent to a service is judged as sent, and archived and reported
            // without its arguments (nor its bytes, nor what a rule made of it).
            let withheld = irc_credentials::withheld(&targets, &text);
            let text_base64 = match withheld {
                Some(_) => None,
                None => message.unreadable_text().map(|raw| BASE64.encode(raw)),
            };
            let (conv, room, recipients) = conversation(
                host,
                if direction == Direction::Outbound {
                    &me
                } else {
                    &sender_nick
                },
                &targets,
            );
            let event = event(
                shared,
                direction,
                sender.clone(),
                recipients.clone(),
                room.clone(),
                Content::Message { text: text.clone() },
            );
            let verdict = shared.evaluate(&event);
            let delivered = verdict.delivered(&text).into_owned();
            let (archived, archived_delivered) = match withheld {
                Some(withheld) => (withheld, None),
                None => (text.clone(), (delivered != text).then(|| delivered.clone())),
            };
            let body = Body::Message {
                session: info.session.clone(),
                dir: direction,
                protocol: Protocol::Irc,
                from: Participant::from(&sender),
                to: recipients,
                room: room.clone(),
                kind: if room.is_some() {
                    Kind::Group
                } else {
                    Kind::Direct
                },
                text: archived.clone(),
                text_base64,
                delivered: archived_delivered,
                verdict: RecordedVerdict::from(&verdict),
                msgid: message.tag("msgid"),
            };
            let action = shared.archive_verdict(&conv, body, &verdict);
            report(
                info,
                direction,
                &sender.handle,
                &conv,
                &archived,
                &verdict,
                action,
            );
            match action {
                Action::Allow | Action::Redact => {
                    let mut out = Vec::new();
                    if direction == Direction::Outbound
                        && let Some(disclaimer) = &verdict.disclaimer
                        && state
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .disclaimed
                            .insert(conv.clone())
                    {
                        let target = room
                            .clone()
                            .unwrap_or_else(|| targets.first().cloned().unwrap_or_default());
                        out.extend_from_slice(
                            format!("NOTICE {target} :{}\r\n", disclaimer.text).as_bytes(),
                        );
                    }
                    let rewritten = if action == Action::Redact {
                        with_text(&message, &delivered)
                    } else {
                        line.to_vec()
                    };
                    out.extend_from_slice(&rewritten);
                    out.extend_from_slice(b"\r\n");
                    Ok(Some(out))
                }
                Action::Block | Action::Quarantine => {
                    if direction == Direction::Outbound {
                        tell(client, &me, &verdict).await?;
                    }
                    Ok(None)
                }
            }
        }
        IrcEvent::Dcc { targets, offer } => {
            let (conv, room, recipients) = conversation(host, &me, &targets);
            let file = FileOffer {
                name: offer
                    .file
                    .clone()
                    .unwrap_or_else(|| format!("dcc-{}", offer.kind.to_lowercase())),
                size: offer.size,
                sha256: None,
            };
            let event = event(
                shared,
                direction,
                sender.clone(),
                recipients.clone(),
                room,
                Content::File(file.clone()),
            );
            let verdict = shared.evaluate(&event);
            let body = Body::FileOffer {
                session: info.session.clone(),
                dir: direction,
                protocol: Protocol::Irc,
                from: Participant::from(&sender),
                to: recipients,
                name: file.name.clone(),
                size: file.size,
                sha256: None,
                verdict: RecordedVerdict::from(&verdict),
            };
            let action = shared.archive_verdict(&conv, body, &verdict);
            report(
                info,
                direction,
                &sender.handle,
                &conv,
                &format!("offers {}", file.name),
                &verdict,
                action,
            );
            if matches!(action, Action::Block | Action::Quarantine) {
                if direction == Direction::Outbound {
                    tell(client, &me, &verdict).await?;
                }
                return Ok(None);
            }
            Ok(pass(line))
        }
        _ => Ok(pass(line)),
    }
}

/// Archives a join, leave, topic or rename by the session's user; false when it must not be
/// forwarded (the record failed in fail-closed mode).
fn presence(
    shared: &Shared,
    info: &SessionInfo,
    conv: &str,
    who: &Party,
    change: PresenceChange,
    room: Option<String>,
    text: Option<String>,
) -> bool {
    tracing::info!(
        target: "imgate::message",
        session = %info.session,
        "{} {} {}",
        who.handle,
        change.as_str(),
        room.as_deref().or(text.as_deref()).unwrap_or_default()
    );
    let body = Body::Presence {
        session: info.session.clone(),
        dir: Direction::Outbound,
        protocol: Protocol::Irc,
        who: Participant::from(who),
        change,
        room,
        text,
    };
    shared.record_event(conv, body)
}

/// [`presence`] in a channel, recorded in the channel's conversation.
fn channel_presence(
    shared: &Shared,
    info: &SessionInfo,
    who: &Party,
    change: PresenceChange,
    channel: String,
    text: Option<String>,
) -> bool {
    let host = info.server.split(':').next().unwrap_or_default();
    let conv = format!("irc:{host}:{}", channel.to_lowercase());
    presence(shared, info, &conv, who, change, Some(channel), text)
}

/// [`channel_presence`] for each channel of a JOIN or PART (other targets ignored).
fn channels_presence(
    shared: &Shared,
    info: &SessionInfo,
    who: &Party,
    change: PresenceChange,
    targets: Vec<String>,
) -> bool {
    targets
        .into_iter()
        .filter(|target| is_channel(target))
        .all(|channel| channel_presence(shared, info, who, change, channel, None))
}

fn event(
    shared: &Shared,
    direction: Direction,
    sender: Party,
    recipients: Vec<String>,
    room: Option<String>,
    content: Content,
) -> Event {
    Event {
        tenant: shared.tenant.clone(),
        protocol: Protocol::Irc,
        service: None,
        direction,
        sender,
        recipients,
        conversation: if room.is_some() {
            ConversationKind::Group
        } else {
            ConversationKind::Direct
        },
        room,
        content,
        urls: Vec::new(),
        at_ms: now_ms(),
    }
}

/// Tells the sender, in a NOTICE from imgate, why their message did not go out.
async fn tell<C: AsyncWrite + Unpin>(
    client: &ClientWriter<C>,
    nick: &str,
    verdict: &Verdict,
) -> std::io::Result<()> {
    let mut notices = verdict.notices.clone();
    if notices.is_empty() {
        let rules: Vec<&str> = verdict.rule_names().collect();
        notices.push(format!(
            "Your message was not delivered: blocked by policy ({})",
            rules.join(", ")
        ));
    }
    let mut client = client.lock().await;
    for notice in notices {
        client
            .write_all(format!(":imgate NOTICE {nick} :{notice}\r\n").as_bytes())
            .await?;
    }
    Ok(())
}

fn report(
    info: &SessionInfo,
    direction: Direction,
    from: &str,
    conv: &str,
    text: &str,
    verdict: &Verdict,
    action: Action,
) {
    tracing::info!(
        target: "imgate::message",
        session = %info.session,
        "{} {from} in {conv}: {text:?} -> {}{}",
        if direction == Direction::Outbound { "out" } else { "in " },
        action.as_str(),
        verdict.rules_note()
    );
}
