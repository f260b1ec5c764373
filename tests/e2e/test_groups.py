#!/usr/bin/env python3
"""End-to-end tests of the group commands (docs/groups.md): a real `sotto-server` and real `sotto`
processes, in the style of test_e2e.py (whose Server and Client this file uses).

    python3 tests/e2e/test_groups.py --bin BUILD_DIR [unittest options]
"""

import json
import os
import sqlite3
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_e2e as base  # noqa: E402
import test_daemon  # noqa: E402


def group_events(events, kind):
    return [e for e in events if e.get("type") == kind]


def eventually(predicate, timeout=60):
    """Waits for a condition (not for a time): the timers run on the clients' clocks."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return predicate()


class GroupE2ETest(unittest.TestCase):
    # The set-up of test_e2e.py's tests (a server of its own, clients in a temporary directory),
    # without its tests.
    setUp = base.E2ETest.setUp
    tearDown = base.E2ETest.tearDown
    _outcome_ok = base.E2ETest._outcome_ok
    client = base.E2ETest.client
    link = base.E2ETest.link

    def register(self, *names):
        out = []
        for n in names:
            c = self.client(n)
            c.register(n, self.server)
            out.append(c)
        return out

    def test_group_commands(self):
        alice, bob, carol, dave, erin = self.register("alice", "bob", "carol", "dave", "erin")
        # No group yet: text says so, JSON prints no line.
        self.assertIn("No groups yet", alice.ok("group", "list", json_output=False).stdout)
        self.assertEqual(alice.ok("group", "list").stdout.strip(), "")
        created = json.loads(alice.ok("group", "create", "team", "--member", "bob",
                                      "--member", "carol").stdout)
        gid = created["groupId"]
        self.assertEqual(len(gid), 64)
        self.assertTrue(created["isAdmin"])
        # Human output prints the id alone.
        r = alice.ok("group", "create", "other", json_output=False)
        self.assertEqual(len(r.stdout.strip()), 64)

        for c in (bob, carol):
            changed = group_events(c.receive(), "group_changed")
            self.assertEqual(len(changed), 1)
            self.assertEqual(changed[0]["group"], gid)
        info = json.loads(bob.ok("group", "info", gid).stdout)
        self.assertEqual(sorted(m["user"] for m in info["members"]), ["alice", "bob", "carol"])
        self.assertFalse(info["isAdmin"])
        listed = base.parse_lines(carol.ok("group", "list").stdout)
        self.assertEqual([g["groupId"] for g in listed], [gid])

        # A group message reaches the others, with its group.
        sent = json.loads(bob.ok("send", "--group", gid, "hello team").stdout)
        self.assertEqual(sent["groupId"], gid)
        for c in (alice, carol):
            msgs = c.messages()
            self.assertEqual([(m["body"], m["group"], m["from"]) for m in msgs],
                             [("hello team", gid, "bob")])
        # A reaction is one emoji: "+1" is refused, and the error says so.
        err = carol.fails("react", "bob:%d" % msgs[0]["timestamp"], "+1", code="invalid_argument")
        self.assertIn("one emoji", err["message"])
        # Human receive shows the group.
        alice.ok("send", "--group", gid, "from alice")
        r = carol.run("receive", "--timeout", "20", json_output=False)
        self.assertIn("[group " + gid[:8] + "]", r.stdout)
        self.assertIn("from alice", r.stdout)
        bob.receive()

        # Only admins change the group; wrong input is one clear error.
        err = bob.fails("group", "rename", gid, "mine", code="forbidden")
        self.assertIn("admin", err["message"])
        bob.fails("group", "info", "1234", code="invalid_argument")
        bob.fails("send", "--group", gid, "a", "b", code="invalid_argument")
        bob.fails("group", "join", "not-a-link", code="invalid_argument")
        err = alice.fails("group", "remove", gid, "alice", code="invalid_argument")
        self.assertIn("group leave", err["message"])

        # Removal: carol hears, then gets nothing more.
        alice.ok("group", "remove", gid, "carol")
        self.assertEqual(len(group_events(carol.receive(), "group_changed")), 1)
        self.assertFalse(json.loads(carol.ok("group", "info", gid).stdout)["isMember"])
        carol.fails("send", "--group", gid, "still here", code="forbidden")
        bob.receive()
        bob.ok("send", "--group", gid, "after carol")
        self.assertEqual(carol.messages(), [])
        self.assertEqual([m["body"] for m in alice.messages()], ["after carol"])

        # Join by link; a reset link makes the old one fail (the admin is told).
        link = json.loads(alice.ok("group", "link", gid).stdout)["link"]
        self.assertTrue(link.startswith("sotto-group:"))
        bob.receive()
        joined = json.loads(dave.ok("group", "join", link).stdout)
        self.assertFalse(joined["isMember"])
        alice.receive()  # the admin's client checks the link and adds dave
        self.assertEqual(len(group_events(dave.receive(), "group_changed")), 1)
        self.assertTrue(json.loads(dave.ok("group", "info", gid).stdout)["isMember"])
        new_link = json.loads(alice.ok("group", "link", gid, "--reset").stdout)["link"]
        self.assertNotEqual(new_link, link)
        erin.ok("group", "join", link)
        refused = group_events(alice.receive(), "group_refused")
        self.assertEqual(len(refused), 1)
        self.assertEqual(refused[0]["from"], "erin")
        erin_events = erin.receive()
        self.assertEqual(group_events(erin_events, "group_changed"), [])
        # The admin's device tells erin that the link did not work, and nothing else.
        told = group_events(erin_events, "group_join_refused")
        self.assertEqual(len(told), 1)
        self.assertEqual((told[0]["group"], told[0]["from"]), (gid, "alice"))
        self.assertEqual(base.parse_lines(erin.ok("group", "list").stdout), [])

        # Checked before anything is sent: a user without an account, blank names, durations.
        err = alice.fails("group", "add", gid, "nobody", code="not_found")
        self.assertIn("no such user: nobody", err["message"])
        alice.fails("group", "rename", gid, "   ", code="invalid_argument")
        alice.fails("group", "create", "", code="invalid_argument")
        err = alice.fails("group", "create", "g4", "--member", "bob", "--member", "ALICE",
                          code="invalid_argument")
        self.assertIn("you are in the group already", err["message"])
        alice.fails("group", "timer", gid, "soon", code="invalid_argument")
        alice.ok("group", "timer", gid, "5m")
        self.assertEqual(json.loads(alice.ok("group", "info", gid).stdout)["expireTimer"], 300)
        r = alice.ok("group", "info", gid, json_output=False)
        self.assertIn("disappearing messages: 5 minutes", r.stdout)
        alice.ok("group", "timer", gid, "off")
        bob.receive()

        # Leave.
        dave.receive()
        left = json.loads(dave.ok("group", "leave", gid).stdout)
        self.assertFalse(left["isMember"])
        changed = group_events(alice.receive(), "group_changed")
        self.assertTrue(any("dave left" in e["detail"] for e in changed))
        info = json.loads(alice.ok("group", "info", gid).stdout)
        self.assertEqual(sorted(m["user"] for m in info["members"]), ["alice", "bob"])

    def test_concurrent_admin_changes_converge(self):
        # Two admins rename the group before either has seen the other's change; members get the
        # two changes in different orders (each admin its own first) and all end in one state.
        alice, bob, carol = self.register("alice", "bob", "carol")
        gid = json.loads(alice.ok("group", "create", "race", "--member", "bob",
                                  "--member", "carol").stdout)["groupId"]
        alice.ok("group", "admin", gid, "bob")
        bob.receive()
        carol.receive()
        base_revision = json.loads(alice.ok("group", "info", gid).stdout)["revision"]
        alice.ok("group", "rename", gid, "alice's name")
        bob.ok("group", "rename", gid, "bob's name")
        for _ in range(3):
            for c in (carol, alice, bob):
                c.receive()
        infos = [json.loads(c.ok("group", "info", gid).stdout) for c in (alice, bob, carol)]
        for i in infos:
            self.assertEqual(i["revision"], base_revision + 2)
            self.assertEqual((i["name"], i["members"]), (infos[0]["name"], infos[0]["members"]))

    def test_group_message_with_attachments(self):
        # One upload, one pointer in the Sender Key message: every member saves the same file.
        import hashlib
        alice, bob, carol = self.register("alice", "bob", "carol")
        gid = json.loads(alice.ok("group", "create", "photos", "--member", "bob",
                                  "--member", "carol").stdout)["groupId"]
        for c in (bob, carol):
            self.assertEqual(len(group_events(c.receive(), "group_changed")), 1)
        path = os.path.join(self.root, "picture.bin")
        data = os.urandom(300_000)
        with open(path, "wb") as f:
            f.write(data)
        sent = json.loads(alice.ok("send", "--group", gid, "a file for you",
                                   "--attach", path).stdout)
        self.assertEqual(sent["groupId"], gid)
        for name, c in (("bob", bob), ("carol", carol)):
            out_dir = os.path.join(self.root, name + "-files")
            events = [json.loads(line) for line in c.ok(
                "receive", "--timeout", "20", "--attachments-dir", out_dir).stdout.splitlines()
                if line.strip()]
            msgs = [e for e in events if e.get("type") == "message"]
            self.assertEqual(len(msgs), 1)
            self.assertEqual((msgs[0]["body"], msgs[0]["group"]), ("a file for you", gid))
            files = msgs[0]["attachments"]
            self.assertEqual(len(files), 1)
            self.assertEqual(files[0]["sha256"], hashlib.sha256(data).hexdigest())
            self.assertEqual(files[0]["fileName"], "picture.bin")
            with open(files[0]["path"], "rb") as f:
                self.assertEqual(f.read(), data)
        # A file alone, without text.
        alice.ok("send", "--group", gid, "--attach", path)
        got = [m for m in bob.messages() if m.get("group") == gid]
        self.assertEqual(len(got), 1)
        self.assertEqual(got[0]["body"], "")
        self.assertEqual(len(got[0]["attachments"]), 1)
        # Neither text nor file: one clear error.
        alice.fails("send", "--group", gid, code="invalid_argument")

    def test_group_avatar(self):
        # An admin's picture reaches every member as the same bytes; a non-admin cannot set one,
        # a file that is not an image is refused, removing it clears it everywhere.
        import hashlib
        from test_attachments import make_png
        alice, bob, carol = self.register("alice", "bob", "carol")
        picture = os.path.join(self.root, "team.png")
        make_png(picture, 48, 32)
        with open(picture, "rb") as f:
            sha = hashlib.sha256(f.read()).hexdigest()
        notes = os.path.join(self.root, "notes.txt")
        with open(notes, "w") as f:
            f.write("not a picture")
        # A file that cannot be a picture makes no group (nothing is created, nobody is told).
        err = alice.fails("group", "create", "bad", "--member", "bob", "--avatar", notes,
                          code="invalid_argument")
        self.assertIn("PNG or JPEG", err["message"])
        self.assertEqual(base.parse_lines(alice.ok("group", "list").stdout), [])
        gid = json.loads(alice.ok("group", "create", "team", "--member", "bob", "--member",
                                  "carol", "--avatar", picture).stdout)["groupId"]
        mine = json.loads(alice.ok("group", "info", gid).stdout)["avatar"]
        self.assertEqual((mine["sha256"], mine["contentType"]), (sha, "image/png"))
        changes = group_events(bob.receive(), "group_changed")
        self.assertIn("alice changed the group picture", [e["detail"] for e in changes])
        got = json.loads(bob.ok("group", "info", gid).stdout)["avatar"]
        self.assertEqual((got["sha256"], got["size"], got["contentType"]),
                         (sha, os.path.getsize(picture), "image/png"))
        with open(got["path"], "rb") as f:
            self.assertEqual(hashlib.sha256(f.read()).hexdigest(), sha)
        self.assertTrue(got["path"].startswith(bob.data))
        r = bob.ok("group", "info", gid, json_output=False)
        self.assertIn("picture: " + got["path"], r.stdout)
        # The notice is in the history too, in words.
        h = bob.ok("history", "--group", gid, json_output=False).stdout
        self.assertIn("alice changed the group picture", h)
        # In JSON a program can tell the notice from what someone wrote.
        listed = self.history(bob, gid)
        self.assertIn("[alice changed the group picture]",
                      [m["body"] for m in listed if m.get("kind") == "group_notice"])
        self.assertTrue(all(m.get("kind") == "group_notice" for m in listed))

        err = bob.fails("group", "avatar", gid, picture, code="forbidden")
        self.assertIn("admin", err["message"])
        err = alice.fails("group", "avatar", gid, notes, code="invalid_argument")
        self.assertIn("PNG or JPEG", err["message"])
        big = os.path.join(self.root, "big.png")
        with open(big, "wb") as f:
            f.write(b"\x89PNG" + b"\0" * (5 * 1024 * 1024))
        err = alice.fails("group", "avatar", gid, big, code="invalid_argument")
        self.assertIn("5 MiB", err["message"])
        alice.fails("group", "avatar", gid)  # neither a file nor --remove

        alice.ok("group", "avatar", gid, "--remove")
        self.assertIsNone(json.loads(alice.ok("group", "info", gid).stdout)["avatar"])
        changes = group_events(carol.receive(), "group_changed")
        self.assertEqual(changes[-1]["detail"], "alice removed the group picture")
        self.assertIsNone(json.loads(carol.ok("group", "info", gid).stdout)["avatar"])
        bob.receive()
        self.assertIsNone(json.loads(bob.ok("group", "info", gid).stdout)["avatar"])
        self.assertFalse(os.path.exists(got["path"]))
        # Removing a picture the group does not have changes nothing and tells nobody.
        revision = json.loads(alice.ok("group", "info", gid).stdout)["revision"]
        err = alice.fails("group", "avatar", gid, "--remove", code="invalid_argument")
        self.assertIn("the group has no picture", err["message"])
        self.assertEqual(json.loads(alice.ok("group", "info", gid).stdout)["revision"], revision)
        self.assertEqual(group_events(bob.receive(), "group_changed"), [])
        # A member who left hears that, not that only admins may change it.
        carol.ok("group", "leave", gid)
        err = carol.fails("group", "avatar", gid, picture, code="forbidden")
        self.assertEqual(err["message"], "you are not a member of this group")
        err = carol.fails("group", "rename", gid, "mine", code="forbidden")
        self.assertEqual(err["message"], "you are not a member of this group")

    def history(self, c, gid):
        return base.parse_lines(c.ok("history", "--group", gid, "--limit", "0").stdout)

    def message(self, c, gid, author, ts):
        found = [m for m in self.history(c, gid) if m["from"] == author and m["timestamp"] == ts]
        self.assertEqual(len(found), 1, found)
        return found[0]

    def test_everyday_message_types_in_a_group(self):
        # Three members, bob with two devices: what one does reaches every member's every device
        # and the author's other device.
        alice, bob, carol = self.register("alice", "bob", "carol")
        bob2, _ = self.link(bob, "bob2")
        gid = json.loads(alice.ok("group", "create", "team", "--member", "bob",
                                  "--member", "carol").stdout)["groupId"]
        for c in (bob, bob2, carol):
            self.assertEqual(len(group_events(c.receive(), "group_changed")), 1)
        devices = {"alice": alice, "bob": bob, "bob2": bob2, "carol": carol}

        # A message; each recipient's device says it arrived (1:1, to bob's devices).
        hello = json.loads(bob.ok("send", "--group", gid, "hello team").stdout)["timestamp"]
        for c in (alice, bob2, carol):
            self.assertEqual([m["body"] for m in c.messages()], ["hello team"])
        receipts = group_events(bob.receive(), "receipt")
        self.assertEqual(sorted(r["user"] for r in receipts), ["alice", "carol"])
        for r in receipts:
            self.assertEqual(r["receiptType"], "delivery")
            self.assertEqual(r["conversation"], "group:" + gid)
        m = self.message(bob, gid, "bob", hello)
        self.assertNotIn("kind", m)  # a message, not a notice
        self.assertEqual(sorted(r["user"] for r in m["receipts"]), ["alice", "carol"])
        self.assertTrue(all(r["deliveredAt"] > 0 for r in m["receipts"]))
        # In text, as counts of the members it went to (the JSON has each one).
        self.assertIn("✓✓ delivered to 2/2", bob.ok("history", "--group", gid,
                                                   json_output=False).stdout)

        # A reply with a quote and a mention of bob (flagged on his devices only).
        carol.ok("send", "--group", gid, "@bob welcome", "--quote", "bob:%d" % hello,
                 "--mention", "bob")
        carol.fails("send", "--group", gid, "@dave hi", "--mention", "dave",
                    code="invalid_argument")
        for name, c in devices.items():
            if name == "carol":
                continue
            [m] = c.messages()
            self.assertEqual(m["quote"], {"author": "bob", "timestamp": hello,
                                          "text": "hello team"})
            self.assertEqual(m["mentions"], [{"user": "bob", "start": 0, "length": 4}])
            self.assertEqual(m.get("mentionsMe", False), name.startswith("bob"), name)
        reply = [m for m in self.history(bob, gid) if m["from"] == "carol"][0]["timestamp"]
        self.assertIn("mentions YOU", bob.ok("history", "--group", gid,
                                             json_output=False).stdout)

        # A reaction by its id alone; one emoji only.
        alice.ok("react", str(hello), "\U0001F44D")
        alice.fails("react", str(hello), "ok", code="invalid_argument")
        for name, c in devices.items():
            if name == "carol":
                # In text, with the group's tag as the message has it.
                text = c.ok("receive", "--timeout", "20", json_output=False).stdout
                self.assertIn("* [group %s] alice reacted \U0001F44D" % gid[:8], text)
            elif name != "alice":
                self.assertEqual([e["emoji"] for e in group_events(c.receive(), "reaction")],
                                 ["\U0001F44D"], name)
            m = self.message(c, gid, "bob", hello)
            self.assertEqual([(r["user"], r["emoji"]) for r in m["reactions"]],
                             [("alice", "\U0001F44D")], name)

        # An edit from bob's second device: everywhere, and the reply's quote follows it.
        bob2.ok("edit", "bob:%d" % hello, "hello, team")
        for name, c in devices.items():
            if name != "bob2":
                self.assertEqual(len(group_events(c.receive(), "edit")), 1, name)
            m = self.message(c, gid, "bob", hello)
            self.assertEqual((m["body"], m["edited"]), ("hello, team", True), name)
            self.assertEqual(self.message(c, gid, "carol", reply)["quote"]["text"],
                             "hello, team", name)

        # Read receipts: alice reads the group; bob's devices see who read what.
        self.assertEqual(json.loads(alice.ok("read", "--group", gid).stdout)["read"], 2)
        got = group_events(bob.receive(), "receipt")
        self.assertEqual([(r["receiptType"], r["user"]) for r in got], [("read", "alice")])
        read = {r["user"]: r.get("readAt") for r in self.message(bob, gid, "bob", hello)["receipts"]}
        self.assertGreater(read["alice"], 0)
        self.assertIsNone(read["carol"])  # not read yet: no readAt (not a 0)
        self.assertIn("✓✓ delivered to 2/2, read by 1/2",
                      bob.ok("history", "--group", gid, json_output=False).stdout)
        bob2.receive()

        # A delete for everyone: the text is gone from every device, the reply says so.
        bob.ok("delete", str(hello))
        carol.fails("delete", "bob:%d" % hello, code="invalid_argument")
        for name, c in devices.items():
            if name != "bob":
                self.assertEqual(len(group_events(c.receive(), "remote_delete")), 1, name)
            m = self.message(c, gid, "bob", hello)
            self.assertEqual((m["body"], m.get("deleted")), ("", True), name)
            q = self.message(c, gid, "carol", reply)["quote"]
            self.assertEqual((q["text"], q.get("deleted")), ("", True), name)
        self.assertIn("[the original was deleted]",
                      alice.ok("history", "--group", gid, json_output=False).stdout)
        for c in devices.values():
            for e in c.receive():
                self.assertNotEqual(e.get("type"), "error", e)

    def test_group_disappearing_messages_go_from_every_store(self):
        alice, bob, carol = self.register("alice", "bob", "carol")
        bob2, _ = self.link(bob, "bob2")
        gid = json.loads(alice.ok("group", "create", "brief", "--member", "bob",
                                  "--member", "carol").stdout)["groupId"]
        alice.ok("group", "timer", gid, "1")
        for c in (bob, bob2, carol):
            self.assertEqual(len(group_events(c.receive(), "group_changed")), 2)
            self.assertEqual(json.loads(c.ok("group", "info", gid).stdout)["expireTimer"], 1)

        secret = "group-vanishing-plaintext-5521"
        ts = json.loads(alice.ok("send", "--group", gid, secret).stdout)["timestamp"]
        for c in (bob, bob2, carol):
            [m] = c.messages()
            self.assertEqual(m["expireTimer"], 1)

        def gone(c):
            return all(secret not in m["body"] for m in self.history(c, gid))

        # The sender's copy goes a second after sending; a recipient's a second after reading
        # (bob reads on one device, his other one hears).
        self.assertTrue(eventually(lambda: gone(alice)))
        self.assertFalse(gone(bob))
        self.assertFalse(gone(carol))
        bob.ok("read", "--group", gid)
        bob2.receive()
        carol.ok("read", "--group", gid)
        for c in (bob, bob2, carol):
            self.assertTrue(eventually(lambda: gone(c)))
        # Nothing in the store files holds it, in the clear or in a table's rows.
        for name, c in (("alice", alice), ("bob", bob), ("bob", bob2), ("carol", carol)):
            for f in os.listdir(c.data):
                path = os.path.join(c.data, f)
                if os.path.isfile(path):
                    with open(path, "rb") as fh:
                        self.assertNotIn(secret.encode(), fh.read(), path)
            db = sqlite3.connect(os.path.join(c.data, name + ".db"))
            try:
                for table in ("messages", "message_state", "sent_log"):
                    count = db.execute("SELECT COUNT(*) FROM %s WHERE timestamp = ?" % table,
                                       (ts,)).fetchone()[0]
                    self.assertEqual(count, 0, (c.data, table))
            finally:
                db.close()

    def test_chat_in_a_group_shows_and_sends(self):
        alice, bob = self.register("alice", "bob")
        gid = json.loads(alice.ok("group", "create", "pair", "--member", "bob").stdout)["groupId"]
        bob.receive()
        hello = json.loads(alice.ok("send", "--group", gid, "hello @bob", "--mention",
                                    "bob").stdout)["timestamp"]
        self.assertEqual(len(bob.messages()), 1)
        path = os.path.join(self.root, "note.txt")
        with open(path, "w") as f:
            f.write("a file from the chat\n")
        r = bob.run("chat", "--group", gid, stdin="/history\n/attach %s the caption\nhi\n/quit\n"
                    % path, timeout=90)
        self.assertEqual(r.returncode, 0, r.stderr)
        out = base.parse_lines(r.stdout)
        shown = [o for o in out if o.get("type") == "history"]
        self.assertEqual([(m["body"], m.get("mentionsMe")) for m in shown
                          if m["timestamp"] == hello], [("hello @bob", True)])
        self.assertEqual(len([o for o in out if o.get("type") == "sent"]), 2)
        # Opening the chat read alice's message: she hears; the file and the text arrive.
        events = alice.receive()
        self.assertIn(("read", "bob"), [(e["receiptType"], e["user"])
                                        for e in group_events(events, "receipt")])
        msgs = group_events(events, "message")
        self.assertEqual(sorted(m["body"] for m in msgs), ["", "hi"])
        [f] = [m for m in msgs if m["body"] == ""][0]["attachments"]
        self.assertEqual(f["fileName"], "note.txt")

    def test_chat_in_a_group(self):
        alice, bob = self.register("alice", "bob")
        gid = json.loads(alice.ok("group", "create", "pair", "--member", "bob").stdout)["groupId"]
        bob.receive()
        r = bob.run("chat", "--group", gid, stdin="hello from chat\n/quit\n", timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        sent = [o for o in base.parse_lines(r.stdout) if o.get("type") == "sent"]
        self.assertEqual(len(sent), 1)
        self.assertEqual(sent[0]["groupId"], gid)
        msgs = alice.messages()
        self.assertEqual([(m["body"], m["group"]) for m in msgs], [("hello from chat", gid)])
        bob.fails("chat", code="invalid_argument")


class GroupDaemonTest(unittest.TestCase):
    # test_daemon.py's set-up and helpers, without its tests.
    setUp = test_daemon.DaemonTest.setUp
    tearDown = test_daemon.DaemonTest.tearDown
    _outcome_ok = test_daemon.DaemonTest._outcome_ok
    start_daemon = test_daemon.DaemonTest.start_daemon
    connect = test_daemon.DaemonTest.connect
    stop_daemon = test_daemon.DaemonTest.stop_daemon

    def test_group_methods(self):
        alice, bob, carol = (base.Client(self.root, n) for n in ("alice", "bob", "carol"))
        for c, n in ((alice, "alice"), (bob, "bob"), (carol, "carol")):
            c.register(n, self.server)
        p, path = self.start_daemon(alice)
        bot = self.connect(path)
        created = bot.result("updateGroup", {"name": "team", "members": ["bob", "carol"]})
        gid = created["groupId"]
        self.assertEqual(created["revision"], 1)
        groups = bot.result("listGroups")
        self.assertEqual(len(groups), 1)
        self.assertEqual(groups[0]["id"], gid)
        self.assertEqual(groups[0]["admins"], ["alice"])
        self.assertEqual(sorted(groups[0]["members"]), ["alice", "bob", "carol"])
        sent = bot.result("send", {"groupId": gid, "message": "hi from the bot"})
        self.assertEqual(sent["results"][0]["type"], "SUCCESS")
        for c in (bob, carol):
            events = c.receive()
            self.assertEqual(len(group_events(events, "group_changed")), 1)
            self.assertEqual([(m["body"], m["group"]) for m in group_events(events, "message")],
                             [("hi from the bot", gid)])
        changed = bot.result("updateGroup", {"groupId": gid, "removeMembers": ["carol"],
                                             "name": "two", "resetLink": True})
        self.assertEqual(changed["name"], "two")
        self.assertTrue(changed["inviteLink"].startswith("sotto-group:" + gid))
        bad = bot.call("updateGroup", {"groupId": gid, "members": 3})
        self.assertEqual(bad["error"]["code"], -32602)
        # Events reach the bot: bob leaves, the bot hears it.
        bob.receive()
        bob.ok("group", "leave", gid)
        note = bot.notification(lambda params: params.get("type") == "group_changed"
                                and "bob left" in params.get("detail", ""))
        self.assertEqual(note["group"], gid)
        left = bot.result("quitGroup", {"groupId": gid})
        self.assertEqual(left["groupId"], gid)
        joined = bot.call("joinGroup", {"uri": "not a link"})
        self.assertIn("error", joined)
        self.stop_daemon(p)

    def test_update_group_avatar(self):
        import hashlib
        from test_attachments import make_png
        alice, bob = (base.Client(self.root, n) for n in ("alice", "bob"))
        for c, n in ((alice, "alice"), (bob, "bob")):
            c.register(n, self.server)
        picture = os.path.join(self.root, "bot.png")
        make_png(picture, 20, 20)
        with open(picture, "rb") as f:
            sha = hashlib.sha256(f.read()).hexdigest()
        # Started with a relative --data: the paths it reports are absolute all the same.
        cwd = os.getcwd()
        os.chdir(self.root)
        try:
            alice.data = "alice"
            p, path = self.start_daemon(alice)
        finally:
            os.chdir(cwd)
            alice.data = os.path.join(self.root, "alice")
        bot = self.connect(path)
        notes = os.path.join(self.root, "notes.txt")
        with open(notes, "w") as f:
            f.write("not a picture")
        # A file that cannot be a picture makes no group.
        bad = bot.call("updateGroup", {"name": "bad", "members": ["bob"], "avatar": notes})
        self.assertIn("PNG or JPEG", bad["error"]["message"])
        self.assertEqual(bot.result("listGroups"), [])
        gid = bot.result("updateGroup", {"name": "pics", "members": ["bob"]})["groupId"]
        changed = bot.result("updateGroup", {"groupId": gid, "avatar": picture})
        self.assertEqual(changed["avatar"]["sha256"], sha)
        self.assertTrue(os.path.isabs(changed["avatar"]["path"]), changed["avatar"]["path"])
        self.assertTrue(os.path.isfile(changed["avatar"]["path"]))
        [listed] = bot.result("listGroups")
        self.assertEqual(listed["avatar"]["sha256"], sha)
        self.assertEqual(listed["avatar"]["path"], changed["avatar"]["path"])
        bad = bot.call("updateGroup", {"groupId": gid, "avatar": 5})
        self.assertEqual(bad["error"]["code"], -32602)
        bob.receive()
        self.assertEqual(json.loads(bob.ok("group", "info", gid).stdout)["avatar"]["sha256"], sha)
        removed = bot.result("updateGroup", {"groupId": gid, "removeAvatar": True})
        self.assertIsNone(removed["avatar"])
        self.assertIsNone(bot.result("listGroups")[0]["avatar"])
        self.stop_daemon(p)

    def test_everyday_methods_with_group_id(self):
        alice, bob = (base.Client(self.root, n) for n in ("alice", "bob"))
        for c, n in ((alice, "alice"), (bob, "bob")):
            c.register(n, self.server)
        gid = json.loads(bob.ok("group", "create", "g", "--member", "alice").stdout)["groupId"]
        hello = json.loads(bob.ok("send", "--group", gid, "hello bot").stdout)["timestamp"]
        p, path = self.start_daemon(alice)
        bot = self.connect(path)
        bot.notification(lambda params: params.get("type") == "message"
                         and params.get("body") == "hello bot")
        r = bot.result("send", {"groupId": gid, "message": "@bob yes", "quoteTimestamp": hello,
                                "quoteAuthor": "bob", "mention": "0:4:bob"})
        self.assertEqual(r["results"][0]["groupId"], gid)
        reply = r["timestamp"]
        # A mention's range must cover "@" and the name, as `sotto send --mention` makes it.
        for text, mention in (("hello bob", "0:4:bob"), ("@bo", "0:4:bob"), ("@bob", "1:3:bob")):
            bad = bot.call("send", {"groupId": gid, "message": text, "mention": mention})
            self.assertEqual(bad["error"]["code"], -32602, bad)
            self.assertIn("must cover", bad["error"]["message"])
        # Someone not in the group: said so (as the CLI says it), whatever the range covers.
        for text, mention in (("@carl", "0:4:carl"), ("hi @dave there", "3:6:dave")):
            bad = bot.call("send", {"groupId": gid, "message": text, "mention": mention})
            self.assertEqual(bad["error"]["code"], -32602, bad)
            self.assertIn("dave" if "dave" in text else "carl", bad["error"]["message"])
            self.assertIn("who is not in the group", bad["error"]["message"])
        bot.result("sendReaction", {"groupId": gid, "emoji": "\U0001F44D",
                                    "targetAuthor": "bob", "targetTimestamp": hello})
        bad = bot.call("sendReaction", {"groupId": gid, "emoji": "yes",
                                        "targetAuthor": "bob", "targetTimestamp": hello})
        self.assertIn("one emoji", bad["error"]["message"])
        bot.result("send", {"groupId": gid, "message": "@bob yes!", "editTimestamp": reply})
        self.assertEqual(bot.result("sendReceipt", {"groupId": gid, "targetTimestamps": [hello],
                                                    "type": "read"})["read"], 1)
        bot.result("sendTyping", {"groupId": gid})
        events = bob.receive()
        [m] = group_events(events, "message")
        self.assertEqual((m["quote"]["timestamp"], m["mentionsMe"]), (hello, True))
        # History read beside the daemon counts the members as the daemon's own would.
        bot.notification(lambda params: params.get("type") == "receipt"
                         and params.get("user") == "bob")
        self.assertIn("✓✓ delivered to 1/1",
                      alice.ok("history", "--group", gid, json_output=False).stdout)
        self.assertEqual([e["emoji"] for e in group_events(events, "reaction")], ["\U0001F44D"])
        self.assertEqual([e["body"] for e in group_events(events, "edit")], ["@bob yes!"])
        self.assertIn("read", [e["receiptType"] for e in group_events(events, "receipt")])
        typing = group_events(events, "typing")
        self.assertEqual([(t["user"], t["conversation"]) for t in typing],
                         [("alice", "group:" + gid)])
        bot.result("remoteDelete", {"groupId": gid, "targetTimestamp": reply})
        history = bot.result("history", {"groupId": gid})
        mine = [m for m in history if m["timestamp"] == reply]
        self.assertEqual((mine[0]["body"], mine[0]["deleted"]), ("", True))
        self.assertEqual(len(group_events(bob.receive(), "remote_delete")), 1)
        self.stop_daemon(p)


if __name__ == "__main__":
    sys.exit(base.main())  # --bin BUILD_DIR [unittest options]
