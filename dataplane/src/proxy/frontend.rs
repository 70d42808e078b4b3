//! The front ends a client reaches the dataplane through: SOCKS5 (RFC 1928, with the
//! username/password method of RFC 1929) and HTTP CONNECT (with optional
//! `Proxy-Authorization: Basic`). The user name either carries is a claim, archived as
//! claimed: the password is not checked (see `docs/trust-model.md`). Fixed port-forwards need no handshake.
//!
//! Invariants: handshakes read at most [`MAX_HANDSHAKE`] bytes and answer every request they
//! refuse with the protocol's own error before closing; a client is told "succeeded" only
//! after the upstream connection is up (see [`Frontend::succeed`]).

use std::io;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::tunnel::header::{Decoded, Reply, Status, StreamHeader, TraceParent};

/// Most bytes a handshake may take.
pub const MAX_HANDSHAKE: usize = 8192;

/// Where the client wants to go, and who it says it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// The user named in the handshake, if any.
    pub user: Option<String>,
    /// The connector that carried the connection through the tunnel, if one did.
    pub connector: Option<String>,
    /// The client's own address, when the connection came through a connector.
    pub client: Option<std::net::SocketAddr>,
    /// The connector's span that carried the connection, when it exports traces.
    pub trace: Option<TraceParent>,
}

/// Which handshake a listener speaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frontend {
    /// SOCKS5.
    Socks5,
    /// HTTP CONNECT.
    HttpConnect,
    /// A fixed upstream.
    Forward {
        /// Host.
        host: String,
        /// Port.
        port: u16,
    },
    /// A tunnel stream from a connector, whose certificate names it `connector`: the stream
    /// starts with a [`StreamHeader`] and is answered with a [`Reply`].
    Tunnel {
        /// The connector's id, from its verified certificate.
        connector: String,
    },
}

impl Frontend {
    /// How the front end is named in traces.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Socks5 => "socks5",
            Self::HttpConnect => "http-connect",
            Self::Forward { .. } => "forward",
            Self::Tunnel { .. } => "tunnel",
        }
    }
}

/// Why a handshake failed (the client has been told, where the protocol allows).
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The client broke the protocol.
    #[error("bad {protocol} handshake: {reason}")]
    Protocol {
        /// SOCKS5 or HTTP CONNECT.
        protocol: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// The connection failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

fn bad(protocol: &'static str, reason: impl Into<String>) -> HandshakeError {
    HandshakeError::Protocol {
        protocol,
        reason: reason.into(),
    }
}

/// How a refused or failed upstream is reported to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Policy refused the connection.
    NotAllowed,
    /// The upstream could not be reached: it is refused, does not answer, or does not answer
    /// in time (one answer for all three).
    Unreachable,
}

impl Frontend {
    /// Reads the client's handshake and returns the target.
    pub async fn accept<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        client: &mut S,
    ) -> Result<Target, HandshakeError> {
        match self {
            Frontend::Socks5 => socks5(client).await,
            Frontend::HttpConnect => http_connect(client).await,
            Frontend::Forward { host, port } => Ok(Target {
                host: host.clone(),
                port: *port,
                user: None,
                connector: None,
                client: None,
                trace: None,
            }),
            Frontend::Tunnel { connector } => tunnel_header(client, connector).await,
        }
    }

    /// Tells the client its tunnel is up.
    pub async fn succeed<S: AsyncWrite + Unpin>(&self, client: &mut S) -> io::Result<()> {
        match self {
            Frontend::Socks5 => client.write_all(&[5, 0, 0, 1, 0, 0, 0, 0, 0, 0]).await,
            Frontend::HttpConnect => {
                client
                    .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    .await
            }
            Frontend::Forward { .. } => Ok(()),
            Frontend::Tunnel { .. } => {
                let reply = Reply {
                    status: Status::Connected,
                    reason: String::new(),
                };
                client.write_all(&reply.encode()).await
            }
        }
    }

    /// Tells the client why there is no tunnel.
    pub async fn refuse<S: AsyncWrite + Unpin>(
        &self,
        client: &mut S,
        why: Refusal,
    ) -> io::Result<()> {
        match self {
            Frontend::Socks5 => {
                let code = match why {
                    Refusal::NotAllowed => 2,
                    Refusal::Unreachable => 4,
                };
                client.write_all(&[5, code, 0, 1, 0, 0, 0, 0, 0, 0]).await
            }
            Frontend::HttpConnect => {
                let status = match why {
                    Refusal::NotAllowed => "403 Forbidden by policy",
                    Refusal::Unreachable => "502 Bad Gateway",
                };
                client
                    .write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes())
                    .await
            }
            Frontend::Forward { .. } => Ok(()),
            Frontend::Tunnel { .. } => {
                let (status, reason) = match why {
                    Refusal::NotAllowed => (Status::Refused, "refused by policy"),
                    Refusal::Unreachable => (Status::Unreachable, "the server cannot be reached"),
                };
                let reply = Reply {
                    status,
                    reason: reason.to_owned(),
                };
                client.write_all(&reply.encode()).await
            }
        }
    }
}

