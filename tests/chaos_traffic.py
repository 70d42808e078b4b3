"""Steady XMPP and IRC traffic through imgate, for the chaos test.

Usage: chaos_traffic.py XMPP_PORT CA_FILE IRC_PORT LABEL

alice and bob log in to Prosody (slixmpp, trusting imgate's interception CA CA_FILE) through
imgate at XMPP_PORT, and to ngIRCd (plain IRC; nicknames a<LABEL> and b<LABEL>) through imgate
at IRC_PORT. Once all four sessions are up it prints "ready", then alice sends bob a numbered
message in each protocol ("chaos LABEL xmpp N", "chaos LABEL irc N") every 0.1 s until a line
(or the end) arrives on standard input; once bob has received one of each it prints
"flowing". A connection that breaks (imgate was killed, or could
not take it) ends that protocol's sending; nothing is retried. Three seconds after the last
message it prints, as one line of JSON, what bob received and how many messages were sent:
{"got": {"xmpp": [...], "irc": [...]}, "sent": {"xmpp": N, "irc": N}}.
"""
import asyncio
import json
import ssl
import sys

import slixmpp

xmpp_port, cafile, irc_port, label = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
got = {"xmpp": [], "irc": []}
sent = {"xmpp": 0, "irc": 0}
PREFIX = f"chaos {label} "


class Client(slixmpp.ClientXMPP):
    def __init__(self, name):
        super().__init__(f"{name}@localhost", f"{name}pw")
        self.ssl_context = ssl.create_default_context(cafile=cafile)
        self.ready = asyncio.Event()
        self.up = False
        self.add_event_handler("session_start", self.start)
        self.add_event_handler("disconnected", self.gone)
        self.add_event_handler("message", self.on_message)

    async def start(self, _event):
        self.send_presence()
        await self.get_roster()
        self.up = True
        self.ready.set()

    def gone(self, _event):
        self.up = False

    def on_message(self, msg):
        if msg["body"].startswith(PREFIX):
            got["xmpp"].append(msg["body"])


async def irc_login(nick):
    reader, writer = await asyncio.open_connection("127.0.0.1", irc_port)
    writer.write(f"NICK {nick}\r\nUSER {nick} 0 * :{nick}\r\n".encode())
    await writer.drain()
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError(f"{nick}: the IRC connection closed before registration")
        if line.startswith(b"PING"):
            writer.write(b"PONG" + line[4:])
        if line.split(b" ")[1:2] == [b"001"]:
            return reader, writer


async def irc_listen(reader, writer, keep):
    """Answers PINGs and, when `keep`, notes what it is sent."""
    while True:
        try:
            line = await reader.readline()
        except OSError:
            return
        if not line:
            return
        text = line.decode(errors="replace").rstrip("\r\n")
        if text.startswith("PING"):
            writer.write(("PONG" + text[4:] + "\r\n").encode())
            continue
        head, _, body = text.partition(" :")
        if keep and " PRIVMSG " in head and body.startswith(PREFIX):
            got["irc"].append(body)


async def main():
    alice, bob = Client("alice"), Client("bob")
    for client in (alice, bob):
        client.connect(host="127.0.0.1", port=xmpp_port)
    await asyncio.wait_for(asyncio.gather(alice.ready.wait(), bob.ready.wait()), 60)
    irc_alice = await asyncio.wait_for(irc_login(f"a{label}"), 60)
    irc_bob = await asyncio.wait_for(irc_login(f"b{label}"), 60)
    listeners = [
        asyncio.create_task(irc_listen(*irc_alice, False)),
        asyncio.create_task(irc_listen(*irc_bob, True)),
    ]
    print("ready", flush=True)
    stop = asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    number, irc_up, flowing = 0, True, False
    while not stop.done():
        if not flowing and got["xmpp"] and got["irc"]:
            print("flowing", flush=True)
            flowing = True
        number += 1
        if alice.up:
            alice.send_message(mto="bob@localhost", mbody=f"{PREFIX}xmpp {number}", mtype="chat")
            sent["xmpp"] += 1
        if irc_up:
            try:
                irc_alice[1].write(f"PRIVMSG b{label} :{PREFIX}irc {number}\r\n".encode())
                await irc_alice[1].drain()
                sent["irc"] += 1
            except OSError:
                irc_up = False
        await asyncio.sleep(0.1)
    await asyncio.sleep(3)
    print(json.dumps({"got": got, "sent": sent}), flush=True)
    for task in listeners:
        task.cancel()
    for client in (alice, bob):
        client.disconnect()


asyncio.run(main())
