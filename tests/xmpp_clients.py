"""Real XMPP clients (slixmpp) talking through imgate, trusting imgate's interception CA.

Usage: xmpp_clients.py HOST PORT CA_FILE chat   -> alice sends bob messages; prints what each received
       xmpp_clients.py HOST PORT CA_FILE muc    -> alice and bob join desk@conference.localhost and
                                                  alice talks in the room; prints what each received
       xmpp_clients.py HOST PORT CA_FILE login  -> prints whether alice could log in at all
       xmpp_clients.py HOST PORT CA_FILE alternatives -> alice sends bob a message whose body is
                                                  harmless and whose second body (another
                                                  language) and XHTML-IM markup name the deal;
                                                  prints what each received, raw
       xmpp_clients.py HOST PORT CA_FILE direct -> chat, over direct TLS (XEP-0368, ALPN xmpp-client) only
       xmpp_clients.py HOST PORT CA_FILE carbons SERVER_PORT SERVER_CA
           -> alice's phone (through imgate, carbons on) and her laptop (straight to the
              server on SERVER_PORT, trusting SERVER_CA) and bob (through imgate): bob writes
              to the laptop and the laptop to bob; prints what each received, carbons included
       xmpp_clients.py HOST PORT CA_FILE sm SERVER_PORT SERVER_CA
           -> stream management (XEP-0198): alice's laptop asks for it straight from the
              server; alice, through imgate, asks for it too, then writes bob five messages
              policy lets through and five it blocks, asks for an acknowledgement, and says
              bye; prints whether the laptop got it, imgate's answer, any acknowledgements
              alice received, and what bob and alice received
"""
import asyncio
import json
import ssl
import sys

import slixmpp
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

host, port, cafile, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
received = {"alice": [], "bob": []}


def carbon(msg):
    """"sent" or "received" for a carbon copy (XEP-0280), else None."""
    for way in ("sent", "received"):
        if msg.xml.find(f"{{urn:xmpp:carbons:2}}{way}") is not None:
            return way
    return None


class Client(slixmpp.ClientXMPP):
    def __init__(self, name, resource=None, trust=None, sm=False):
        jid = f"{name}@localhost" + (f"/{resource}" if resource else "")
        super().__init__(jid, f"{name}pw")
        self.name = resource or name
        self.use_message_ids = True
        self.ssl_context = ssl.create_default_context(cafile=trust or cafile)
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
        self.register_plugin("xep_0280")
        self.add_event_handler("carbon_received", self.on_carbon)
        self.add_event_handler("carbon_sent", self.on_carbon)
        self.bye = asyncio.Event()
        if sm:
            self.register_plugin("xep_0198")
            self.register_plugin("xep_0199")
            self.sm_answer = asyncio.Queue()
            self.acks = []
            self.add_event_handler("sm_enabled", lambda _: self.sm_answer.put_nowait("enabled"))
            self.add_event_handler("sm_failed", self.on_sm_failed)
            self.register_handler(Callback(
                "acks", MatchXPath("{urn:xmpp:sm:3}a"), lambda a: self.acks.append(a.xml.get("h"))))

    def on_sm_failed(self, failed):
        conditions = [child.tag.split("}")[-1] for child in failed.xml]
        self.sm_answer.put_nowait("failed: " + ",".join(conditions))

    async def start(self, _event):
        self.send_presence()
        await self.get_roster()
        self.ready.set()

    def on_carbon(self, msg):
        way = carbon(msg)
        inner = msg[f"carbon_{way}"]
        received.setdefault(self.name, []).append(
            {"type": f"carbon-{way}", "to": str(inner["to"].bare), "body": inner["body"]}
        )

    def on_groupchat(self, msg):
        received[self.name].append(
            {"type": "groupchat", "from": str(msg["from"]), "body": msg["body"]}
        )

    def on_message(self, msg):
        if msg["type"] == "groupchat":
            return
        if carbon(msg):
            return
        entry = {"type": msg["type"], "from": str(msg["from"].bare), "body": msg["body"]}
        if msg["body"] == "bye":
            self.bye.set()
        if msg["type"] == "error" or mode == "alternatives":
            entry["raw"] = str(msg)
        received.setdefault(self.name, []).append(entry)


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
    alice.plugin["xep_0045"].leave_muc(room, "alice")
    await asyncio.sleep(1)
    print(json.dumps(received))
    for client in (alice, bob):
        client.disconnect()