/// Reads a tunnel stream's header, exactly (what follows it is the client's), and checks
/// that it names the connector the certificate names.
async fn tunnel_header<S: AsyncRead + AsyncWrite + Unpin>(
    client: &mut S,
    connector: &str,
) -> Result<Target, HandshakeError> {
    const P: &str = "tunnel";
    let mut bytes = Vec::new();
    let mut needed = 1;
    let problem = loop {
        let start = bytes.len();
        bytes.resize(start + needed, 0);
        client.read_exact(&mut bytes[start..]).await?;
        match StreamHeader::decode(&bytes) {
            Ok(Decoded::NeedMore(more)) => needed = more,
            Ok(Decoded::Complete(header, _)) if header.connector != connector => {
                break format!(
                    "the stream names connector {:?} but its certificate names {connector:?}",
                    header.connector
                );
            }
            Ok(Decoded::Complete(header, _)) => {
                return Ok(Target {
                    host: header.host,
                    port: header.port,
                    user: header.user,
                    connector: Some(header.connector),
                    client: header.client,
                    trace: header.trace,
                });
            }
            Err(error) => break error.to_string(),
        }
    };
    let reply = Reply {
        status: Status::BadRequest,
        reason: problem.clone(),
    };
    client.write_all(&reply.encode()).await?;
    Err(bad(P, problem))
}

async fn socks5<S: AsyncRead + AsyncWrite + Unpin>(
    client: &mut S,
) -> Result<Target, HandshakeError> {
    const P: &str = "SOCKS5";
    let mut head = [0u8; 2];
    client.read_exact(&mut head).await?;
    if head[0] != 5 {
        return Err(bad(P, format!("version {} is not 5", head[0])));
    }
    let mut methods = vec![0u8; usize::from(head[1])];
    client.read_exact(&mut methods).await?;
    let user = if methods.contains(&2) {
        client.write_all(&[5, 2]).await?;
        let mut version = [0u8; 2];
        client.read_exact(&mut version).await?;
        let mut name = vec![0u8; usize::from(version[1])];
        client.read_exact(&mut name).await?;
        let mut length = [0u8; 1];
        client.read_exact(&mut length).await?;
        let mut password = vec![0u8; usize::from(length[0])];
        client.read_exact(&mut password).await?;
        client.write_all(&[1, 0]).await?;
        Some(String::from_utf8_lossy(&name).into_owned())
    } else if methods.contains(&0) {
        client.write_all(&[5, 0]).await?;
        None
    } else {
        client.write_all(&[5, 0xff]).await?;
        return Err(bad(P, "no acceptable authentication method"));
    };
    let mut request = [0u8; 4];
    client.read_exact(&mut request).await?;
    if request[1] != 1 {
        client.write_all(&[5, 7, 0, 1, 0, 0, 0, 0, 0, 0]).await?;
        return Err(bad(P, format!("command {} is not CONNECT", request[1])));
    }
    let host = match request[3] {
        1 => {
            let mut address = [0u8; 4];
            client.read_exact(&mut address).await?;
            std::net::Ipv4Addr::from(address).to_string()
        }
        3 => {
            let mut length = [0u8; 1];
            client.read_exact(&mut length).await?;
            let mut name = vec![0u8; usize::from(length[0])];
            client.read_exact(&mut name).await?;
            if name.is_empty() {
                client.write_all(&[5, 1, 0, 1, 0, 0, 0, 0, 0, 0]).await?;
                return Err(bad(P, "empty host name"));
            }
            String::from_utf8(name).map_err(|_| bad(P, "host name is not UTF-8"))?
        }
        4 => {
            let mut address = [0u8; 16];
            client.read_exact(&mut address).await?;
            std::net::Ipv6Addr::from(address).to_string()
        }
        other => {
            client.write_all(&[5, 8, 0, 1, 0, 0, 0, 0, 0, 0]).await?;
            return Err(bad(P, format!("address type {other}")));
        }
    };
    let mut port = [0u8; 2];
    client.read_exact(&mut port).await?;
    Ok(Target {
        host,
        port: u16::from_be_bytes(port),
        user,
        connector: None,
        client: None,
        trace: None,
    })
}

