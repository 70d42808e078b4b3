"""Two real IRC clients (the Python `irc` library) talking through imgate.

Usage: irc_clients.py HOST PORT  ->  prints what each client received, as JSON.
alice and bob join #desk; alice sends a greeting, a card number, a deal name and a direct
message to bob.
"""
import json
import sys
import time

import irc.client

host, port = sys.argv[1], int(sys.argv[2])
reactor = irc.client.Reactor()
received = {"alice": [], "bob": []}


def record(kind):
    def handler(connection, event):
        received[connection.get_nickname()].append(
            {"kind": kind, "from": event.source.nick if event.source else "", "target": event.target, "text": event.arguments[0] if event.arguments else ""}
        )
    return handler


for kind in ("pubmsg", "privmsg", "pubnotice", "privnotice"):
    reactor.add_global_handler(kind, record(kind))


def pump(seconds):
    deadline = time.time() + seconds
    while time.time() < deadline:
        reactor.process_once(0.05)


alice = reactor.server().connect(host, port, "alice")
bob = reactor.server().connect(host, port, "bob")
pump(1.5)
alice.join("#desk")
bob.join("#desk")
pump(1.5)
for text in ("hello team", "card 4111 1111 1111 1111 please", "project falcon is go"):
    alice.privmsg("#desk", text)
    pump(0.6)
alice.privmsg("bob", "direct hi")
pump(2.5)
print(json.dumps(received))
