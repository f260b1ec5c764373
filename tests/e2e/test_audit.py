#!/usr/bin/env python3
"""Key transparency auditing over real processes (docs/transparency.md, "Auditing"): a real
sotto-server configured with an auditor, real sotto clients, and sotto-audit, which follows the
log, co-signs its head, and refuses (exit 3, nothing co-signed, its state unchanged) a log the
operator rewrote behind its back: the log's rows from entry 1 on deleted from the server's SQLite
database, so that the restarted server logs every account again in another history. A client
that requires the auditor's co-signature refuses lookups whose answer has no fresh, consistent
one. The helpers come from test_e2e.py.

    python3 tests/e2e/test_audit.py --bin BUILD_DIR [unittest options]
"""

import json
import os
import re
import sqlite3
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_e2e  # noqa: E402
from test_e2e import LineReader, parse_lines  # noqa: E402


def audit_bin():
    return os.path.join(test_e2e.BIN_DIR, "apps", "sotto-audit", "sotto-audit")


def cosignatures(server):
    db = sqlite3.connect(os.path.join(server.data, "sotto.db"))
    try:
        return db.execute("SELECT hex(auditor_key), tree_head, time_ms, signature "
                          "FROM kt_cosignatures").fetchall()
    finally:
        db.close()


def kt_size(server):
    db = sqlite3.connect(os.path.join(server.data, "sotto.db"))
    try:
        return db.execute("SELECT count(*) FROM kt_entries").fetchone()[0]
    finally:
        db.close()


def state_files(state):
    out = {}
    for name in sorted(os.listdir(state)):
        if name == "lock":
            continue
        with open(os.path.join(state, name), "rb") as f:
            out[name] = f.read()
    return out