async fn http_connect<S: AsyncRead + AsyncWrite + Unpin>(
    client: &mut S,
) -> Result<Target, HandshakeError> {
    const P: &str = "HTTP CONNECT";
    let mut head = Vec::with_capacity(512);
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && !head.ends_with(b"\n\n") {
        if head.len() >= MAX_HANDSHAKE {
            client
                .write_all(
                    b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\n\r\n",
                )
                .await?;
            return Err(bad(P, "request head too large"));
        }
        if client.read(&mut byte).await? == 0 {
            return Err(bad(P, "connection closed during the request"));
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head);
    let mut lines = text.lines();
    let request = lines.next().unwrap_or_default();
    let mut words = request.split_whitespace();
    let (method, authority) = (
        words.next().unwrap_or_default(),
        words.next().unwrap_or_default(),
    );
    if !method.eq_ignore_ascii_case("CONNECT") {
        client
            .write_all(
                b"HTTP/1.1 405 Method Not Allowed\r\nAllow: CONNECT\r\nContent-Length: 0\r\n\r\n",
            )
            .await?;
        return Err(bad(P, format!("method {method} is not CONNECT")));
    }
    let Some((host, port)) = authority.rsplit_once(':').and_then(|(h, p)| {
        let host = h.trim_matches(['[', ']']);
        Some((host.to_owned(), p.parse::<u16>().ok()?)).filter(|_| !host.is_empty())
    }) else {
        client
            .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            .await?;
        return Err(bad(P, format!("{authority:?} is not host:port")));
    };
    let user = lines
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("proxy-authorization"))
        .and_then(|(_, value)| value.trim().strip_prefix("Basic ").map(str::to_owned))
        .and_then(|encoded| BASE64.decode(encoded.trim()).ok())
        .map(|decoded| {
            String::from_utf8_lossy(&decoded)
                .split(':')
                .next()
                .unwrap_or_default()
                .to_owned()
        });
    Ok(Target {
        host,
        port,
        user,
        connector: None,
        client: None,
        trace: None,
    })
}

#[cfg(test)]
mod tests {
    use tokio::io::duplex;

    use super::*;

