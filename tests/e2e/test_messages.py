#!/usr/bin/env python3
"""End-to-end tests of the everyday message types (docs/messages.md) with real `sotto-server` and
`sotto` processes: replies, reactions, edits, deletes, receipts, typing, mentions and disappearing
messages through the CLI and through the daemon's JSON-RPC methods. The server and client helpers
come from test_e2e.py, the JSON-RPC peer from test_daemon.py.

    python3 tests/e2e/test_messages.py --bin BUILD_DIR [unittest options]
"""

import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_e2e  # noqa: E402
from test_e2e import Client, Server, parse_lines  # noqa: E402
from test_daemon import Rpc  # noqa: E402


def events_of(events, kind):
    return [e for e in events if e.get("type") == kind]


def eventually(predicate, timeout=60):
    """Waits for a condition (not for a time): the timers run on the clients' clocks."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return predicate()


class MessagesTest(unittest.TestCase):
    def setUp(self):
        self.root = tempfile.mkdtemp(prefix="sotto-msgs-")
        self.server = Server(self.root)
        self.server.start()
        self.procs = []
        self.sockets = []

    def tearDown(self):
        for s in self.sockets:
            s.close()
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        self.server.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def pair(self):
        alice, bob = Client(self.root, "alice"), Client(self.root, "bob")
        alice.register("alice", self.server)
        bob.register("bob", self.server)
        return alice, bob

    def history(self, client, user):
        return parse_lines(client.ok("history", user, "--limit", "0").stdout)

    def message(self, client, user, timestamp):
        found = [m for m in self.history(client, user) if m["timestamp"] == timestamp]
        self.assertEqual(len(found), 1, self.history(client, user))
        return found[0]

    def test_replies_reactions_edits_deletes_and_receipts_from_the_cli(self):
        alice, bob = self.pair()
        # TEXT "-" reads standard input (several lines, kept as they are).
        sent = json.loads(alice.ok("send", "bob", "-", stdin="hello bob\nsecond line\n").stdout)
        hello = sent["timestamp"]
        got = bob.receive()
        [m] = events_of(got, "message")
        self.assertEqual(m["body"], "hello bob\nsecond line")
        self.assertEqual(m["timestamp"], hello)

        # A reply to it (by the id `history` shows), with a mention.
        reply = json.loads(bob.ok("send", "alice", "@alice yes", "--quote", str(hello),
                                  "--mention", "alice").stdout)["timestamp"]
        got = alice.receive()
        [m] = events_of(got, "message")
        self.assertEqual(m["quote"]["author"], "alice")
        self.assertEqual(m["quote"]["timestamp"], hello)
        self.assertEqual(m["quote"]["text"], "hello bob\nsecond line")
        self.assertEqual(m["mentions"], [{"user": "alice", "start": 0, "length": 6}])
        # Bob's device said it was delivered, by itself.
        receipts = events_of(got, "receipt")
        self.assertEqual([(r["receiptType"], r["user"]) for r in receipts], [("delivery", "bob")])
        self.assertEqual(receipts[0]["targets"], [{"author": "alice", "timestamp": hello}])
        self.assertNotEqual(self.message(alice, "bob", hello)["receipts"][0]["deliveredAt"], 0)

        # A reaction, replaced, by AUTHOR:TIMESTAMP.
        bob.ok("react", "alice:%d" % hello, "\U0001F44D")
        bob.ok("react", str(hello), "\U0001F389")
        got = alice.receive()
        self.assertEqual([r["emoji"] for r in events_of(got, "reaction")],
                         ["\U0001F44D", "\U0001F389"])
        m = self.message(alice, "bob", hello)
        self.assertEqual([(r["user"], r["emoji"]) for r in m["reactions"]], [("bob", "\U0001F389")])
        bob.ok("react", str(hello), "--remove")
        alice.receive()
        self.assertNotIn("reactions", self.message(alice, "bob", hello))

        # An edit: the newest text, marked, on both sides.
        alice.ok("edit", str(hello), "hello bob (edited)")
        got = bob.receive()
        [e] = events_of(got, "edit")
        self.assertEqual(e["body"], "hello bob (edited)")
        for c, peer in ((alice, "bob"), (bob, "alice")):
            m = self.message(c, peer, hello)
            self.assertEqual(m["body"], "hello bob (edited)")
            self.assertTrue(m["edited"])
        text = bob.ok("history", "alice", json_output=False).stdout
        self.assertIn("#%d" % hello, text)
        self.assertIn("edited", text)
        self.assertIn("reply to alice #%d" % hello, text)
        # Only the author edits or deletes.
        self.assertIn("only your own", bob.fails("edit", str(hello), "mine now",
                                                  code="invalid_argument")["message"])
        self.assertIn("only your own", bob.fails("delete", str(hello),
                                                  code="invalid_argument")["message"])

        # Read receipts: Bob reads, Alice hears of it.
        self.assertEqual(json.loads(bob.ok("read", "alice").stdout)["read"], 1)
        got = alice.receive()
        self.assertIn("read", [r["receiptType"] for r in events_of(got, "receipt")])
        self.assertNotEqual(self.message(alice, "bob", hello)["receipts"][0]["readAt"], 0)

        # A delete for everyone: the text is gone on both sides.
        alice.ok("delete", str(hello))
        got = bob.receive()
        self.assertEqual(len(events_of(got, "remote_delete")), 1)
        for c, peer in ((alice, "bob"), (bob, "alice")):
            m = self.message(c, peer, hello)
            self.assertTrue(m["deleted"])
            self.assertEqual(m["body"], "")
        self.assertIn("[deleted]", bob.ok("history", "alice", json_output=False).stdout)

        # Read receipts off: none sent, and the setting shows.
        self.assertEqual(json.loads(bob.ok("read-receipts", "off").stdout), {"readReceipts": False})
        self.assertEqual(json.loads(bob.ok("read-receipts").stdout), {"readReceipts": False})
        later = json.loads(alice.ok("send", "bob", "one more").stdout)["timestamp"]
        bob.receive()
        bob.ok("read", "alice")
        got = alice.receive()
        self.assertNotIn("read", [r["receiptType"] for r in events_of(got, "receipt")])
        # Not read (as far as alice knows): no readAt at all, not a 0.
        receipt = self.message(alice, "bob", later)["receipts"][0]
        self.assertNotIn("readAt", receipt)
        self.assertGreater(receipt["deliveredAt"], 0)

        # What cannot be done says so, and changes nothing.
        bob.fails("react", "424242", "\U0001F44D", code="not_found")
        bob.fails("react", "alice:x", "\U0001F44D", code="invalid_argument")
        bob.fails("react", str(later), code="invalid_argument")
        bob.fails("disappearing", "alice", "5x", code="invalid_argument")
        bob.fails("send", "alice", "-", stdin="", code="invalid_argument")
        bob.fails("send", "alice", "hi", "--mention", "carol", code="invalid_argument")

    def test_disappearing_messages_go_from_every_store(self):
        alice, bob = self.pair()
        alice.ok("send", "bob", "before the timer")
        bob.receive()
        r = json.loads(alice.ok("disappearing", "bob", "1s").stdout)
        self.assertEqual(r["expireTimer"], 1)
        got = bob.receive()
        self.assertEqual([e["expireTimer"] for e in events_of(got, "disappearing_timer")], [1])
        self.assertEqual(json.loads(bob.ok("disappearing", "alice").stdout)["expireTimer"], 1)

        secret = "vanishing-plaintext-8150"
        ts = json.loads(alice.ok("send", "bob", secret).stdout)["timestamp"]
        [m] = events_of(bob.receive(), "message")
        self.assertEqual(m["expireTimer"], 1)

        def gone(client, peer):
            return all(secret not in m["body"] for m in self.history(client, peer))

        # The sender's copy goes a second after sending; the recipient's a second after reading.
        self.assertTrue(eventually(lambda: gone(alice, "bob")))
        self.assertFalse(gone(bob, "alice"))
        bob.ok("read", "alice")
        self.assertTrue(eventually(lambda: gone(bob, "alice")))
        # Nothing in the store files holds it, in the clear or in a table's row count.
        for c in (alice, bob):
            for name in os.listdir(c.data):
                path = os.path.join(c.data, name)
                if os.path.isfile(path):
                    with open(path, "rb") as f:
                        self.assertNotIn(secret.encode(), f.read())
            db = sqlite3.connect(os.path.join(c.data, ("alice" if c is alice else "bob") + ".db"))
            try:
                count = db.execute("SELECT COUNT(*) FROM messages WHERE timestamp = ?",
                                   (ts,)).fetchone()[0]
                self.assertEqual(count, 0)
                count = db.execute("SELECT COUNT(*) FROM message_state WHERE timestamp = ?",
                                   (ts,)).fetchone()[0]
                self.assertEqual(count, 0)
                count = db.execute("SELECT COUNT(*) FROM sent_log WHERE timestamp = ?",
                                   (ts,)).fetchone()[0]
                self.assertEqual(count, 0)
            finally:
                db.close()
        self.assertEqual([m["body"] for m in self.history(bob, "alice")], ["before the timer"])
        bob.ok("disappearing", "alice", "off")
        alice.receive()
        self.assertEqual(json.loads(alice.ok("disappearing", "bob").stdout)["expireTimer"], 0)

    def test_chat_sends_a_file_with_attach(self):
        alice, bob = self.pair()
        path = os.path.join(self.root, "report.txt")
        with open(path, "w") as f:
            f.write("the report\n")
        r = alice.run("chat", "bob", stdin="/attach %s this week\n/attach /no/such/file\n/quit\n"
                      % path, timeout=90)
        self.assertEqual(r.returncode, 1, r.stderr)  # the second file was not sent
        out = parse_lines(r.stdout)
        self.assertEqual(len(events_of(out, "sent")), 1)
        self.assertIn("no such file", [o for o in out if "error" in o][0]["error"]["message"])
        [m] = events_of(bob.receive(), "message")
        [f] = m["attachments"]
        self.assertEqual((f["fileName"], f["caption"]), ("report.txt", "this week"))
        # The caption is in the text output too.
        self.assertIn("caption: this week", bob.ok("history", "alice", json_output=False).stdout)

    # --- the daemon ----------------------------------------------------------------------------

    def start_daemon(self, client):
        path = os.path.join(self.root, "d%d.sock" % len(self.procs))
        p = client.popen("daemon", "--socket", path, stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(p)
        self.assertTrue(eventually(lambda: os.path.exists(path), timeout=30))
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.assertTrue(eventually(lambda: s.connect_ex(path) == 0, timeout=30))
        self.sockets.append(s)
        f = s.makefile("rw", encoding="utf-8", newline="\n")
        return p, Rpc(f, f)

    def test_daemon_methods_in_signal_cli_shapes(self):
        alice, bob = self.pair()
        hello = json.loads(alice.ok("send", "bob", "hello bot").stdout)["timestamp"]
        p, bot = self.start_daemon(bob)
        n = bot.notification(lambda params: params.get("type") == "message")
        self.assertEqual(n["timestamp"], hello)

        r = bot.result("sendReaction", {"recipient": "alice", "emoji": "\U0001F44D",
                                        "targetAuthor": "alice", "targetTimestamp": hello})
        self.assertEqual(r["results"][0]["type"], "SUCCESS")
        r = bot.result("send", {"recipient": "alice", "message": "re: hello",
                                "quoteTimestamp": hello, "quoteAuthor": "alice"})
        answer = r["timestamp"]
        bot.result("send", {"recipient": "alice", "message": "re: hello (edited)",
                            "editTimestamp": answer})
        bot.result("sendTyping", {"recipient": "alice"})
        bot.result("sendReceipt", {"recipient": "alice", "targetTimestamps": [hello],
                                   "type": "read"})
        got = alice.receive()
        kinds = [e["type"] for e in got]
        for kind in ("reaction", "message", "edit", "typing", "receipt"):
            self.assertIn(kind, kinds)
        [m] = events_of(got, "message")
        self.assertEqual(m["quote"], {"author": "alice", "timestamp": hello, "text": "hello bot"})
        self.assertEqual(self.message(alice, "bob", answer)["body"], "re: hello (edited)")
        self.assertIn("read", [r["receiptType"] for r in events_of(got, "receipt")])

        bot.result("remoteDelete", {"recipient": "alice", "targetTimestamp": answer})
        alice.receive()
        self.assertTrue(self.message(alice, "bob", answer)["deleted"])

        r = bot.result("updateContact", {"recipient": "alice", "expiration": 3600})
        self.assertEqual(r["expiration"], 3600)
        self.assertEqual(bot.result("updateConfiguration", {"readReceipts": False}),
                         {"readReceipts": False})
        self.assertEqual(bot.result("updateConfiguration", {}), {"readReceipts": False})
        got = alice.receive()
        self.assertEqual([e["expireTimer"] for e in events_of(got, "disappearing_timer")], [3600])

        # What the bot sends in the wrong shape is refused as invalid params, naming the shape.
        for method, params in (("sendReaction", {"recipient": "alice"}),
                               ("remoteDelete", {"recipient": "alice", "targetTimestamp": "x"}),
                               ("sendReceipt", {"recipient": "alice", "targetTimestamps": []}),
                               ("send", {"recipient": "alice", "message": "x",
                                         "quoteTimestamp": hello}),
                               ("send", {"recipient": "alice", "message": "x",
                                         "mention": ["nonsense"]}),
                               ("updateContact", {"recipient": "alice", "expiration": -1}),
                               ("sendTyping", [])):
            error = bot.call(method, params)["error"]
            self.assertEqual(error["code"], -32602, (method, params, error))
        # A message that is not ours cannot be deleted: an application error.
        error = bot.call("remoteDelete", {"recipient": "alice", "targetTimestamp": hello})["error"]
        self.assertEqual(error["data"]["code"], "not_found")


if __name__ == "__main__":
    sys.exit(test_e2e.main())  # --bin BUILD_DIR [unittest options]