async def carbons():
    server_port, server_ca = int(sys.argv[5]), sys.argv[6]
    phone, bob = Client("alice", "phone"), Client("bob")
    laptop = Client("alice", "laptop", trust=server_ca)
    for client in (phone, bob):
        client.connect(host=host, port=port)
    laptop.enable_direct_tls = False
    laptop.connect(host=host, port=server_port)
    await asyncio.wait_for(
        asyncio.gather(phone.ready.wait(), bob.ready.wait(), laptop.ready.wait()), 30
    )
    for client in (phone, laptop):
        await client.plugin["xep_0280"].enable(timeout=10)
    bob.send_message(mto="alice@localhost/laptop", mbody="hello laptop", mtype="chat")
    await asyncio.sleep(1)
    laptop.send_message(mto="bob@localhost", mbody="hello from the laptop", mtype="chat")
    await asyncio.sleep(2)
    print(json.dumps(received))
    for client in (phone, laptop, bob):
        client.disconnect()


async def alternatives():
    alice, bob = Client("alice"), Client("bob")
    for client in (alice, bob):
        client.connect(host=host, port=port)
    await asyncio.wait_for(asyncio.gather(alice.ready.wait(), bob.ready.wait()), 30)
    msg = alice.make_message(mto="bob@localhost", mbody="hello bob", mtype="chat")
    msg.append(slixmpp.ET.fromstring(
        "<body xmlns='jabber:client' xml:lang='de'>project falcon is go</body>"))
    msg.append(slixmpp.ET.fromstring(
        "<html xmlns='http://jabber.org/protocol/xhtml-im'>"
        "<body xmlns='http://www.w3.org/1999/xhtml'><p>project <b>falcon</b> is go</p></body></html>"))
    msg.send()
    alice.send_message(mto="bob@localhost", mbody="bye", mtype="chat")
    await asyncio.sleep(2)
    print(json.dumps(received))
    for client in (alice, bob):
        client.disconnect()


async def stream_management():
    server_port, server_ca = int(sys.argv[5]), sys.argv[6]
    laptop = Client("alice", "laptop", trust=server_ca, sm=True)
    laptop.enable_direct_tls = False
    laptop.connect(host=host, port=server_port)
    alice, bob = Client("alice", "phone", sm=True), Client("bob")
    for client in (alice, bob):
        client.connect(host=host, port=port)
    await asyncio.wait_for(
        asyncio.gather(laptop.ready.wait(), alice.ready.wait(), bob.ready.wait()), 30
    )
    result = {"laptop": await asyncio.wait_for(laptop.sm_answer.get(), 10)}
    # Through imgate the offer is not seen, so alice's client does not ask by itself: ask.
    alice.send_raw("<enable xmlns='urn:xmpp:sm:3' resume='true'/>")
    result["answer"] = await asyncio.wait_for(alice.sm_answer.get(), 10)
    for n in range(5):
        alice.send_message(mto="bob@localhost", mbody=f"hello bob {n}", mtype="chat")
        alice.send_message(mto="bob@localhost", mbody=f"project falcon is go {n}", mtype="chat")
    alice.send_raw("<r xmlns='urn:xmpp:sm:3'/>")
    await alice.plugin["xep_0199"].ping(jid="localhost", timeout=10)
    alice.send_message(mto="bob@localhost", mbody="bye", mtype="chat")
    await asyncio.wait_for(bob.bye.wait(), 30)
    result["acks"] = alice.acks
    result["bob"] = [m["body"] for m in received["bob"]]
    result["alice"] = [m["type"] for m in received.get("phone", [])]
    print(json.dumps(result))
    for client in (laptop, alice, bob):
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


asyncio.run(
    {"chat": chat, "direct": chat, "muc": muc, "login": login, "carbons": carbons,
     "alternatives": alternatives, "sm": stream_management}[mode]()
)