    #[tokio::test]
    async fn socks5_with_a_user_name() {
        let (mut client, mut server) = duplex(1024);
        let handshake = tokio::spawn(async move {
            Frontend::Socks5
                .accept(&mut server)
                .await
                .map(|t| (t, server))
        });
        client.write_all(&[5, 2, 0, 2]).await.expect("greeting");
        let mut choice = [0u8; 2];
        client.read_exact(&mut choice).await.expect("choice");
        assert_eq!(choice, [5, 2]);
        client.write_all(&[1, 4]).await.expect("auth");
        client.write_all(b"jane").await.expect("auth");
        client.write_all(&[2]).await.expect("auth");
        client.write_all(b"pw").await.expect("auth");
        let mut status = [0u8; 2];
        client.read_exact(&mut status).await.expect("status");
        assert_eq!(status, [1, 0]);
        client.write_all(&[5, 1, 0, 3, 12]).await.expect("request");
        client.write_all(b"chat.example").await.expect("request");
        client
            .write_all(&5222u16.to_be_bytes())
            .await
            .expect("request");
        let (target, mut server) = handshake.await.expect("task").expect("handshake");
        assert_eq!(
            target,
            Target {
                host: "chat.example".into(),
                port: 5222,
                user: Some("jane".into()),
                connector: None,
                client: None,
                trace: None,
            }
        );
        Frontend::Socks5.succeed(&mut server).await.expect("reply");
        let mut reply = [0u8; 10];
        client.read_exact(&mut reply).await.expect("reply");
        assert_eq!(reply[..2], [5, 0]);
    }

    #[tokio::test]
    async fn socks5_refuses_other_commands_in_protocol() {
        let (mut client, mut server) = duplex(1024);
        let handshake = tokio::spawn(async move { Frontend::Socks5.accept(&mut server).await });
        client
            .write_all(&[5, 1, 0, 5, 2, 0, 1, 127, 0, 0, 1, 0, 80])
            .await
            .expect("bind request");
        let error = handshake.await.expect("task").expect_err("BIND is refused");
        assert!(error.to_string().contains("not CONNECT"), "{error}");
        let mut replies = [0u8; 4];
        client.read_exact(&mut replies).await.expect("replies");
        assert_eq!(
            replies,
            [5, 0, 5, 7],
            "method chosen, then 'command not supported'"
        );
    }

    #[tokio::test]
    async fn http_connect_with_basic_auth() {
        let (mut client, mut server) = duplex(4096);
        let handshake =
            tokio::spawn(async move { Frontend::HttpConnect.accept(&mut server).await });
        client
            .write_all(b"CONNECT irc.example:6697 HTTP/1.1\r\nHost: irc.example:6697\r\nProxy-Authorization: Basic amFuZTpwdw==\r\n\r\n")
            .await
            .expect("request");
        let target = handshake.await.expect("task").expect("handshake");
        assert_eq!(
            target,
            Target {
                host: "irc.example".into(),
                port: 6697,
                user: Some("jane".into()),
                connector: None,
                client: None,
                trace: None,
            }
        );
    }

    #[tokio::test]
    async fn http_connect_refuses_other_methods_and_huge_heads() {
        let (mut client, mut server) = duplex(1 << 16);
        let handshake =
            tokio::spawn(
                async move { Frontend::HttpConnect.accept(&mut server).await.map(|_| ()) },
            );
        client
            .write_all(b"GET http://x/ HTTP/1.1\r\n\r\n")
            .await
            .expect("request");
        assert!(handshake.await.expect("task").is_err());
        let mut answer = vec![0u8; 12];
        client.read_exact(&mut answer).await.expect("answer");
        assert_eq!(&answer, b"HTTP/1.1 405");

        let (mut client, mut server) = duplex(1 << 16);
        let handshake =
            tokio::spawn(
                async move { Frontend::HttpConnect.accept(&mut server).await.map(|_| ()) },
            );
        let _ = client.write_all(&vec![b'a'; MAX_HANDSHAKE + 10]).await;
        assert!(handshake.await.expect("task").is_err());
    }

