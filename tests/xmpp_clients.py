"""Real XMPP clients (slixmpp) talking through imgate, trusting imgate's interception CA.

Usage: xmpp_clients.py HOST PORT CA_FILE chat   -> alice sends bob messages; prints what each received
       xmpp_clients.py HOST PORT CA_FILE muc    -> alice and bob join desk@conference.localhost and
                                                  alice talks in the room; prints what each received
       xmpp_clients.py HOST PORT CA_FILE login  -> prints whether alice could log in at all
       xmpp_clients.py HOST PORT CA_FILE direct -> chat, over direct TLS (XEP-0368, ALPN xmpp-client) only
"""
import asyncio
import json
import ssl
import sys

import slixmpp

host, port, cafile, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
received = {"alice": [], "bob": []}


class Client(slixmpp.ClientXMPP):
    def __init__(self, name):
        super().__init__(f"{name}@localhost", f"{name}pw")
        self.name = name
        self.ssl_context = ssl.create_default_context(cafile=cafile)
        if mode == "direct":
            self.enable_starttls = False
            self.enable_plaintext = False
            self.ssl_context.set_alpn_protocols(["xmpp-client"])
        self.ready = asyncio.Event()
        self.add_event_handler("session_start", self.start)
        self.add_event_handler("message", self.on_message)
        self.add_event_handler("message_error", self.on_message)
        self.add_event_handler("groupchat_message", self.on_groupchat)
        self.register_plugin("xep_0045")

    async def start(self, _event):
        self.send_presence()
        await self.get_roster()
        self.ready.set()

    def on_groupchat(self, msg):
        received[self.name].append(
            {"type": "groupchat", "from": str(msg["from"]), "body": msg["body"]}
        )

    def on_message(self, msg):
        if msg["type"] == "groupchat":
            return
        entry = {"type": msg["type"], "from": str(msg["from"].bare), "body": msg["body"]}
        if msg["type"] == "error":
            entry["raw"] = str(msg)
        received[self.name].append(entry)


async def chat():
    alice, bob = Client("alice"), Client("bob")
    for client in (alice, bob):
        client.connect(host=host, port=port)
    await asyncio.wait_for(asyncio.gather(alice.ready.wait(), bob.ready.wait()), 30)
    for text in ("hello bob", "card 4111 1111 1111 1111 please", "project falcon is go", "bye"):
        alice.send_message(mto="bob@localhost", mbody=text, mtype="chat")
        await asyncio.sleep(0.7)
    await asyncio.sleep(2)
    print(json.dumps(received))
    for client in (alice, bob):
        client.disconnect()


async def muc():
    room = "desk@conference.localhost"
    alice, bob = Client("alice"), Client("bob")
    for client in (alice, bob):
        client.connect(host=host, port=port)
    await asyncio.wait_for(asyncio.gather(alice.ready.wait(), bob.ready.wait()), 30)
    await asyncio.wait_for(alice.plugin["xep_0045"].join_muc_wait(room, "alice", maxstanzas=0), 10)
    await asyncio.wait_for(bob.plugin["xep_0045"].join_muc_wait(room, "bob", maxstanzas=0), 10)
    for text in ("hello room", "card 4111 1111 1111 1111 please", "project falcon is go", "bye room"):
        alice.send_message(mto=room, mbody=text, mtype="groupchat")
        await asyncio.sleep(0.7)
    await asyncio.sleep(2)
    print(json.dumps(received))
    for client in (alice, bob):
        client.disconnect()


async def login():
    alice = Client("alice")
    alice.connect(host=host, port=port)
    try:
        await asyncio.wait_for(alice.ready.wait(), 10)
        print(json.dumps({"logged_in": True}))
    except asyncio.TimeoutError:
        print(json.dumps({"logged_in": False}))
    alice.disconnect()


asyncio.run({"chat": chat, "direct": chat, "muc": muc, "login": login}[mode]())
