#!/usr/bin/env python3
"""Key transparency over real processes (docs/transparency.md): a real sotto-server that logs
every account change, real sotto clients that check every bundle against the log's proofs, and a
malicious-server harness: a ghost device for bob written straight into the server's SQLite
database without logging it (alice refuses it), and one added in the open, logged through the
server's own append path by a hidden test-only operator command (bob's devices report it), and a
forked log: two copies of the server's data shown to alice and to bob, their messages relayed
between them (each side reports split_view from the other's first message). The helpers come from
test_e2e.py.

    python3 tests/e2e/test_transparency.py --bin BUILD_DIR [unittest options]
"""

import json
import os
import shutil
import subprocess
import sqlite3
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_e2e  # noqa: E402
from test_e2e import Client, LineReader, Server, parse_lines  # noqa: E402


def kt_rows(server):
    db = sqlite3.connect(os.path.join(server.data, "sotto.db"))
    try:
        entries = db.execute("SELECT count(*) FROM kt_entries").fetchone()[0]
        versions = db.execute("SELECT count(*) FROM kt_versions").fetchone()[0]
    finally:
        db.close()
    return entries, versions


def add_ghost_device(server, user, device_id=7):
    """What a coerced operator does behind the log's back: a device for `user` in the accounts
    tables only, with a signed prekey so that the server hands out a bundle for it."""
    db = sqlite3.connect(os.path.join(server.data, "sotto.db"))
    try:
        (account,) = db.execute("SELECT id FROM accounts WHERE username = ?", (user,)).fetchone()
        db.execute("INSERT INTO devices (account_id, device_id, registration_id, auth_key, "
                   "created_day, name) VALUES (?, ?, ?, ?, ?, x'')",
                   (account, device_id, 4242, b"\x66" * 32, 20000))
        db.execute("INSERT INTO signed_pre_keys (account_id, device_id, key_id, public_key, "
                   "signature) VALUES (?, ?, 1, ?, ?)",
                   (account, device_id, b"\x05" + b"\x09" * 32, b"\x00" * 64))
        db.commit()
    finally:
        db.close()


def relay_envelopes(from_data, to_data, user):
    """What a server showing two users two logs still does: relays their messages. Copies the
    envelopes queued for `user` in one copy of the server's database into the other."""
    src = sqlite3.connect(os.path.join(from_data, "sotto.db"))
    dst = sqlite3.connect(os.path.join(to_data, "sotto.db"))
    try:
        columns = [r[1] for r in src.execute("PRAGMA table_info(messages)") if r[1] != "seq"]
        rows = src.execute(
            "SELECT %s FROM messages WHERE account_id = "
            "(SELECT id FROM accounts WHERE username = ?) ORDER BY seq"
            % ", ".join(columns), (user,)).fetchall()
        moved = 0
        for row in rows:
            values = dict(zip(columns, row))
            if dst.execute("SELECT 1 FROM messages WHERE envelope_id = ?",
                           (values["envelope_id"],)).fetchone():
                continue
            if values.get("body_id"):
                (values["content"],) = src.execute(
                    "SELECT content FROM shared_bodies WHERE id = ?",
                    (values["body_id"],)).fetchone()
                values["body_id"] = 0
            dst.execute("INSERT INTO messages (%s) VALUES (%s)"
                        % (", ".join(columns), ", ".join("?" for _ in columns)),
                        [values[c] for c in columns])
            moved += 1
        dst.commit()
        return moved
    finally:
        src.close()
        dst.close()