    #[tokio::test]
    async fn a_request_without_a_host_is_refused_by_both_front_ends() {
        // Found by the front ends' fuzz target: `CONNECT :5222` named no host at all.
        let (mut client, mut server) = duplex(1 << 16);
        client
            .write_all(b"CONNECT :5222 HTTP/1.1\r\n\r\n")
            .await
            .expect("request");
        let refused = Frontend::HttpConnect.accept(&mut server).await;
        assert!(refused.is_err(), "{:?}", refused.map(|t| t.host));
        let mut answer = vec![0u8; 12];
        client.read_exact(&mut answer).await.expect("answer");
        assert_eq!(&answer, b"HTTP/1.1 400");

        let (mut client, mut server) = duplex(1 << 16);
        client
            .write_all(&[5, 1, 0, 5, 1, 0, 3, 0, 0x14, 0x66])
            .await
            .expect("request");
        let refused = Frontend::Socks5.accept(&mut server).await;
        assert!(
            refused
                .as_ref()
                .is_err_and(|e| e.to_string().contains("empty host name")),
            "{:?}",
            refused.map(|t| t.host)
        );
    }

    fn tunnel_header_for(connector: &str) -> Vec<u8> {
        StreamHeader {
            host: "chat.example".into(),
            port: 5222,
            client: Some("192.0.2.7:51000".parse().expect("address")),
            connector: connector.into(),
            user: Some("alice".into()),
            trace: Some(TraceParent {
                trace_id: [7; 16],
                span_id: [9; 8],
                flags: 1,
            }),
        }
        .encode()
        .expect("header")
    }

    #[tokio::test]
    async fn a_tunnel_stream_names_its_target_and_the_payload_after_the_header_is_left_unread() {
        let (mut connector, mut server) = duplex(4096);
        let frontend = Frontend::Tunnel {
            connector: "laptop-3".into(),
        };
        let mut sent = tunnel_header_for("laptop-3");
        sent.extend_from_slice(b"<stream:stream>");
        connector
            .write_all(&sent)
            .await
            .expect("header and payload");
        let target = frontend.accept(&mut server).await.expect("handshake");
        assert_eq!(
            target,
            Target {
                host: "chat.example".into(),
                port: 5222,
                user: Some("alice".into()),
                connector: Some("laptop-3".into()),
                client: Some("192.0.2.7:51000".parse().expect("address")),
                trace: Some(TraceParent {
                    trace_id: [7; 16],
                    span_id: [9; 8],
                    flags: 1,
                }),
            }
        );
        let mut payload = [0u8; 15];
        server.read_exact(&mut payload).await.expect("payload");
        assert_eq!(
            &payload, b"<stream:stream>",
            "the client's bytes are untouched"
        );

        frontend.succeed(&mut server).await.expect("reply");
        frontend
            .refuse(&mut server, Refusal::Unreachable)
            .await
            .expect("reply");
        let mut replies = [0u8; 3 + 3 + 28];
        connector.read_exact(&mut replies).await.expect("replies");
        assert_eq!(
            Reply::decode(&replies),
            Ok(Decoded::Complete(
                Reply {
                    status: Status::Connected,
                    reason: String::new()
                },
                3
            ))
        );
        assert!(matches!(
            Reply::decode(&replies[3..]),
            Ok(Decoded::Complete(
                Reply {
                    status: Status::Unreachable,
                    ..
                },
                _
            ))
        ));
    }

    #[tokio::test]
    async fn a_tunnel_stream_that_names_another_connector_or_is_not_a_header_is_refused() {
        for (sent, expected) in [
            (tunnel_header_for("someone-else"), "certificate names"),
            (b"GET / HTTP/1.1\r\n\r\n".to_vec(), "bad magic"),
        ] {
            let (mut connector, mut server) = duplex(4096);
            connector.write_all(&sent).await.expect("write");
            let frontend = Frontend::Tunnel {
                connector: "laptop-3".into(),
            };
            let error = frontend.accept(&mut server).await.expect_err("refused");
            assert!(error.to_string().contains(expected), "{error}");
            drop(server);
            let mut answer = Vec::new();
            connector.read_to_end(&mut answer).await.expect("answer");
            let Ok(Decoded::Complete(reply, _)) = Reply::decode(&answer) else {
                panic!("a reply: {answer:?}");
            };
            assert_eq!(reply.status, Status::BadRequest);
            assert!(reply.reason.contains(expected), "{}", reply.reason);
        }
    }
}
