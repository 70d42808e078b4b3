"""Two real IRC clients (the Python `irc` library) talking through imgate.

Usage: irc_clients.py HOST PORT [chat|dcc]  ->  prints what each client received, as JSON.
chat: alice and bob join #desk; alice sends a greeting, a card number, a deal name and a
direct message to bob, sets the topic, leaves #desk and renames herself alice2.
dcc: alice offers bob two files over DCC.
evasion: alice sends #desk a deal name and a card number hidden by formatting codes, and
identifies to NickServ with a password.
"""
import json
import sys
import time

import irc.client

host, port = sys.argv[1], int(sys.argv[2])
mode = sys.argv[3] if len(sys.argv) > 3 else "chat"
reactor = irc.client.Reactor()
received = {"alice": [], "bob": []}


def record(kind):
    def handler(connection, event):
        received.setdefault(connection.get_nickname(), []).append(
            {"kind": kind, "from": event.source.nick if event.source else "", "target": event.target, "text": " ".join(event.arguments)}
        )
    return handler


for kind in ("pubmsg", "privmsg", "pubnotice", "privnotice", "ctcp"):
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
if mode == "dcc":
    alice.ctcp("DCC", "bob", "SEND setup.exe 2130706433 5000 1024")
    pump(0.6)
    alice.ctcp("DCC", "bob", "SEND report.pdf 2130706433 5001 2048")
    pump(2.5)
elif mode == "evasion":
    for text in ("project \x02falcon\x02 is go", "card 4111\x02 1111 \x0304,121111\x03 1111 please"):
        alice.privmsg("#desk", text)
        pump(0.6)
    alice.privmsg("NickServ", "IDENTIFY hunter2-secret")
    pump(1.5)
else:
    for text in ("hello team", "card 4111 1111 1111 1111 please", "project falcon is go"):
        alice.privmsg("#desk", text)
        pump(0.6)
    alice.privmsg("bob", "direct hi")
    pump(1.0)
    alice.topic("#desk", "quarterly numbers")
    pump(0.5)
    alice.part("#desk")
    pump(0.5)
    alice.nick("alice2")
    pump(1.5)
print(json.dumps(received))