class TransparencyTest(unittest.TestCase):
    def setUp(self):
        self.root = tempfile.mkdtemp(prefix="sotto-kt-e2e-")
        self.server = Server(self.root)
        self.server.start()

    def tearDown(self):
        self.server.stop()
        if os.environ.get("SOTTO_E2E_KEEP"):
            print("kept", self.root)
        else:
            shutil.rmtree(self.root, ignore_errors=True)

    def test_server_prints_and_keeps_its_log_keys(self):
        printed = [line.split(": ", 1)[1] for line in self.server.log().splitlines()
                   if line.startswith("kt keys: ")]
        self.assertEqual(len(printed), 1, self.server.log())
        self.assertRegex(printed[0], r"^[0-9a-f]{64}:[0-9a-f]{64}$")
        self.assertEqual(self.server.operator("kt-keys").strip(), "kt keys: " + printed[0])
        # A client shows what it pinned, to compare with the operator's: nothing before its
        # first lookup, the server's keys after.
        alice = Client(self.root, "alice")
        alice.register("alice", self.server)
        shown = json.loads(alice.ok("kt", "show").stdout)
        if shown["keys"] is None:
            Client(self.root, "bob").register("bob", self.server)
            self.assertEqual(alice.send("bob", "hi").returncode, 0)
            shown = json.loads(alice.ok("kt", "show").stdout)
        self.assertEqual(shown["keys"], printed[0])
        self.assertGreaterEqual(shown["treeSize"], 2)
        text = alice.run("kt", "show", json_output=False)
        self.assertIn("kt keys: " + printed[0], text.stdout)
        self.server.stop()
        self.server.start()
        again = [line for line in self.server.log().splitlines() if line.startswith("kt keys: ")]
        self.assertEqual(again[-1], "kt keys: " + printed[0])
        # The secret halves are files of their own, never in the log.
        for name in ("signing.key", "vrf.key"):
            path = os.path.join(self.server.data, "kt", name)
            self.assertEqual(os.stat(path).st_mode & 0o777, 0o600)
            with open(path, "rb") as f:
                self.assertNotIn(f.read().hex(), self.server.log())

    def test_honest_path_across_a_restart_and_a_ghost_device_is_refused(self):
        alice = Client(self.root, "alice")
        bob = Client(self.root, "bob")
        alice.register("alice", self.server)
        bob.register("bob", self.server)
        # Entry 0, then one per registration, each with its version.
        self.assertEqual(kt_rows(self.server), (3, 2))
        self.assertEqual(alice.send("bob", "hello").returncode, 0)
        self.assertEqual([m["body"] for m in bob.messages()], ["hello"])

        # A restart (and a kill -9) keeps the log: the clients' heads stay consistent with it.
        self.server.stop()
        self.server.start()
        self.assertEqual(bob.send("alice", "after a restart").returncode, 0)
        self.assertEqual([m["body"] for m in alice.messages()], ["after a restart"])
        self.server.kill()
        self.server.start()
        self.assertEqual(alice.send("bob", "after kill -9").returncode, 0)
        self.assertEqual([m["body"] for m in bob.messages()], ["after kill -9"])

        # The operator slips a ghost device into bob's account, without logging it.
        self.server.stop()
        before = kt_rows(self.server)
        add_ghost_device(self.server, "bob")
        self.server.start()
        r = alice.send("bob", "for bob's eyes only")
        self.assertEqual(r.returncode, 1, (r.stdout, r.stderr))
        alerts = [e for e in parse_lines(r.stdout) if e.get("type") == "security_alert"]
        self.assertEqual(len(alerts), 1, r.stdout)
        self.assertEqual(alerts[0]["kind"], "unlogged_key")
        self.assertEqual(alerts[0]["user"], "bob")
        self.assertIn("device 7", alerts[0]["detail"])
        error = json.loads(r.stderr.strip().splitlines()[-1])["error"]
        self.assertEqual(error["code"], "security_alert")
        # Nothing was sent: not to the ghost, and not to bob's real device either.
        self.assertEqual(bob.messages(timeout_s=3), [])
        self.assertEqual(kt_rows(self.server), before)
        # Without --json: a banner.
        r = alice.run("send", "bob", "again", "--timeout", "30", json_output=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("SECURITY ALERT (unlogged_key) for bob", r.stderr)
        self.assertEqual(bob.messages(timeout_s=3), [])

    def test_a_substituted_identity_key_is_refused(self):
        """Attack 2: the operator hands bob another identity key for alice (in the accounts
        table, not logged), as it would to read what bob sends her. bob's first message to alice
        needs her bundle: the key is not the logged one, so nothing is encrypted to it; the
        safety number bob is shown comes from the log too."""
        alice = Client(self.root, "alice")
        bob = Client(self.root, "bob")
        alice.register("alice", self.server)
        bob.register("bob", self.server)
        before = bob.safety_number("alice")
        self.server.stop()
        db = sqlite3.connect(os.path.join(self.server.data, "sotto.db"))
        try:
            db.execute("UPDATE accounts SET identity_key = ? WHERE username = 'alice'",
                       (b"\x05" + b"\x42" * 32,))
            db.commit()
        finally:
            db.close()
        self.server.start()
        r = bob.send("alice", "for alice only")
        self.assertEqual(r.returncode, 1, (r.stdout, r.stderr))
        alerts = [e for e in parse_lines(r.stdout) if e.get("type") == "security_alert"]
        self.assertEqual(len(alerts), 1, r.stdout)
        self.assertEqual(alerts[0]["kind"], "unlogged_key")
        self.assertEqual(alerts[0]["user"], "alice")
        self.assertIn("identity key", alerts[0]["detail"])
        self.assertEqual(alice.messages(timeout_s=3), [])
        # The safety number bob is shown is still the one of alice's logged key.
        after = bob.safety_number("alice")
        self.assertEqual(after["identityKey"], before["identityKey"])
        self.assertEqual(after["digits"], before["digits"])

    def test_a_message_from_a_device_outside_the_log_is_not_read(self):
        """A ghost that writes first: the operator slips a device into bob's account (not logged)
        and hands alice a message that starts a session from it. alice reads nothing from it and
        makes no session with it, so nothing she sends reaches it."""
        alice = Client(self.root, "alice")
        bob = Client(self.root, "bob")
        mallory = Client(self.root, "mallory")
        for c, name in ((alice, "alice"), (bob, "bob"), (mallory, "mallory")):
            c.register(name, self.server)
        self.assertEqual(alice.send("bob", "hello").returncode, 0)
        self.assertEqual([m["body"] for m in bob.messages()], ["hello"])
        # mallory's message to alice, relabelled by the operator as coming from bob's device 7.
        self.assertEqual(mallory.send("alice", "it is me, bob, on my new phone").returncode, 0)
        self.server.stop()
        add_ghost_device(self.server, "bob")
        db = sqlite3.connect(os.path.join(self.server.data, "sotto.db"))
        try:
            changed = db.execute(
                "UPDATE messages SET source = 'bob', source_device = 7 WHERE source = 'mallory'"
            ).rowcount
            db.commit()
        finally:
            db.close()
        self.assertGreaterEqual(changed, 1)
        self.server.start()
        events = alice.receive(timeout_s=5)
        self.assertEqual([e for e in events if e.get("type") == "message"], [], events)
        alerts = [e for e in events if e.get("type") == "security_alert"]
        self.assertEqual(len(alerts), 1, events)
        self.assertEqual(alerts[0]["kind"], "unlogged_key")
        self.assertEqual(alerts[0]["user"], "bob")
        self.assertIn("device 7", alerts[0]["detail"])
        self.assertIn("was not read", alerts[0]["detail"])
        # Sending to bob now needs a session with device 7, whose bundle is not in the log.
        r = alice.send("bob", "for bob only")
        self.assertEqual(r.returncode, 1, (r.stdout, r.stderr))
        self.assertIn("unlogged_key", r.stdout)

    def link(self, existing, new_name):
        """Links a new device to `existing`'s account, through `existing` (add-device)."""
        new = Client(self.root, new_name, env=existing.env)
        p = new.popen("link", "--server", self.server.address, "--timeout", "60",
                      stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            reader = LineReader(p.stdout)
            code = reader.wait_json(lambda o: "code" in o)["code"]
            existing.ok("add-device", code)
            reader.wait_json(lambda o: "device" in o, timeout=30)
            self.assertEqual(p.wait(timeout=30), 0, p.stderr.read())
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
            p.stdout.close()
            p.stderr.close()
        return new

    def test_a_ghost_device_logged_honestly_is_reported_by_the_account_itself(self):
        alice = Client(self.root, "alice")
        bob = Client(self.root, "bob")
        alice.register("alice", self.server)
        bob.register("bob", self.server)
        # bob's first check is his baseline; a device he links himself is his, not unknown.
        self.assertEqual([e for e in bob.receive(timeout_s=2) if e.get("type") == "security_alert"],
                         [])
        laptop = self.link(bob, "bob-laptop")
        for device in (bob, laptop):
            alerts = [e for e in device.receive(timeout_s=2) if e.get("type") == "security_alert"]
            self.assertEqual(alerts, [])

        # The operator adds a device to bob's account in the open: in the accounts tables and in
        # the log, through the server's own append path.
        self.server.stop()
        out = self.server.operator("kt-test-ghost-device", "bob")
        ghost = int(out.split()[-1])
        self.server.start()
        for device in (bob, laptop):
            alerts = [e for e in device.receive(timeout_s=5) if e.get("type") == "security_alert"]
            self.assertEqual(len(alerts), 1, alerts)
            self.assertEqual(alerts[0]["kind"], "unknown_device")
            self.assertEqual(alerts[0]["user"], "bob")
            self.assertIn("device %d " % ghost, alerts[0]["detail"])
            self.assertIn("log entry", alerts[0]["detail"])
            # Reported once, not at every connect.
            again = [e for e in device.receive(timeout_s=2) if e.get("type") == "security_alert"]
            self.assertEqual(again, [])
        # Without --json: a banner line.
        self.server.stop()
        self.server.operator("kt-test-ghost-device", "bob")
        self.server.start()
        r = bob.run("receive", "--timeout", "5", json_output=False)
        self.assertIn("SECURITY ALERT (unknown_device) for bob", r.stdout + r.stderr)

    def show(self, data):
        """Restarts the server (same port, TLS key and log keys) on one copy of its data."""
        self.server.stop()
        self.server.data = data
        self.server.start()

    def test_a_forked_log_is_caught_as_soon_as_the_two_sides_talk(self):
        """Attack 3: the operator shows alice one log and bob another, and relays their
        messages; each message carries its sender's tree head, so the first one across the fork
        raises split_view on its recipient."""
        alice = Client(self.root, "alice")
        bob = Client(self.root, "bob")
        alice.register("alice", self.server)
        bob.register("bob", self.server)
        self.assertEqual(alice.send("bob", "hello").returncode, 0)
        self.assertEqual([m["body"] for m in bob.messages()], ["hello"])
        self.assertEqual(bob.send("alice", "hi").returncode, 0)
        self.assertEqual([m["body"] for m in alice.messages()], ["hi"])
        # The honest path: alice's log grows (she looks up frank), bob gets her newer head with
        # her next message, and the server proves it extends his.
        Client(self.root, "frank").register("frank", self.server)
        self.assertEqual(alice.send("frank", "hi frank").returncode, 0)
        self.assertEqual(alice.send("bob", "news").returncode, 0)
        self.assertEqual(bob.send("alice", "thanks").returncode, 0)
        for device, body in ((bob, "news"), (alice, "thanks")):
            events = device.receive(timeout_s=5)
            self.assertIn(body, [e.get("body") for e in events], events)
            self.assertEqual([e for e in events if e.get("type") == "security_alert"], [])

        # The fork: two copies of the server's data, each growing its own way.
        self.server.stop()
        view_a = self.server.data
        view_b = view_a + "-for-bob"
        shutil.copytree(view_a, view_b, symlinks=True)
        # bob's view: dave joins, bob looks him up and writes to alice.
        self.show(view_b)
        Client(self.root, "dave").register("dave", self.server)
        self.assertEqual(bob.send("dave", "hi dave").returncode, 0)
        self.assertEqual(bob.send("alice", "across the fork").returncode, 0)
        # alice's view: carol and erin join instead, and alice looks them up.
        self.show(view_a)
        for name in ("carol", "erin"):
            Client(self.root, name).register(name, self.server)
            self.assertEqual(alice.send(name, "hi " + name).returncode, 0)

        # bob's message reaches alice, who is shown her own view: the server's head at the size
        # of bob's is another one.
        self.server.stop()
        self.assertGreaterEqual(relay_envelopes(view_b, view_a, "alice"), 1)
        self.server.start()
        events = alice.receive(timeout_s=5)
        self.assertIn("across the fork", [e.get("body") for e in events], events)
        alerts = [e for e in events if e.get("type") == "security_alert"]
        self.assertEqual(len(alerts), 1, events)
        self.assertEqual(alerts[0]["kind"], "split_view")
        self.assertEqual(alerts[0]["user"], "bob")
        self.assertIn("different users different logs", alerts[0]["detail"])

        # alice answers; bob, shown his view, gets her head, of a size his view never signed.
        self.assertEqual(alice.send("bob", "back across").returncode, 0)
        self.server.stop()
        self.assertGreaterEqual(relay_envelopes(view_a, view_b, "bob"), 1)  # and receipts
        self.show(view_b)
        r = bob.run("receive", "--timeout", "5", json_output=False)
        self.assertIn("back across", r.stdout)
        self.assertIn("SECURITY ALERT (split_view) for alice", r.stdout + r.stderr)

    def test_three_devices_link_from_any_of_them_and_all_report_a_ghost(self):
        """Devices of one account tell each other of the links they make (docs/transparency.md,
        "Monitoring"): a device linked from a device that is not the primary raises nothing on
        any device, while a device the operator adds on its own raises unknown_device on each."""
        alice = Client(self.root, "alice")
        alice.register("alice", self.server)
        self.assertEqual(alerts(alice.receive(timeout_s=2)), [])  # the baseline
        laptop = self.link(alice, "alice-laptop")
        for device in (alice, laptop):
            self.assertEqual(alerts(device.receive(timeout_s=2)), [])
        # The laptop links the third device: the primary hears of it from the laptop alone.
        tablet = self.link(laptop, "alice-tablet")
        for device in (alice, laptop, tablet):
            self.assertEqual(alerts(device.receive(timeout_s=2)), [], device.data)

        self.server.stop()
        ghost = int(self.server.operator("kt-test-ghost-device", "alice").split()[-1])
        self.server.start()
        for device in (alice, laptop, tablet):
            found = alerts(device.receive(timeout_s=5))
            self.assertEqual(len(found), 1, (device.data, found))
            self.assertEqual(found[0]["kind"], "unknown_device")
            self.assertIn("device %d " % ghost, found[0]["detail"])
            self.assertNotIn("expected", found[0]["detail"])
            self.assertEqual(alerts(device.receive(timeout_s=2)), [], device.data)

    def test_a_new_device_pins_the_log_its_account_carries_in_the_link(self):
        """The link's provisioning message carries the log's keys the account pinned: a new
        device whose server then signs with another key reports log_inconsistent at its first
        check, instead of pinning the server's key on first use."""
        alice = Client(self.root, "alice")
        alice.register("alice", self.server)
        self.assertEqual(alerts(alice.receive(timeout_s=2)), [])  # pins the log's keys
        # The operator's server now signs its tree heads with another key.
        self.server.stop()
        key = os.path.join(self.server.data, "kt", "signing.key")
        with open(key, "wb") as f:
            f.write(os.urandom(32))
        self.server.start()

        laptop = Client(self.root, "alice-laptop", env=alice.env)
        p = laptop.popen("link", "--server", self.server.address, "--timeout", "60",
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        adding = None
        try:
            reader = LineReader(p.stdout)
            code = reader.wait_json(lambda o: "code" in o)["code"]
            # add-device waits for the new device's history request, which the new device
            # cannot send (it refuses the server's log): it is stopped once the link is done.
            adding = alice.popen("add-device", code, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE)
            reader.wait_json(lambda o: "device" in o, timeout=30)
            self.assertEqual(p.wait(timeout=30), 0, p.stderr.read())
        finally:
            for proc in (p, adding):
                if proc is None:
                    continue
                if proc.poll() is None:
                    proc.kill()
                proc.wait()
                proc.stdout.close()
                proc.stderr.close()
        found = alerts(laptop.receive(timeout_s=5))
        self.assertIn("log_inconsistent", [a["kind"] for a in found], found)



def alerts(events):
    return [e for e in events if e.get("type") == "security_alert"]


if __name__ == "__main__":
    sys.exit(test_e2e.main())  # --bin BUILD_DIR [unittest options]