class AuditTest(unittest.TestCase):
    # The harness's helpers, without its tests.
    client = test_e2e.E2ETest.client
    pair = test_e2e.E2ETest.pair
    link = test_e2e.E2ETest.link
    tearDown = test_e2e.E2ETest.tearDown
    _outcome_ok = test_e2e.E2ETest._outcome_ok

    def setUp(self):
        test_e2e.E2ETest.setUp(self)
        self.state = os.path.join(self.root, "auditor")
        self.auditor_key = self.audit("key").stdout.strip()
        self.assertRegex(self.auditor_key, r"^[0-9a-f]{64}$")
        self.assertEqual(os.stat(os.path.join(self.state, "auditor.key")).st_mode & 0o777, 0o600)
        # The operator configures the auditor.
        self.config = os.path.join(self.root, "server.toml")
        with open(self.config, "w") as f:
            f.write('kt_auditors = ["%s"]\n' % self.auditor_key)
            # More accounts from this one address than the default allows.
            f.write('registrations_per_minute = 600\n')
        self.server.stop()
        self.start_server()

    def start_server(self):
        self.server.start(args=["--config", self.config, "--data", self.server.data,
                                "--listen", self.server.address,
                                "--http", "127.0.0.1:%d" % self.server.http_port])

    def audit(self, *args):
        return subprocess.run([audit_bin(), "--state", self.state] + list(args),
                              capture_output=True, text=True, timeout=120)

    def audit_once(self):
        return self.audit("run", "--server", self.server.address, "--pin",
                          self.server.fingerprint, "--once")

    def test_arguments(self):
        r = subprocess.run([audit_bin(), "--help"], capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 0)
        self.assertIn("co-signs", r.stdout)
        # The exit statuses are in the help's footer.
        self.assertIn("Exit status: 0", r.stdout)
        self.assertIn("3 THE LOG MISBEHAVED", r.stdout)
        r = subprocess.run([audit_bin(), "--state", self.state, "run", "--help"],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 0)
        self.assertRegex(r.stdout, r"--interval[^\n]*=300")
        # Every command line it refuses exits 1, like sotto's, with one line naming the problem.
        r = self.audit("run", "--server", self.server.address, "--bogus")
        self.assertEqual(r.returncode, 1)
        self.assertIn("--bogus", r.stderr)
        self.assertIn("sotto-audit --help", r.stderr)
        r = self.audit()
        self.assertEqual(r.returncode, 1)
        r = subprocess.run([audit_bin(), "key"], capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 1)
        self.assertIn("--state", r.stderr)
        r = self.audit("run", "--server", self.server.address, "--once", "--interval", "5")
        self.assertEqual(r.returncode, 1)
        self.assertIn("excludes", r.stderr)
        r = self.audit("run", "--server", self.server.address, "--interval", "0")
        self.assertEqual(r.returncode, 1)
        # Arguments that are malformed are refused before anything is connected to or written:
        # a state directory that did not exist is not even made.
        fresh = os.path.join(self.root, "fresh-state")
        for args, says in ((["--server", "no-port"], "HOST:PORT"),
                           (["--server", self.server.address, "--log-keys", "abc"],
                            "SIGNING:VRF"),
                           (["--server", self.server.address, "--pin", "xyz"], "64 hex digits"),
                           (["--server", self.server.address, "--pin",
                             self.server.fingerprint[:-2]], "64 hex digits")):
            r = subprocess.run([audit_bin(), "--state", fresh, "run"] + args + ["--once"],
                               capture_output=True, text=True, timeout=60)
            self.assertEqual(r.returncode, 1, (args, r.stderr))
            self.assertIn(says, r.stderr)
            self.assertFalse(os.path.exists(fresh), args)
        # A --state that is a file.
        afile = os.path.join(self.root, "a-file")
        open(afile, "w").close()
        r = subprocess.run([audit_bin(), "--state", afile, "key"], capture_output=True,
                           text=True, timeout=30)
        self.assertEqual(r.returncode, 1)
        self.assertIn("--state %s is a file, not a directory" % afile, r.stderr)

        # A wrong server pin: nothing is fetched or pinned.
        empty = state_files(self.state)
        self.assertEqual(list(empty), ["auditor.key"])
        r = self.audit("run", "--server", self.server.address, "--pin", "00" * 32, "--once")
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertEqual(state_files(self.state), empty)
        # Log keys of another log, or this log's with the halves swapped: nothing is co-signed,
        # and nothing is pinned either (the next run with the right keys is not held to them).
        printed = self.server.operator("kt-keys")
        self.assertTrue(printed.startswith("kt keys: "), printed)
        signing, vrf = printed.split(": ", 1)[1].strip().split(":")
        base = ["run", "--server", self.server.address, "--pin", self.server.fingerprint, "--once"]
        for wrong in ("11" * 32 + ":" + "22" * 32, vrf + ":" + signing):
            r = self.audit(*base, "--log-keys", wrong)
            self.assertEqual(r.returncode, 1, r.stderr)
            self.assertIn("not signed by the log key in use", r.stderr)
            self.assertEqual(state_files(self.state), empty)
        self.assertEqual(cosignatures(self.server), [])
        # The log's real keys: the whole line the operator's command prints, pasted as it is,
        # and the server's fingerprint in capitals with colons (as some tools show it).
        fp = self.server.fingerprint.lower()
        shouted = ":".join(fp[i:i + 2] for i in range(0, 64, 2)).upper()
        r = self.audit("run", "--server", self.server.address, "--pin", shouted, "--once",
                       "--log-keys", "  " + printed.strip() + " ")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(len(cosignatures(self.server)), 1)
        pinned = state_files(self.state)
        self.assertEqual(pinned["server.pin"].decode(), fp)
        self.assertEqual(pinned["log.keys"].decode(), (signing + ":" + vrf).lower())
        # Pins are compared in that one form: the lowercase fingerprint and the keys alone match.
        r = self.audit(*base[:4], fp, "--once", "--log-keys", signing.upper() + ":" + vrf)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(len(cosignatures(self.server)), 1)  # the newest per auditor
        # Now pinned, swapped keys are refused as not the pinned ones.
        r = self.audit(*base, "--log-keys", vrf + ":" + signing)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("--log-keys differ from the log keys pinned", r.stderr)

    def test_cosigns_an_honest_log_and_catches_a_rewritten_one(self):
        alice, bob = self.pair()
        self.link(bob, "bob2")
        r = self.audit_once()
        self.assertEqual(r.returncode, 0, r.stderr)
        size = kt_size(self.server)
        self.assertIn("co-signed tree head: size %d" % size, r.stdout)
        rows = cosignatures(self.server)
        self.assertEqual(len(rows), 1)
        self.assertEqual(rows[0][0].lower(), self.auditor_key)
        # A second run fetches only what is new (here: nothing) and co-signs again.
        r = self.audit_once()
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("(0 new entries checked)", r.stdout)

        # A client that requires the auditor: a fresh co-signature, consistent with the head it is
        # shown (carol's registration is one entry after it), lets the lookup through.
        carol = self.client("carol")
        carol.register("carol", self.server)
        setting = json.loads(carol.ok("kt", "require-auditor", self.auditor_key,
                                      "--max-age", "1h").stdout)
        self.assertEqual(setting, {"auditor": self.auditor_key, "maxAgeSeconds": 3600})
        self.assertEqual(carol.send("alice", "hi alice").returncode, 0)
        self.assertEqual([m["body"] for m in alice.messages()], ["hi alice"])
        # A co-signature older than carol accepts (a second, and it was made more than two
        # seconds ago), or another auditor's requirement: the lookup is refused and nothing is
        # encrypted. An age of 0 is no setting at all.
        carol.fails("kt", "require-auditor", self.auditor_key, "--max-age", "0",
                    code="invalid_argument")
        carol.fails("kt", "require-auditor", self.auditor_key, "--max-age", "off",
                    code="invalid_argument")
        time.sleep(2)  # ages the co-signature past 1 s: it only grows older
        carol.ok("kt", "require-auditor", self.auditor_key, "--max-age", "1s")
        self.assert_refused(carol, "bob", "old")
        carol.ok("kt", "require-auditor", "ab" * 32, "--max-age", "1h")
        self.assert_refused(carol, "bob", "no co-signature")
        self.assertEqual(json.loads(carol.ok("kt", "require-auditor", "--off").stdout),
                         {"auditor": None})
        carol.ok("kt", "require-auditor", self.auditor_key, "--max-age", "1h")
        bad = carol.fails("kt", "require-auditor", "not-hex", "--max-age", "1h")
        self.assertEqual(bad["code"], "invalid_argument")

        # The operator rewrites the log: every entry from 1 on deleted, the server restarted, so
        # that it logs all accounts again, in one entry: another history, shorter than the one
        # the auditor checked.
        self.server.stop()
        checked = state_files(self.state)
        before = cosignatures(self.server)
        db = sqlite3.connect(os.path.join(self.server.data, "sotto.db"))
        db.execute("DELETE FROM kt_versions WHERE entry >= 1")
        db.execute("DELETE FROM kt_entries WHERE idx >= 1")
        db.commit()
        db.close()
        self.start_server()
        self.assertLess(kt_size(self.server), size)
        r = self.audit_once()
        self.assertEqual(r.returncode, 3, (r.stdout, r.stderr))
        if os.environ.get("SOTTO_E2E_VERBOSE"):
            sys.stderr.write(r.stderr)
        self.assertIn("THE LOG MISBEHAVED", r.stderr)
        self.assertIn("the log shrank", r.stderr)
        self.assertIn("replayed %d entries" % size, r.stderr)
        self.assertEqual(state_files(self.state), checked)
        self.assertEqual(cosignatures(self.server), before)

        # The log grows past what the auditor checked: the new history's entries do not extend
        # the replay (or its head is not the replay's), and still nothing is co-signed.
        for name in ("dave", "erin", "fred", "gina"):
            self.client(name).register(name, self.server)
        self.assertGreater(kt_size(self.server), size)
        r = self.audit_once()
        self.assertEqual(r.returncode, 3, (r.stdout, r.stderr))
        if os.environ.get("SOTTO_E2E_VERBOSE"):
            sys.stderr.write(r.stderr)
        self.assertRegex(r.stderr, r"entry %d does not extend|of size \d+ is not the one" % size)
        self.assertEqual(state_files(self.state), checked)
        self.assertEqual(cosignatures(self.server), before)

        # The server no longer hands out the old co-signature (it is not of this log): carol,
        # who requires a fresh one, refuses, and so does a client that never saw the old log.
        self.assert_refused(carol, "dave", "no co-signature")
        newcomer = self.client("jane")
        newcomer.register("jane", self.server)
        newcomer.ok("kt", "require-auditor", self.auditor_key, "--max-age", "1h")
        self.assert_refused(newcomer, "erin", "no co-signature")
        # Without the requirement the newcomer accepts the (rewritten, but consistent for it) log.
        newcomer.ok("kt", "require-auditor", "--off")
        self.assertEqual(newcomer.send("erin", "hello").returncode, 0)

    def test_follow_mode_cosigns_each_round_and_stops_on_misbehaviour(self):
        alice = self.client("alice")
        alice.register("alice", self.server)
        p = subprocess.Popen([audit_bin(), "--state", self.state, "run", "--server",
                              self.server.address, "--interval", "1"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.procs.append(p)
        out = LineReader(p.stdout)
        # Following, every line starts with the UTC time.
        stamp = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ "
        first = out.next(timeout=60)
        self.assertRegex(first, stamp + r"pinned the server key [0-9a-f]{64} \(trust on first use\)$")

        def next_cosigned():
            while True:
                line = out.next(timeout=60)
                self.assertRegex(line, stamp)
                m = re.match(stamp + r"co-signed tree head: size (\d+),", line)
                if m:
                    return int(m.group(1))

        # Trust on first use of the server's key and the log's keys, then a round a second.
        self.assertEqual(next_cosigned(), 2)
        with open(os.path.join(self.state, "server.pin")) as f:
            self.assertEqual(f.read().strip(), self.server.fingerprint)
        # Its key can be read beside it; a second auditor on the same state is refused.
        self.assertEqual(self.audit("key").stdout.strip(), self.auditor_key)
        r = self.audit_once()
        self.assertEqual(r.returncode, 1)
        self.assertIn("another sotto-audit uses", r.stderr)
        self.client("bob").register("bob", self.server)
        while next_cosigned() != 3:
            pass
        # The log is cut back behind its back: the next round that reaches the server stops the
        # auditor (rounds while the server is down are retried).
        self.server.stop()
        db = sqlite3.connect(os.path.join(self.server.data, "sotto.db"))
        db.execute("DELETE FROM kt_versions WHERE entry >= 2")
        db.execute("DELETE FROM kt_entries WHERE idx >= 2")
        db.commit()
        db.close()
        self.start_server()
        self.assertEqual(p.wait(timeout=60), 3)
        self.assertRegex(p.stderr.read(),
                         stamp[1:] + r"sotto-audit: THE LOG MISBEHAVED, nothing co-signed: the log "
                         r"shrank")

    def assert_refused(self, client, to, detail):
        r = client.send(to, "must not be sent")
        self.assertEqual(r.returncode, 1, (r.stdout, r.stderr))
        # (Its own account's monitoring on connecting may report the same for the client's user.)
        alerts = [e for e in parse_lines(r.stdout)
                  if e.get("type") == "security_alert" and e.get("user") == to]
        self.assertEqual(len(alerts), 1, r.stdout)
        self.assertEqual(alerts[0]["kind"], "unlogged_key")
        self.assertEqual(alerts[0]["user"], to)
        self.assertIn("auditor", alerts[0]["detail"])
        self.assertIn(detail, alerts[0]["detail"])
        error = json.loads(r.stderr.strip().splitlines()[-1])["error"]
        self.assertEqual(error["code"], "security_alert")


if __name__ == "__main__":
    sys.exit(test_e2e.main())  # --bin BUILD_DIR [unittest options]
