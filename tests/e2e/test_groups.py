#!/usr/bin/env python3
"""End-to-end tests of the group commands (docs/groups.md): a real `sotto-server` and real `sotto`
processes, in the style of test_e2e.py (whose Server and Client this file uses).

    python3 tests/e2e/test_groups.py --bin BUILD_DIR [unittest options]
"""

import json
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_e2e as base  # noqa: E402
import test_daemon  # noqa: E402


def group_events(events, kind):
    return [e for e in events if e.get("type") == kind]


class GroupE2ETest(unittest.TestCase):
    # The set-up of test_e2e.py's tests (a server of its own, clients in a temporary directory),
    # without its tests.
    setUp = base.E2ETest.setUp
    tearDown = base.E2ETest.tearDown
    _outcome_ok = base.E2ETest._outcome_ok
    client = base.E2ETest.client

    def register(self, *names):
        out = []
        for n in names:
            c = self.client(n)
            c.register(n, self.server)
            out.append(c)
        return out

    def test_group_commands(self):
        alice, bob, carol, dave, erin = self.register("alice", "bob", "carol", "dave", "erin")
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
        # Reactions, edits and deletes are 1:1 only for now, and the error says so.
        err = carol.fails("react", "bob:%d" % msgs[0]["timestamp"], "+1", code="invalid_argument")
        self.assertIn("1:1 conversations only", err["message"])
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


def main():
    import argparse
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--bin", required=True, help="CMake binary directory")
    args, rest = parser.parse_known_args()
    base.BIN_DIR = os.path.abspath(args.bin)
    for b in (base.sotto_bin(), base.server_bin()):
        if not os.access(b, os.X_OK):
            sys.stderr.write("missing binary: %s (build the sotto and sotto-server targets)\n" % b)
            return 1
    program = unittest.main(argv=[sys.argv[0]] + rest, exit=False, verbosity=2)
    return 0 if program.result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main())
