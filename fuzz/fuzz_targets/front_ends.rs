//! The SOCKS5 and HTTP CONNECT front ends: whatever a client sends (then closing its side),
//! the handshake ends with a target or an error, never a panic or a hang.
#![no_main]

use std::sync::LazyLock;

use imgate_dataplane::proxy::frontend::Frontend;
use libfuzzer_sys::fuzz_target;
use tokio::io::AsyncWriteExt;

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
});

fuzz_target!(|input: &[u8]| {
    let Some((&which, data)) = input.split_first() else {
        return;
    };
    let frontend = if which % 2 == 0 {
        Frontend::Socks5
    } else {
        Frontend::HttpConnect
    };
    RUNTIME.block_on(async {
        // Large enough that the client's bytes and the front end's answers never wait.
        let (mut client, mut server) = tokio::io::duplex(data.len() + 64 * 1024);
        client.write_all(data).await.expect("write");
        client.shutdown().await.expect("close");
        if let Ok(target) = frontend.accept(&mut server).await {
            assert!(!target.host.is_empty());
        }
    });
});
