"""Steady traffic through a connector's port-forward to an XMPP server, for failover tests.

Usage: tunnel_probe.py HOST PORT SECONDS
Every 100 ms, opens a connection, starts an XMPP stream and waits (up to 10 s) for the
server's stream features. Prints one JSON line per attempt: when it started (Unix seconds),
whether the features came back, how long it took, and the error if any.
"""
import json
import socket
import sys
import time

host, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
HEADER = (b"<?xml version='1.0'?><stream:stream to='localhost' xmlns='jabber:client' "
          b"xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>")

end = time.time() + seconds
while time.time() < end:
    started = time.time()
    ok, error = False, None
    try:
        with socket.create_connection((host, port), timeout=10) as connection:
            connection.settimeout(10)
            connection.sendall(HEADER)
            received = b""
            while b"</stream:features>" not in received:
                chunk = connection.recv(4096)
                if not chunk:
                    error = "closed: " + received[:200].decode("utf-8", "replace")
                    break
                received += chunk
            else:
                ok = True
    except OSError as e:
        error = repr(e)
    print(json.dumps({"t": started, "ok": ok, "took": time.time() - started, "error": error}),
          flush=True)
    time.sleep(0.1)
