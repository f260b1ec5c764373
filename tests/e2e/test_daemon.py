#!/usr/bin/env python3
"""End-to-end tests of `sotto daemon` (docs/daemon.md): a real `sotto-server`, real `sotto`
processes, and bots speaking JSON-RPC over the daemon's stdin/stdout or its Unix socket.
Python 3 standard library only; the server and client helpers come from test_e2e.py.

    python3 tests/e2e/test_daemon.py --bin BUILD_DIR [unittest options, e.g. -v or Test.test_name]
"""

import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_e2e  # noqa: E402  (Server, Client, LineReader; BIN_DIR is set in main())
from test_e2e import Client, Server  # noqa: E402

SOURCE_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MIB = 1 << 20


class Rpc:
    """One JSON-RPC peer of a daemon: answers are kept by id, notifications in a queue."""

    def __init__(self, rfile, wfile, on_close=None):
        self.wfile = wfile
        self.on_close = on_close
        self.replies = []  # every answer, in arrival order
        self.notifications = queue.Queue()
        self.cv = threading.Condition()
        self.eof = False
        self.next_id = 1
        self.thread = threading.Thread(target=self._run, args=(rfile,), daemon=True)
        self.thread.start()

    def _run(self, rfile):
        try:
            for line in rfile:
                line = line.strip()
                if not line:
                    continue
                obj = json.loads(line)
                if isinstance(obj, dict) and "method" in obj and "id" not in obj:
                    self.notifications.put(obj)
                else:
                    with self.cv:
                        self.replies.append(obj)
                        self.cv.notify_all()
        except (OSError, ValueError):
            pass
        with self.cv:
            self.eof = True
            self.cv.notify_all()

    def write(self, text):
        self.wfile.write(text)
        self.wfile.flush()

    def request(self, method, params=None, id=None):
        if id is None:
            id = "r%d" % self.next_id
            self.next_id += 1
        obj = {"jsonrpc": "2.0", "id": id, "method": method}
        if params is not None:
            obj["params"] = params
        self.write(json.dumps(obj) + "\n")
        return id

    def response(self, id, timeout=30):
        deadline = time.monotonic() + timeout
        with self.cv:
            while True:
                for r in self.replies:
                    if isinstance(r, dict) and r.get("id") == id:
                        return r
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("no answer to %r" % (id,))
                if self.eof:
                    raise EOFError("the daemon closed the connection before answering %r" % (id,))
                self.cv.wait(remaining)

    def wait_for(self, predicate, timeout=30):
        """Waits until predicate(replies) holds."""
        deadline = time.monotonic() + timeout
        with self.cv:
            while not predicate(self.replies):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("replies so far: %r" % (self.replies,))
                self.cv.wait(remaining)

    def call(self, method, params=None, timeout=30):
        return self.response(self.request(method, params), timeout)

    def result(self, method, params=None, timeout=30):
        r = self.call(method, params, timeout)
        if "result" not in r:
            raise AssertionError("%s failed: %r" % (method, r))
        return r["result"]

    def notification(self, predicate=lambda n: True, timeout=30):
        """The next `receive` notification whose params match (earlier ones are dropped)."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no matching notification in time")
            n = self.notifications.get(timeout=remaining)
            if n.get("method") == "receive" and predicate(n["params"]):
                return n["params"]

    def drain(self, seconds):
        """`receive` notifications arriving within `seconds`."""
        out = []
        deadline = time.monotonic() + seconds
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return out
            try:
                n = self.notifications.get(timeout=remaining)
            except queue.Empty:
                return out
            if n.get("method") == "receive":
                out.append(n["params"])

    def close(self):
        if self.on_close:
            self.on_close()


def is_message(p):
    return p.get("type") == "message"


class DaemonTest(unittest.TestCase):
    def setUp(self):
        self.root = tempfile.mkdtemp(prefix="sotto-daemon-")
        self.server = Server(self.root)
        self.server.start()
        self.procs = []
        self.logs = []
        self.sockets = []

    def tearDown(self):
        for s in self.sockets:
            s.close()
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()
            for stream in (p.stdin, p.stdout):
                if stream:
                    stream.close()
        self.server.stop()
        failed = not self._outcome_ok()
        for path in self.logs:
            with open(path, encoding="utf-8", errors="replace") as f:
                text = f.read()
            if failed and text:
                sys.stderr.write("\n--- %s\n%s" % (path, text))
        if failed:
            sys.stderr.write("\nkept %s for inspection\n" % self.root)
        else:
            shutil.rmtree(self.root, ignore_errors=True)

    def _outcome_ok(self):
        outcome = getattr(self, "_outcome", None)
        if outcome is None:
            return True
        errors = getattr(outcome, "errors", None)
        if errors is None:  # Python >= 3.11
            result = getattr(outcome, "result", None)
            if result is None:
                return True
            return not any(t is self for t, _ in result.errors + result.failures)
        return all(exc is None for _, exc in errors)

    # --- helpers -------------------------------------------------------------------------------

    def pair(self):
        alice, bob = Client(self.root, "alice"), Client(self.root, "bob")
        alice.register("alice", self.server)
        bob.register("bob", self.server)
        return alice, bob

    def sent(self, client, to, body):
        r = client.send(to, body)
        self.assertEqual(r.returncode, 0, r.stderr)
        return json.loads(r.stdout)

    def start_daemon(self, client, *args):
        """A daemon on a Unix socket; returns (process, socket path)."""
        path = os.path.join(self.root, "d%d.sock" % len(self.procs))
        log_path = os.path.join(self.root, "daemon%d.log" % len(self.procs))
        self.logs.append(log_path)
        with open(log_path, "ab") as log:
            p = client.popen("daemon", "--socket", path, *args, stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=log)
        self.procs.append(p)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if p.poll() is not None:
                self.fail("the daemon exited early (%d)" % p.returncode)
            if os.path.exists(path):
                try:
                    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                        s.connect(path)
                    return p, path
                except OSError:
                    pass
            time.sleep(0.05)
        self.fail("the daemon did not listen in time")

    def stdio_daemon(self, client, *args):
        log_path = os.path.join(self.root, "daemon%d.log" % len(self.procs))
        self.logs.append(log_path)
        with open(log_path, "ab") as log:
            p = client.popen("daemon", *args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=log)
        self.procs.append(p)
        return p, Rpc(p.stdout, p.stdin)

    def connect(self, path):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(path)
        self.sockets.append(s)
        f = s.makefile("rw", encoding="utf-8", newline="\n")

        def close():
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        return Rpc(f, f, on_close=close)

    def stop_daemon(self, p, sig=signal.SIGTERM):
        p.send_signal(sig)
        rc = p.wait(timeout=60)
        if sig == signal.SIGTERM:
            self.assertEqual(rc, 0)
        log = self.logs[self.procs.index(p)]
        with open(log, encoding="utf-8", errors="replace") as f:
            text = f.read()
        self.assertNotIn("Sanitizer", text)
        self.assertNotIn("runtime error", text)

    # --- tests ---------------------------------------------------------------------------------

    def test_events_while_nobody_listens_are_delivered_once_on_connect(self):
        alice, bob = self.pair()
        p, path = self.start_daemon(bob)
        first = self.connect(path)
        self.assertEqual(first.result("account")["username"], "bob")
        first.close()  # nobody is connected from here on
        bodies = ["while away 1", "while away 2", "while away 3"]
        for b in bodies:
            self.sent(alice, "bob", b)
        time.sleep(3)  # the daemon receives them live, with no peer to tell

        bot = self.connect(path)
        got = [bot.notification(is_message) for _ in bodies]
        self.assertEqual([m["body"] for m in got], bodies)
        cursors = [m["cursor"] for m in got]
        self.assertEqual(cursors, sorted(set(cursors)))
        self.assertTrue(all(c > 0 for c in cursors))
        self.assertTrue(all(m["account"] == "bob" and m["from"] == "alice" for m in got))
        # Live ones follow, once each.
        self.sent(alice, "bob", "live")
        live = bot.notification(is_message)
        self.assertEqual(live["body"], "live")
        self.assertGreater(live["cursor"], cursors[-1])
        self.assertEqual([m for m in bot.drain(1.5) if is_message(m)], [])
        bot.close()

        # They were acknowledged once written: the next peer gets nothing again.
        again = self.connect(path)
        self.assertEqual(again.result("account")["username"], "bob")
        self.assertEqual([m for m in again.drain(2) if is_message(m)], [])
        again.close()

        # A restart while events wait: the next subscriber gets them (after the restart, before
        # anything live).
        self.stop_daemon(p)
        self.sent(alice, "bob", "while stopped")
        p, path = self.start_daemon(bob)
        time.sleep(2)
        later = self.connect(path)
        m = later.notification(is_message)
        self.assertEqual(m["body"], "while stopped")
        self.assertGreater(m["cursor"], live["cursor"])
        self.assertEqual([m for m in later.drain(1.5) if is_message(m)], [])
        self.stop_daemon(p)

    def test_polling_bot_gets_each_event_at_least_once_across_restarts(self):
        alice, bob = self.pair()
        p, path = self.start_daemon(bob, "--receive-mode", "manual")
        bot = self.connect(path)

        def poll(after, want, timeout=30):
            """Events after `after` until `want` messages are seen (without acknowledging them)."""
            seen = []
            deadline = time.monotonic() + timeout
            while len([e for e in seen if is_message(e)]) < want:
                self.assertLess(time.monotonic(), deadline, seen)
                r = bot.result("receive", {"after": after, "timeout": 5}, timeout=20)
                seen = r["events"]
            return [e for e in seen if is_message(e)]

        self.sent(alice, "bob", "one")
        self.sent(alice, "bob", "two")
        got = poll(0, 2)
        self.assertEqual([e["body"] for e in got], ["one", "two"])
        c1, c2 = got[0]["cursor"], got[1]["cursor"]
        self.assertLess(c1, c2)
        # Nothing pushed: this connection is not subscribed.
        self.assertEqual(bot.drain(0.5), [])

        # The bot "crashes" before acknowledging anything; the daemon is killed too.
        bot.close()
        self.stop_daemon(p, signal.SIGKILL)
        p, path = self.start_daemon(bob, "--receive-mode", "manual")
        bot = self.connect(path)
        got = poll(0, 2)
        self.assertEqual([(e["body"], e["cursor"]) for e in got], [("one", c1), ("two", c2)])

        # Acknowledging the first one: only the second is left.
        r = bot.result("receive", {"after": c1})
        self.assertEqual([(e["body"], e["cursor"]) for e in r["events"] if is_message(e)],
                         [("two", c2)])

        # A long poll is answered when a message arrives, not at its timeout.
        holder = {}

        def long_poll():
            start = time.monotonic()
            holder["result"] = bot.result("receive", {"after": c2, "timeout": 60}, timeout=90)
            holder["elapsed"] = time.monotonic() - start
        t = threading.Thread(target=long_poll)
        t.start()
        time.sleep(1)
        # Other requests are answered while the poll waits.
        self.assertEqual(bot.result("account", timeout=5)["username"], "bob")
        self.sent(alice, "bob", "three")
        t.join(timeout=90)
        three = [e for e in holder["result"]["events"] if is_message(e)]
        self.assertEqual([e["body"] for e in three], ["three"])
        self.assertLess(holder["elapsed"], 30)
        c3 = three[0]["cursor"]
        self.assertGreater(c3, c2)

        # Restart (SIGTERM this time): what was acknowledged stays acknowledged, the rest comes back.
        bot.close()
        self.stop_daemon(p)
        p, path = self.start_daemon(bob, "--receive-mode", "manual")
        bot = self.connect(path)
        r = bot.result("receive", {"after": 0})
        self.assertEqual([(e["body"], e["cursor"]) for e in r["events"] if is_message(e)],
                         [("three", c3)])
        r = bot.result("receive", {"after": c3, "timeout": 1})
        self.assertEqual(r["events"], [])
        # Bad params are refused, and nothing is acknowledged by them.
        for params in ({"after": -1}, {"limit": 0}, {"limit": 1001}, {"timeout": "soon"}):
            self.assertEqual(bot.call("receive", params)["error"]["code"], -32602, params)
        # subscribeReceive switches to pushing: nothing is left, and a new message comes live.
        self.assertEqual(bot.result("subscribeReceive"), 0)
        self.sent(alice, "bob", "four")
        n = bot.notification(is_message)
        self.assertEqual(n["body"], "four")
        self.assertGreater(n["cursor"], c3)
        self.stop_daemon(p)

    def assert_quick_requests_answered(self, bot):
        """account, listContacts, history and version each answer within 2 s; their ids."""
        quick = []
        for method, params in (("account", None), ("listContacts", None),
                               ("history", {"user": "alice"}), ("version", None)):
            t0 = time.monotonic()
            r = bot.call(method, params, timeout=10)
            self.assertIn("result", r, (method, r))
            self.assertLess(time.monotonic() - t0, 2.0, method)
            quick.append(r["id"])
        return quick

    def test_blocked_send_does_not_stall_other_requests(self):
        alice, bob = self.pair()
        self.sent(bob, "alice", "hello first")  # a contact and a history
        p, path = self.start_daemon(bob, "--send-timeout", "8")
        bot = self.connect(path)
        self.assertEqual(bot.result("account")["username"], "bob")

        # A frozen server: the daemon's connection stays open and nothing answers, so a send
        # blocks (until the server thaws).
        self.server.proc.send_signal(signal.SIGSTOP)
        try:
            send_id = bot.request("send", {"recipient": "alice", "message": "while frozen"})
            # More requests that wait for the server than there are workers: they take at most 6.
            waiting = [bot.request("listDevices") for _ in range(10)]
            time.sleep(0.3)
            quick = self.assert_quick_requests_answered(bot)
            ids = [x.get("id") for x in bot.replies]
            self.assertNotIn(send_id, ids)  # still blocked
        finally:
            self.server.proc.send_signal(signal.SIGCONT)
        r = bot.response(send_id, timeout=60)
        self.assertEqual(r["result"]["devices"], 1, r)
        ids = [x.get("id") for x in bot.replies]
        self.assertGreater(ids.index(send_id), max(ids.index(q) for q in quick), ids)
        for id in waiting:
            self.assertIn("result", bot.response(id, timeout=60))

        # A stopped server: the send fails within --send-timeout (not the default 30 s), and
        # the rest is answered meanwhile.
        self.server.stop()
        bot.notification(lambda n: n.get("type") == "connection" and n["state"] == "disconnected")
        start = time.monotonic()
        send_id = bot.request("send", {"recipient": "alice", "message": "into the void"})
        self.assert_quick_requests_answered(bot)
        r = bot.response(send_id, timeout=30)
        self.assertEqual(r["error"]["code"], -32000, r)
        self.assertIn(r["error"]["data"]["code"], ("timeout", "network"))
        self.assertLess(time.monotonic() - start, 20)

        self.server.start()
        bot.notification(lambda n: n.get("type") == "connection" and n["state"] == "connected",
                         timeout=60)
        # Sends a bot does not wait for run in the order they were asked for.
        bodies = ["in order %d" % i for i in range(12)]
        ids = [bot.request("send", {"recipient": "alice", "message": b}) for b in bodies]
        for id in ids:
            self.assertEqual(bot.response(id, timeout=60)["result"]["devices"], 1)
        self.stop_daemon(p)
        self.assertEqual([m["body"] for m in alice.messages()],
                         ["hello first", "while frozen"] + bodies)

    def test_block_unblock_and_list_blocked(self):
        # signal-cli's names: block and unblock take a recipient (a name or an array of them).
        alice, bob = self.pair()
        Client(self.root, "mallory").register("mallory", self.server)
        p, path = self.start_daemon(bob)
        bot = self.connect(path)
        self.assertEqual(bot.result("block", {"recipient": ["Mallory", "alice"]}), {})
        self.assertEqual(bot.result("listBlocked"), [{"username": "alice"}, {"username": "mallory"}])
        # Bad input: refused before anything changes.
        for params in ({}, {"recipient": "no spaces"}, {"recipient": ["carol", 7]},
                       {"recipient": []}):
            self.assertEqual(bot.call("unblock", params)["error"]["code"], -32602, params)
        r = bot.call("unblock", {"recipient": ["alice", "BAD NAME"]})
        self.assertIn('"BAD NAME"', r["error"]["message"])  # says which name
        # The account itself anywhere in the list: nothing changes.
        self.assertEqual(bot.call("unblock", {"recipient": ["alice", "bob"]})["error"]["code"],
                         -32602)
        self.assertEqual(len(bot.result("listBlocked")), 2)
        r = bot.call("block", {"recipient": "nobody"})
        self.assertEqual(r["error"]["data"]["code"], "not_found")
        self.assertIn("nobody", r["error"]["message"])
        # A send to a name without an account says so as `sotto chat` and `sotto send` do.
        r = bot.call("send", {"recipient": "nobody", "message": "hi"})
        self.assertEqual(r["error"]["data"]["code"], "not_found")
        self.assertEqual(r["error"]["message"], "no such user: nobody has no account")
        self.assertEqual(len(bot.result("listBlocked")), 2)
        # An unknown name stops there, and the error says what was changed before it.
        r = bot.call("unblock", {"recipient": ["mallory", "nobody"]})
        self.assertEqual(r["error"]["data"]["code"], "not_found")
        self.assertIn("unblocked before it: mallory", r["error"]["message"])
        self.assertEqual(bot.result("listBlocked"), [{"username": "alice"}])
        self.assertEqual(bot.result("block", {"recipient": "mallory"}), {})
        # Blocked: alice's send is accepted, and nothing of it reaches bob.
        self.assertEqual(alice.send("bob", "while blocked").returncode, 0)
        self.assertEqual(bot.result("unblock", {"recipient": "alice"}), {})
        self.assertEqual(bot.result("listBlocked"), [{"username": "mallory"}])
        self.assertEqual(alice.send("bob", "after the unblock").returncode, 0)
        got = bot.notification(lambda n: n.get("type") == "message", timeout=60)
        self.assertEqual((got["from"], got["body"]), ("alice", "after the unblock"))
        self.stop_daemon(p)

    def test_require_auditor(self):
        # Key transparency (docs/transparency.md): the setting is the CLI's `sotto kt
        # require-auditor`, kept in the account's store.
        alice, bob = self.pair()
        p, path = self.start_daemon(bob)
        bot = self.connect(path)
        self.assertEqual(bot.result("requireAuditor"), {"auditor": None})
        key = "ab" * 32
        self.assertEqual(bot.result("requireAuditor", {"auditor": key, "maxAgeSeconds": 60}),
                         {"auditor": key, "maxAgeSeconds": 60})
        for params in ({"auditor": key}, {"auditor": 7, "maxAgeSeconds": 1},
                       {"auditor": key, "maxAgeSeconds": -1}, {"maxAgeSeconds": 60},
                       {"auditor": key, "maxAgeSeconds": 365 * 86400 + 1}):
            self.assertEqual(bot.call("requireAuditor", params)["error"]["code"], -32602, params)
        self.assertEqual(bot.call("requireAuditor", {"auditor": "zz", "maxAgeSeconds": 1})
                         ["error"]["data"]["code"], "invalid_argument")
        # This server has no auditor: a lookup is refused, and nothing is sent.
        r = bot.call("send", {"recipient": "alice", "message": "hi"})
        self.assertEqual(r["error"]["data"]["code"], "security_alert", r)
        self.assertIn("auditor", r["error"]["message"])
        self.assertEqual(bot.result("requireAuditor", {"auditor": None}), {"auditor": None})
        self.assertIn("timestamp", bot.result("send", {"recipient": "alice", "message": "hi"}))
        self.stop_daemon(p)
        self.assertEqual([m["body"] for m in alice.messages()], ["hi"])

    def test_discover_and_docs_list_the_same_methods(self):
        alice, bob = self.pair()
        p, path = self.start_daemon(bob)
        bot = self.connect(path)
        doc = bot.result("rpc.discover")
        self.assertEqual(doc["openrpc"][:2], "1.")
        discovered = {m["name"]: sorted(m.get("x-aliases", [])) for m in doc["methods"]}
        notifications = sorted(n["name"] for n in doc["x-notifications"])
        for m in doc["methods"]:
            self.assertIn("result", m)
            self.assertIsInstance(m["params"], list)
            for param in m["params"]:
                self.assertIn("name", param)
                self.assertIn("schema", param)

        with open(os.path.join(SOURCE_DIR, "docs", "daemon.md"), encoding="utf-8") as f:
            text = f.read()
        documented, documented_notifications, section, current = {}, [], None, None
        for line in text.splitlines():
            if line.startswith("## "):
                section = line[3:].strip()
                current = None
            heading = re.match(r"^### `([^`]+)`", line)
            if heading and section == "Methods":
                current = heading.group(1)
                documented[current] = []
            elif heading and section == "Notifications":
                documented_notifications.append(heading.group(1))
            alias = re.match(r"^Alias(?:es)?: (.*)$", line)
            if alias and current:
                documented[current] = sorted(re.findall(r"`([^`]+)`", alias.group(1)))
        self.assertEqual(documented, discovered)
        self.assertEqual(sorted(documented_notifications), notifications)

        # Every method (and alias) is dispatched: none is "method not found".
        for name in list(discovered) + [a for aliases in discovered.values() for a in aliases]:
            r = bot.call(name)
            if "error" in r:
                self.assertNotEqual(r["error"]["code"], -32601, name)
        self.assertEqual(bot.call("noSuchMethod")["error"]["code"], -32601)
        self.stop_daemon(p)

    def test_oversized_request_gets_one_error_with_its_id(self):
        alice, bob = self.pair()
        p, path = self.start_daemon(bob)
        bot = self.connect(path)
        self.assertEqual(bot.result("account")["username"], "bob")

        def huge(id_part, size):
            return ('{"jsonrpc":"2.0",%s"method":"send","params":{"recipient":"alice","message":"'
                    % id_part + "x" * size + '"}}\n')

        bot.write(huge('"id":42,', int(1.5 * MIB)))
        bot.write(huge('"id":"big-one",', 3 * MIB))
        bot.write('{"jsonrpc":"2.0","method":"send","params":{"message":"' + "y" * (2 * MIB)
                  + '"},"id":7}\n')  # the id comes after the cut: null
        bot.write("{not json\n")
        self.assertEqual(bot.result("account")["username"], "bob")
        bot.wait_for(lambda replies: len([r for r in replies if "error" in r]) >= 4)
        time.sleep(0.5)  # no more errors come
        errors = [r for r in bot.replies if "error" in r]
        self.assertEqual([(e["id"], e["error"]["code"]) for e in errors],
                         [(42, -32600), ("big-one", -32600), (None, -32600), (None, -32700)])
        self.assertEqual(errors[0]["error"]["message"], "request too large")
        # Nesting is no way around the limits: an id or params nested 300,000 deep (600 KB) are
        # refused (an id must be a string or a number) without bringing the daemon down.
        deep = "[" * 300000 + "]" * 300000
        bot.write('{"jsonrpc":"2.0","method":"account","id":%s}\n' % deep)
        bot.write('{"jsonrpc":"2.0","method":"account","params":%s,"id":"deep"}\n' % deep)
        bot.write("[%s]\n" % deep)
        self.assertEqual(bot.result("account")["username"], "bob")
        bot.wait_for(lambda replies: len([r for r in replies if "error" in r]) >= 5 and any(
            r.get("id") == "deep" for r in replies if isinstance(r, dict)) and any(
            isinstance(r, list) for r in replies))
        deep_id = [r for r in bot.replies if isinstance(r, dict) and "error" in r][4]
        self.assertEqual((deep_id["id"], deep_id["error"]["code"]), (None, -32600))

        # A request of just under 1 MiB is served (and refused as a message too long for the
        # protocol, or sent: either way it is answered once, with its id).
        body = "z" * (MIB - 200)
        r = bot.call("send", {"recipient": "alice", "message": body}, timeout=60)
        self.assertEqual(r["id"], bot.replies[-1]["id"])
        self.assertNotEqual(r.get("error", {}).get("code"), -32600, r)
        self.stop_daemon(p)
        # Nothing of it went out.
        for m in alice.messages():
            self.assertNotIn("x" * 100, m["body"])

    def test_json_rpc_over_stdio_and_socket(self):
        alice, bob = self.pair()
        p, rpc = self.stdio_daemon(bob)
        rpc.notification(lambda n: n.get("type") == "connection" and n["state"] == "connected")
        self.sent(alice, "bob", "to the daemon")
        n = rpc.notification(is_message)
        self.assertEqual((n["from"], n["body"], n["account"]), ("alice", "to the daemon", "bob"))
        for key in ("id", "device", "timestamp", "cursor"):
            self.assertIn(key, n)

        # The daemon reconnects (with backoff) when the server dies, and keeps delivering.
        self.server.kill()
        rpc.notification(lambda n: n.get("type") == "connection" and n["state"] == "disconnected")
        self.server.start()
        rpc.notification(lambda n: n.get("type") == "connection" and n["state"] == "connected",
                         timeout=60)
        self.sent(alice, "bob", "after the crash")
        self.assertEqual(rpc.notification(is_message)["body"], "after the crash")

        # signal-cli's names and today's.
        r = rpc.result("send", {"recipient": "alice", "message": "from the daemon"})
        self.assertEqual((r["devices"], r["results"][0]["type"]), (1, "SUCCESS"))
        self.assertIn("timestamp", r)
        r = rpc.result("send", {"to": "alice", "body": "old names"})
        self.assertIn("timestamp", r)
        self.assertEqual(rpc.call("send", {"to": "alice"})["error"]["code"], -32602)
        self.assertEqual(rpc.result("contacts"), rpc.result("listContacts"))
        self.assertEqual([c["username"] for c in rpc.result("listContacts")], ["alice"])
        devices = rpc.result("listDevices")
        self.assertEqual([(d["id"], d["current"], d["primary"]) for d in devices], [(1, True, True)])
        self.assertEqual(rpc.result("devices"), devices)
        sn = rpc.result("safetyNumber", {"user": "alice"})
        self.assertEqual(len(sn["digits"]), 60)
        self.assertEqual((sn["accepted"], sn["verified"], sn["held"]), (True, False, 0))
        for key in ("identityKey", "changedAt", "scannable", "trustLevel"):
            self.assertIn(key, sn)
        self.assertEqual(rpc.result("listIdentities"), [sn])
        self.assertEqual(rpc.result("listIdentities", {"recipient": "alice"}), [sn])
        wrong = rpc.call("trust", {"recipient": "alice", "verifiedSafetyNumber": "1" * 60})
        self.assertEqual(wrong["error"]["data"]["code"], "safety_number_mismatch")
        trusted = rpc.result("trust", {"recipient": "alice", "verifiedSafetyNumber": sn["digits"]})
        self.assertEqual((trusted["verified"], trusted["trustLevel"]), (True, "TRUSTED_VERIFIED"))
        history = rpc.result("history", {"user": "alice", "limit": 2})
        self.assertEqual([m["body"] for m in history], ["from the daemon", "old names"])
        self.assertEqual(rpc.result("version")["version"].count("."), 2)
        self.assertEqual(rpc.call("removeDevice", {"deviceId": "two"})["error"]["code"], -32602)
        self.assertEqual(rpc.call("noSuchMethod")["error"]["code"], -32601)
        rpc.write("{not json\n")
        rpc.write(json.dumps([{"jsonrpc": "2.0", "id": "b1", "method": "account"},
                              {"jsonrpc": "2.0", "method": "account"},
                              {"jsonrpc": "2.0", "id": "b2", "method": "nope"}]) + "\n")
        rpc.wait_for(lambda replies: any(isinstance(r, list) for r in replies) and any(
            isinstance(r, dict) and r.get("id") is None for r in replies))
        answer = [r for r in rpc.replies if isinstance(r, list)][0]
        self.assertEqual([(a["id"], "result" in a) for a in answer], [("b1", True), ("b2", False)])
        self.assertEqual([r["error"]["code"] for r in rpc.replies
                          if isinstance(r, dict) and r.get("id") is None], [-32700])
        p.stdin.close()
        self.assertEqual(p.wait(timeout=30), 0)
        self.assertEqual(sorted(m["body"] for m in alice.messages()),
                         ["from the daemon", "old names"])
        self.assertEqual(alice.safety_number("bob")["digits"], sn["digits"])

        # The same over a Unix socket; the socket is removed at exit.
        p, path = self.start_daemon(bob)
        bot = self.connect(path)
        self.assertEqual(bot.result("account")["username"], "bob")
        self.sent(alice, "bob", "over the socket")
        self.assertEqual(bot.notification(is_message)["body"], "over the socket")
        # Requests are answered also after the peer stopped writing (half-closed); a long poll
        # then answers at once.
        bot.request("account", id="last")
        bot.request("receive", {"timeout": 600}, id="poll")
        start = time.monotonic()
        self.sockets[-1].shutdown(socket.SHUT_WR)
        self.assertEqual(bot.response("last")["result"]["username"], "bob")
        self.assertEqual(bot.response("poll", timeout=20)["result"]["events"], [])
        self.assertLess(time.monotonic() - start, 10)
        self.stop_daemon(p)
        self.assertFalse(os.path.exists(path))

    def test_cli_history_beside_the_daemon(self):
        alice, bob = self.pair()
        p, path = self.start_daemon(bob)
        bot = self.connect(path)
        self.sent(alice, "bob", "seen by the daemon")
        bot.notification(is_message)
        r = bob.run("history", "alice", timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual([json.loads(l)["body"] for l in r.stdout.splitlines() if l.strip()],
                         ["seen by the daemon"])
        self.stop_daemon(p)


if __name__ == "__main__":
    sys.exit(test_e2e.main())  # --bin BUILD_DIR [unittest options]
