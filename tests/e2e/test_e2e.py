#!/usr/bin/env python3
"""End-to-end tests of Sotto: real `sotto-server` and `sotto` processes, no mocks.

Each test starts its own server on free loopback ports with a temporary data directory and drives
`sotto` clients, each with its own --data directory. Python 3 standard library only.

    python3 tests/e2e/test_e2e.py --bin BUILD_DIR [unittest options, e.g. -v or Test.test_name]

BUILD_DIR is the CMake binary directory (holding apps/sotto/sotto and
apps/sotto-server/sotto-server).
"""

import argparse
import json
import os
import queue
import random
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import unittest

# Crash-recovery iterations of test_kill_9_during_burst_loses_nothing (the issue asks for 20; about
# 1.5 s each here). SOTTO_E2E_KILL_ITERATIONS overrides it (e.g. 5 for a quick run, 200 for a soak).
KILL_ITERATIONS = int(os.environ.get("SOTTO_E2E_KILL_ITERATIONS", "20"))
SENDS_PER_BURST = 8

BIN_DIR = None
# --postgres: a private PostgreSQL (tests/util/private_postgres.py) that every Server uses, each in
# a schema of its own, instead of the SQLite file under its data directory.
POSTGRES = None


def sotto_bin():
    return os.path.join(BIN_DIR, "apps", "sotto", "sotto")


def server_bin():
    return os.path.join(BIN_DIR, "apps", "sotto-server", "sotto-server")


_HANDED_OUT = set()


def _ephemeral_range():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(x) for x in f.read().split())
            return low, high
    except (OSError, ValueError):
        return 32768, 60999


def free_port():
    """A loopback port that is free now and outside the kernel's ephemeral range.

    A port the kernel hands out for bind(0) is also what it hands out as the source port of an
    outgoing connection, so one of the many client connections a test makes could take it before
    the server binds it. Ports below the ephemeral range are only ever taken on purpose."""
    low, _ = _ephemeral_range()
    top = low - 1 if low > 20000 else 32767
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(20000 if top > 20000 else 10000, top)
        if port in _HANDED_OUT:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One sotto-server data directory; can be started, stopped and killed repeatedly."""

    def __init__(self, root):
        self.data = os.path.join(root, "server")
        self.port = free_port()
        self.http_port = free_port()
        self.log_path = os.path.join(root, "server.log")
        self.proc = None
        self.started_once = False
        self.fingerprint = None
        self.store = POSTGRES.fresh_uri() if POSTGRES else None
        if self.store:
            r = subprocess.run([server_bin(), "--data", self.data, "--store", self.store,
                                "migrate"], capture_output=True, text=True, timeout=60)
            if r.returncode != 0:
                raise RuntimeError("sotto-server migrate failed: " + r.stderr)

    def store_args(self, args):
        """`args` with this server's --store added (when it has one and they name none)."""
        args = list(args)
        if self.store and "--store" not in args:
            args += ["--store", self.store]
        return args

    @property
    def address(self):
        return "127.0.0.1:%d" % self.port

    def start(self, timeout=15, args=None):
        """Starts the server; `args` replaces the default --data/--listen/--http flags.

        On the first start with the default flags, a port another process took between
        free_port() and the server's bind is replaced and the start tried again; later starts keep
        the ports, since clients hold the address."""
        attempts = 5 if args is None and not self.started_once else 1
        for attempt in range(attempts):
            try:
                return self._start_once(timeout, args)
            except RuntimeError as e:
                if attempt + 1 == attempts or "Address already in use" not in str(e):
                    raise
                self.port = free_port()
                self.http_port = free_port()

    def _start_once(self, timeout, args):
        offset = os.path.getsize(self.log_path) if os.path.exists(self.log_path) else 0
        log = open(self.log_path, "ab")
        if args is None:
            args = ["--data", self.data, "--listen", self.address,
                    "--http", "127.0.0.1:%d" % self.http_port]
        self.proc = subprocess.Popen(
            [server_bin()] + self.store_args(args),
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                text = f.read().decode("utf-8", "replace")
            for line in text.splitlines():
                if line.startswith("fingerprint: "):
                    self.fingerprint = line.split(": ", 1)[1].strip()
            if "listening on" in text and self.fingerprint:
                if self._accepting():
                    self.started_once = True
                    return
            if self.proc.poll() is not None:
                raise RuntimeError("sotto-server exited early:\n" + text)
            time.sleep(0.05)
        raise RuntimeError("sotto-server did not start in time")

    def _accepting(self):
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def reload(self, timeout=10):
        """SIGHUP, then waits for the server to log the reload."""
        before = self.log().count("event=reload")
        self.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + timeout
        while self.log().count("event=reload") == before:
            if time.monotonic() > deadline:
                raise AssertionError("the server did not reload:\n" + self.log()[-2000:])
            if self.proc.poll() is not None:
                raise AssertionError("the server exited on SIGHUP:\n" + self.log()[-2000:])
            time.sleep(0.05)
        return self.log().rsplit("event=reload", 1)[1].splitlines()[0]

    def operator(self, *args):
        """Runs an operator command (`sotto-server key rotate`...) on this data directory."""
        r = subprocess.run([server_bin()] + self.store_args(["--data", self.data] + list(args)),
                           capture_output=True,
                           text=True, timeout=60)
        if r.returncode != 0:
            raise AssertionError("sotto-server %s failed: %s" % (" ".join(args), r.stderr))
        return r.stdout

    def metric(self, name):
        """The value of a metric from the operator HTTP endpoint (/metrics)."""
        with socket.create_connection(("127.0.0.1", self.http_port), timeout=5) as c:
            c.sendall(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
            data = b""
            while True:
                chunk = c.recv(65536)
                if not chunk:
                    break
                data += chunk
        for line in data.decode("utf-8", "replace").splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
        raise AssertionError("no metric %s in /metrics" % name)

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        self.proc = None

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


class Client:
    """One `sotto` data directory (one device)."""

    def __init__(self, root, name, env=None):
        self.data = os.path.join(root, name)
        self.env = dict(os.environ)
        self.env.pop("SOTTO_PASSPHRASE", None)
        if env:
            self.env.update(env)

    def run(self, *args, json_output=True, timeout=90, stdin=None):
        cmd = [sotto_bin(), "--data", self.data]
        if json_output:
            cmd.append("--json")
        cmd += list(args)
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              env=self.env, input=stdin)

    def ok(self, *args, **kwargs):
        r = self.run(*args, **kwargs)
        if r.returncode != 0:
            raise AssertionError("sotto %s failed (%d): %s" % (" ".join(args), r.returncode, r.stderr))
        return r

    def popen(self, *args, json_output=True, **kwargs):
        cmd = [sotto_bin(), "--data", self.data]
        if json_output:
            cmd.append("--json")
        cmd += list(args)
        return subprocess.Popen(cmd, env=self.env, text=True, **kwargs)

    def register(self, user, server, *extra):
        r = self.ok("register", user, "--server", server.address, *extra)
        self.info = json.loads(r.stdout.strip().splitlines()[-1])
        return self.info

    def recover(self, user, code, server, *extra):
        r = self.ok("recover", user, "--code", code, "--server", server.address, *extra)
        self.info = json.loads(r.stdout.strip().splitlines()[-1])
        return self.info

    def fails(self, *args, code=None, **kwargs):
        """Runs a command that must fail with exit status 1 and one JSON error on stderr;
        returns that error ({"code", "message", "hint"?})."""
        r = self.run(*args, **kwargs)
        if r.returncode != 1:
            raise AssertionError("sotto %s: exit %d, not 1 (stdout %r, stderr %r)"
                                 % (" ".join(args), r.returncode, r.stdout, r.stderr))
        lines = r.stderr.strip().splitlines()
        if len(lines) != 1:
            raise AssertionError("sotto %s: not one line on stderr: %r" % (" ".join(args), r.stderr))
        error = json.loads(lines[0])["error"]
        if code is not None and error["code"] != code:
            raise AssertionError("sotto %s: error %r, not %s" % (" ".join(args), error, code))
        return error

    def contacts(self):
        return {c["username"]: c for c in parse_lines(self.ok("contacts").stdout)}

    def history(self, user):
        return [m["body"] for m in parse_lines(self.ok("history", user, "--limit", "0").stdout)]

    def send(self, to, body, timeout_s=30):
        return self.run("send", to, body, "--timeout", str(timeout_s), timeout=timeout_s + 30)

    def receive(self, timeout_s=20):
        r = self.ok("receive", "--timeout", str(timeout_s), timeout=timeout_s + 30)
        return parse_lines(r.stdout)

    def messages(self, timeout_s=20):
        return [e for e in self.receive(timeout_s) if e.get("type") == "message"]

    def safety_number(self, user):
        return json.loads(self.ok("safety-number", user).stdout)


def run_on_terminal(client, args, answers, timeout=60):
    """Runs `sotto --data DIR ARGS` with a terminal (a pty) as standard input, typing each answer
    once its prompt has appeared on standard error (typing earlier would be discarded: the CLI
    flushes pending input before a hidden prompt). Returns (status, stdout, stderr)."""
    import select
    master, slave = os.openpty()
    p = subprocess.Popen([sotto_bin(), "--data", client.data] + list(args), stdin=slave,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=client.env)
    os.close(slave)
    err = b""
    seen = 0
    try:
        for prompt, text in answers:
            deadline = time.monotonic() + timeout
            while prompt.encode() not in err[seen:]:
                left = deadline - time.monotonic()
                ready, _, _ = select.select([p.stderr], [], [], max(left, 0))
                chunk = os.read(p.stderr.fileno(), 4096) if ready else b""
                if not chunk:
                    raise AssertionError("no prompt %r; stderr so far %r" % (prompt, err))
                err += chunk
            seen = err.index(prompt.encode(), seen) + len(prompt)
            os.write(master, text.encode() + b"\r")
        out, rest = p.communicate(timeout=timeout)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        os.close(master)
    return p.returncode, out.decode("utf-8", "replace"), (err + rest).decode("utf-8", "replace")


def parse_lines(text):
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line:
            out.append(json.loads(line))
    return out


class LineReader:
    """Reads a pipe's lines on a thread, so tests can wait for a line with a timeout."""

    def __init__(self, stream):
        self.lines = queue.Queue()
        self.thread = threading.Thread(target=self._run, args=(stream,), daemon=True)
        self.thread.start()

    def _run(self, stream):
        for line in stream:
            self.lines.put(line)
        self.lines.put(None)

    def next(self, timeout=20):
        line = self.lines.get(timeout=timeout)
        if line is None:
            raise EOFError("stream closed")
        return line

    def wait_json(self, predicate, timeout=20):
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no matching line in time")
            line = self.next(timeout=remaining).strip()
            if not line:
                continue
            obj = json.loads(line)
            if predicate(obj):
                return obj


class E2ETest(unittest.TestCase):
    def setUp(self):
        self.root = tempfile.mkdtemp(prefix="sotto-e2e-")
        self.server = Server(self.root)
        self.server.start()
        self.procs = []

    def tearDown(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()
            for stream in (p.stdin, p.stdout, p.stderr):
                if stream:
                    stream.close()
        self.server.stop()
        if self._outcome_ok():
            shutil.rmtree(self.root, ignore_errors=True)
        else:
            sys.stderr.write("\nkept %s for inspection\n" % self.root)

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

    def client(self, name, **kwargs):
        return Client(self.root, name, **kwargs)

    def pair(self):
        alice, bob = self.client("alice"), self.client("bob")
        alice.register("alice", self.server)
        bob.register("bob", self.server)
        return alice, bob

    def link(self, existing, new_name, *extra):
        """Links a new device to `existing`'s account; returns (client, device id)."""
        new = self.client(new_name, env=existing.env)
        p = new.popen("link", "--server", self.server.address, "--timeout", "60", *extra,
                      stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.procs.append(p)
        reader = LineReader(p.stdout)
        code = reader.wait_json(lambda o: "code" in o)["code"]
        added = json.loads(existing.ok("add-device", code).stdout)
        done = reader.wait_json(lambda o: "device" in o, timeout=30)
        self.assertEqual(p.wait(timeout=30), 0, p.stderr.read())
        self.assertEqual(added["device"], done["device"])
        return new, done["device"]

    # --- tests ---------------------------------------------------------------------------------

    def test_registration(self):
        alice = self.client("alice")
        info = alice.register("Alice", self.server)
        self.assertEqual(info["username"], "alice")
        self.assertEqual(info["device"], 1)
        self.assertEqual(info["fingerprint"], self.server.fingerprint)
        self.assertTrue(info["trustedOnFirstUse"])

        # With the fingerprint given; a wrong one is refused before anything is sent.
        bob = self.client("bob")
        info = bob.register("bob", self.server, "--server-fingerprint", self.server.fingerprint.upper())
        self.assertFalse(info["trustedOnFirstUse"])
        mallory = self.client("mallory")
        r = mallory.run("register", "mallory", "--server", self.server.address,
                        "--server-fingerprint", "ab" * 32, json_output=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("fingerprint", r.stderr)
        self.assertEqual(len(r.stderr.strip().splitlines()), 1, r.stderr)
        # Without an account `sotto server trust` cannot help: the hint says what to check.
        self.assertIn("the operator published", r.stderr)
        self.assertNotIn("sotto server trust", r.stderr)
        error = mallory.fails("recover", "alice", "--code", "A" * 24, "--server",
                              self.server.address, "--server-fingerprint", "ab" * 32,
                              code="fingerprint_mismatch")
        self.assertIn("`fingerprint: ...`", error["hint"])
        self.assertNotIn("sotto server trust", error["hint"])

        # A taken username, an invalid one, an unknown recipient: one clear line each.
        r = self.client("alice2").run("register", "alice", "--server", self.server.address,
                                      json_output=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("taken", r.stderr)
        self.assertEqual(len(r.stderr.strip().splitlines()), 1, r.stderr)
        r = self.client("x").run("register", "-x", "--server", self.server.address, json_output=False)
        self.assertNotEqual(r.returncode, 0)
        r = alice.run("send", "nobody-here", "hello", json_output=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertEqual(len(r.stderr.strip().splitlines()), 1, r.stderr)
        self.assertIn("no such user: nobody-here has no account", r.stderr)

        # A store protected by a passphrase.
        env = {"SOTTO_PASSPHRASE": "correct horse", "SOTTO_TEST_FAST_KDF": "1"}
        carol = self.client("carol", env=env)
        carol.register("carol", self.server)
        self.assertEqual(carol.send("alice", "from carol").returncode, 0)
        wrong = Client(self.root, "carol", env={"SOTTO_PASSPHRASE": "wrong", "SOTTO_TEST_FAST_KDF": "1"})
        r = wrong.run("receive", json_output=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("passphrase", r.stderr)
        self.assertEqual([m["body"] for m in alice.messages()], ["from carol"])

        # After registration the fingerprint is pinned: a server with another certificate on the
        # same address is refused with a clear error.
        self.server.stop()
        shutil.rmtree(os.path.join(self.server.data, "tls"))
        self.server.start()
        r = alice.run("receive", "--timeout", "5", json_output=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("fingerprint", r.stderr)
        self.assertEqual(len(r.stderr.strip().splitlines()), 1, r.stderr)

    def test_offline_delivery(self):
        alice, bob = self.pair()
        bodies = ["first", "second \u00e9\u00e8 \U0001F600", "third"]
        for b in bodies:
            r = alice.send("bob", b)
            self.assertEqual(r.returncode, 0, r.stderr)
        got = bob.messages()
        self.assertEqual([m["body"] for m in got], bodies)
        for m in got:
            self.assertEqual(m["from"], "alice")
            self.assertEqual(m["device"], 1)
            for key in ("id", "timestamp"):
                self.assertIn(key, m)
        self.assertEqual(bob.messages(), [])  # acknowledged: not delivered again
        # The answer goes back the other way through the established session.
        self.assertEqual(bob.send("alice", "got them").returncode, 0)
        self.assertEqual([m["body"] for m in alice.messages()], ["got them"])
        history = parse_lines(bob.ok("history", "alice").stdout)
        self.assertEqual([m["body"] for m in history], bodies + ["got them"])

    def test_two_devices_sync(self):
        alice, bob = self.pair()
        bob2, device = self.link(bob, "bob2")
        self.assertEqual(device, 2)
        for c, current in ((bob, 1), (bob2, 2)):
            devices = parse_lines(c.ok("devices").stdout)  # one object per line
            self.assertEqual(sorted(d["id"] for d in devices), [1, 2])
            self.assertEqual([d["id"] for d in devices if d["current"]], [current])

        self.assertEqual(alice.send("bob", "hello both").returncode, 0)
        for c in (bob, bob2):
            self.assertEqual([(m["body"], m["from"]) for m in c.messages()], [("hello both", "alice")])

        # Each device sees what the other sent (sync copies), and alice gets both.
        self.assertEqual(bob.send("alice", "from bob 1").returncode, 0)
        self.assertEqual(bob2.send("alice", "from bob 2").returncode, 0)
        got1 = bob.messages()
        got2 = bob2.messages()
        self.assertEqual([(m["body"], m["outgoing"], m["conversation"], m["device"]) for m in got1],
                         [("from bob 2", True, "alice", 2)])
        self.assertEqual([(m["body"], m["outgoing"], m["conversation"], m["device"]) for m in got2],
                         [("from bob 1", True, "alice", 1)])
        got = alice.messages()
        self.assertEqual(sorted((m["body"], m["device"]) for m in got),
                         [("from bob 1", 1), ("from bob 2", 2)])

    def test_stale_device_list_repaired(self):
        alice, bob = self.pair()
        self.assertEqual(alice.send("bob", "before").returncode, 0)
        self.assertEqual([m["body"] for m in bob.messages()], ["before"])
        # alice holds a session with bob's device 1 only; bob adds a device.
        bob2, _ = self.link(bob, "bob2")
        r = alice.send("bob", "after link")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(json.loads(r.stdout)["devices"], 2)
        self.assertEqual([m["body"] for m in bob.messages()], ["after link"])
        self.assertEqual([m["body"] for m in bob2.messages()], ["after link"])
        # The device goes away again: alice's extra session is dropped on the next send.
        bob.ok("devices", "remove", "2")
        r = alice.send("bob", "after remove")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(json.loads(r.stdout)["devices"], 1)
        self.assertEqual([m["body"] for m in bob.messages()], ["after remove"])
        r = bob2.run("receive", "--timeout", "5", json_output=False)
        self.assertNotEqual(r.returncode, 0)  # a removed device is refused by the server
        self.assertIn("removed", r.stderr)

    def test_undecryptable_message_is_reported_and_acknowledged(self):
        alice, bob = self.pair()
        self.assertEqual(alice.send("bob", "m1").returncode, 0)
        self.assertEqual([m["body"] for m in bob.messages()], ["m1"])
        self.assertEqual(bob.send("alice", "r1").returncode, 0)
        self.assertEqual([m["body"] for m in alice.messages()], ["r1"])
        snapshot = bob.data + ".snapshot"
        shutil.copytree(bob.data, snapshot)
        # The ratchet moves on: bob's next reply carries a ratchet key the snapshot lacks.
        self.assertEqual(alice.send("bob", "m2").returncode, 0)
        self.assertEqual([m["body"] for m in bob.messages()], ["m2"])
        self.assertEqual(bob.send("alice", "r2").returncode, 0)
        self.assertEqual([m["body"] for m in alice.messages()], ["r2"])
        bob.receive()  # alice's delivery receipt for r2, before bob's device loses its state
        self.assertEqual(alice.send("bob", "m3").returncode, 0)
        # bob's device loses its state (restored from an old backup): m3 cannot be decrypted.
        shutil.rmtree(bob.data)
        shutil.copytree(snapshot, bob.data)
        events = bob.receive()
        self.assertEqual([(e["type"], e["from"], e["device"]) for e in events], [("error", "alice", 1)])
        # (The "untrustedIdentity" field is gone: a changed key is an identity_changed event.)
        self.assertNotIn("untrustedIdentity", events[0])
        self.assertEqual(bob.receive(), [])  # acknowledged: it does not block the queue
        history = parse_lines(bob.ok("history", "alice").stdout)
        self.assertIn("could not be decrypted", history[-1]["body"])
        text = bob.run("history", "alice", json_output=False).stdout
        self.assertIn("could not be decrypted", text)

    def test_server_restart_mid_conversation(self):
        alice, bob = self.pair()
        self.assertEqual(alice.send("bob", "one").returncode, 0)
        self.assertEqual([m["body"] for m in bob.messages()], ["one"])
        self.assertEqual(bob.send("alice", "two").returncode, 0)  # queued for alice
        self.server.stop()
        self.server.start()
        self.assertEqual([m["body"] for m in alice.messages()], ["two"])
        self.assertEqual(alice.send("bob", "three").returncode, 0)
        self.server.kill()
        self.server.start()
        self.assertEqual([m["body"] for m in bob.messages()], ["three"])
        # A send while the server is down waits for it and then goes through.
        self.server.stop()
        restarter = threading.Timer(1.5, self.server.start)
        restarter.start()
        r = bob.send("alice", "four")
        restarter.join()
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual([m["body"] for m in alice.messages()], ["four"])

    def test_kill_9_during_burst_loses_nothing(self):
        alice, bob = self.pair()
        self.assertEqual(alice.send("bob", "warm-up").returncode, 0)
        acknowledged = ["warm-up"]
        maybe = []
        shown = []
        receiver_errors = []

        def receive_into(timeout_s=15):
            r = bob.run("receive", "--timeout", str(timeout_s), timeout=timeout_s + 30)
            # Everything printed counts as shown, also from a receive that failed later.
            shown.extend(e["body"] for e in parse_lines(r.stdout) if e.get("type") == "message")
            if r.returncode != 0:
                receiver_errors.append(r.stderr.strip())
            return r.returncode

        rng = random.Random(20240501)
        for iteration in range(KILL_ITERATIONS):
            def killer():
                time.sleep(rng.uniform(0.05, 0.6))
                self.server.kill()
                time.sleep(rng.uniform(0.05, 0.4))
                self.server.start()
            k = threading.Thread(target=killer)
            recv = threading.Thread(target=receive_into)
            k.start()
            recv.start()
            for i in range(SENDS_PER_BURST):
                body = "burst %d/%d" % (iteration, i)
                r = alice.send("bob", body, timeout_s=20)
                (acknowledged if r.returncode == 0 else maybe).append(body)
            k.join()
            recv.join()
        # Drain what is left (twice: the second must find nothing new).
        self.assertEqual(receive_into(), 0, receiver_errors)
        self.assertEqual(receive_into(), 0, receiver_errors)

        sys.stderr.write("\n  kill -9 x%d: %d acknowledged, %d not acknowledged, %d shown, "
                         "%d receiver runs failed\n" % (KILL_ITERATIONS, len(acknowledged), len(maybe),
                                                        len(shown), len(receiver_errors)))
        duplicates = sorted({b for b in shown if shown.count(b) > 1})
        self.assertEqual(duplicates, [], "messages shown twice")
        missing = [b for b in acknowledged if b not in shown]
        self.assertEqual(missing, [], "acknowledged messages lost")
        unexpected = [b for b in shown if b not in acknowledged and b not in maybe]
        self.assertEqual(unexpected, [])
        # Sends retry through the crash, so nearly all of them are acknowledged.
        self.assertGreaterEqual(len(acknowledged), (KILL_ITERATIONS * SENDS_PER_BURST) // 2)
        history = [m["body"] for m in parse_lines(bob.ok("history", "alice", "--limit", "0").stdout)]
        self.assertEqual(sorted(history), sorted(shown))

    def test_chat(self):
        alice, bob = self.pair()
        self.assertEqual(alice.send("bob", "earlier").returncode, 0)
        p = bob.popen("chat", "alice", stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.procs.append(p)
        out = LineReader(p.stdout)
        self.assertEqual(out.wait_json(lambda o: o.get("type") == "message")["body"], "earlier")
        self.assertEqual(alice.send("bob", "live").returncode, 0)
        self.assertEqual(out.wait_json(lambda o: o.get("type") == "message")["body"], "live")
        p.stdin.write("typed reply\n")
        p.stdin.flush()
        self.assertEqual(out.wait_json(lambda o: o.get("type") == "sent")["devices"], 1)
        p.stdin.write("/quit\n")
        p.stdin.flush()
        self.assertEqual(p.wait(timeout=20), 0)
        self.assertEqual([m["body"] for m in alice.messages()], ["typed reply"])

    def test_safety_numbers_match(self):
        alice, bob = self.pair()
        self.assertEqual(alice.send("bob", "hi").returncode, 0)
        bob.messages()
        a = alice.safety_number("bob")
        b = bob.safety_number("alice")
        self.assertEqual(len(a["digits"]), 60)
        self.assertTrue(a["digits"].isdigit())
        self.assertEqual(a["digits"], b["digits"])
        self.assertNotEqual(a["scannable"], b["scannable"])  # each side puts itself first
        # A linked device shares the identity, so it shows the same number.
        bob2, _ = self.link(bob, "bob2")
        self.assertEqual(bob2.safety_number("alice")["digits"], a["digits"])
        # Human form: 12 groups of 5 digits and a QR code.
        text = alice.ok("safety-number", "bob", json_output=False).stdout
        groups = " ".join(text.split()).split(" ")
        self.assertIn(a["digits"][:5], groups)
        self.assertIn("\u2588", text)
        # Plain trust accepts the key without marking it verified; with the digits (spaces
        # allowed) it is verified.
        alice.ok("trust", "bob")
        contacts = parse_lines(alice.ok("contacts").stdout)
        self.assertEqual([(c["username"], c["accepted"], c["verified"]) for c in contacts],
                         [("bob", True, False)])
        grouped = " ".join(a["digits"][i:i + 5] for i in range(0, 60, 5))
        alice.ok("trust", "bob", "--safety-number", grouped)
        contacts = parse_lines(alice.ok("contacts").stdout)
        self.assertEqual([(c["username"], c["accepted"], c["verified"]) for c in contacts],
                         [("bob", True, True)])

    # --- identity changes, and text that is not UTF-8 (cases 1-4) ---------------------------------

    def recovered(self, user, old, name):
        """`user` takes the account back with its recovery code on a new data directory: a new
        identity key (what a re-installed phone looks like to contacts)."""
        new = self.client(name)
        info = new.recover(user, old.info["recoveryCode"], self.server)
        self.assertNotEqual(info["recoveryCode"], old.info["recoveryCode"])
        return new

    def test_identity_change_holds_messages_until_trusted(self):
        # Case 1: a message from a contact's new identity key is held, not lost, until the key
        # is accepted; with --trust-new-identities always it is shown at once.
        alice, bob = self.pair()
        carol = self.client("carol")
        carol.register("carol", self.server, "--trust-new-identities", "always")
        for peer in (alice, carol):
            self.assertEqual(bob.send(peer.info["username"], "old key").returncode, 0)
            self.assertEqual([m["body"] for m in peer.messages()], ["old key"])

        bob2 = self.recovered("bob", bob, "bob-new")
        r = bob2.send("alice", "from the new key")
        self.assertEqual(r.returncode, 0, r.stderr)
        events = alice.receive()
        self.assertEqual([e["type"] for e in events], ["identity_changed"], events)
        self.assertEqual((events[0]["user"], events[0]["accepted"]), ("bob", False))
        self.assertGreater(events[0]["changedAt"], 0)
        contact = alice.contacts()["bob"]
        self.assertEqual((contact["accepted"], contact["verified"], contact["held"]),
                         (False, False, 1))
        self.assertEqual(alice.receive(), [])  # held: not shown, not lost
        self.assertNotIn("from the new key", alice.history("bob"))

        trusted = json.loads(alice.ok("trust", "bob").stdout)
        self.assertEqual((trusted["accepted"], trusted["verified"], trusted["released"]),
                         (True, False, 1))
        got = alice.receive()
        self.assertEqual([(e["type"], e.get("body")) for e in got],
                         [("message", "from the new key")])
        self.assertEqual(alice.contacts()["bob"]["held"], 0)
        self.assertEqual(alice.history("bob")[-1], "from the new key")

        # A policy that accepts changes shows the message at once, and says so.
        r = bob2.send("carol", "to carol from the new key")
        self.assertEqual(r.returncode, 0, r.stderr)
        got = carol.receive()
        self.assertEqual([e["type"] for e in got], ["identity_changed", "message"], got)
        self.assertEqual((got[0]["user"], got[0]["accepted"]), ("bob", True))
        self.assertEqual(got[1]["body"], "to carol from the new key")

    def test_message_from_old_key_readable_after_identity_change(self):
        # Case 2: what bob sent from his old key while alice was offline stays readable after
        # his key changed, also after alice tried to send to him (refused: untrusted_identity,
        # nothing sent).
        alice, bob = self.pair()
        self.assertEqual(alice.send("bob", "hello bob").returncode, 0)
        self.assertEqual([m["body"] for m in bob.messages()], ["hello bob"])
        self.assertEqual(bob.send("alice", "sent from the old key").returncode, 0)  # alice offline

        bob2 = self.recovered("bob", bob, "bob-new")
        error = alice.fails("send", "bob", "are you there?", "--timeout", "10",
                            code="untrusted_identity")
        self.assertIn("sotto safety-number bob", error.get("hint", ""))
        r = alice.run("send", "bob", "are you there?", "--timeout", "10", json_output=False)
        self.assertEqual(r.returncode, 1)
        self.assertEqual(len(r.stderr.strip().splitlines()), 1, r.stderr)
        self.assertIn("sotto trust bob --safety-number", r.stderr)

        got = alice.receive()
        self.assertIn(("message", "sent from the old key"),
                      [(e["type"], e.get("body")) for e in got], got)
        self.assertIn("sent from the old key", alice.history("bob"))
        self.assertEqual(bob2.receive(), [])  # nothing was sent

    def test_safety_number_after_identity_change(self):
        # Case 3: after bob's key changed, `safety-number bob` shows the new number (the one
        # bob's new device shows for alice) and when it changed; wrong digits change nothing;
        # plain trust accepts without verifying; the right digits verify.
        alice, bob = self.pair()
        self.assertEqual(alice.send("bob", "hi").returncode, 0)
        bob.messages()
        before = alice.safety_number("bob")
        self.assertEqual(before["changedAt"], 0)
        bob2 = self.recovered("bob", bob, "bob-new")

        now = alice.safety_number("bob")  # asks the server: the change is seen before any message
        self.assertNotEqual(now["digits"], before["digits"])
        self.assertEqual(now["digits"], bob2.safety_number("alice")["digits"])
        self.assertNotEqual(now["identityKey"], before["identityKey"])
        self.assertGreater(now["changedAt"], 0)
        self.assertEqual((now["accepted"], now["verified"], now["held"]), (False, False, 0))
        text = alice.ok("safety-number", "bob", json_output=False).stdout
        self.assertIn("changed at", text)
        self.assertIn("not accepted", text)
        self.assertIn("sotto trust bob --safety-number", text)

        wrong = "1" * 60
        error = alice.fails("trust", "bob", "--safety-number", wrong, code="safety_number_mismatch")
        self.assertIn("nothing was changed", error["message"])
        self.assertEqual((alice.contacts()["bob"]["accepted"], alice.contacts()["bob"]["verified"]),
                         (False, False))
        # A wrong number with the old key's digits is refused too.
        alice.fails("trust", "bob", "--safety-number", before["digits"],
                    code="safety_number_mismatch")

        plain = json.loads(alice.ok("trust", "bob").stdout)
        self.assertEqual((plain["accepted"], plain["verified"]), (True, False))
        self.assertEqual((alice.contacts()["bob"]["accepted"], alice.contacts()["bob"]["verified"]),
                         (True, False))
        self.assertIn("not verified", alice.ok("trust", "bob", json_output=False).stdout)

        grouped = " ".join(now["digits"][i:i + 5] for i in range(0, 60, 5))
        out = alice.ok("trust", "bob", "--safety-number", grouped, json_output=False).stdout
        self.assertIn("verified", out)
        self.assertNotIn("not verified", out)
        contact = alice.contacts()["bob"]
        self.assertEqual((contact["accepted"], contact["verified"]), (True, True))
        self.assertEqual(contact["identityKey"], now["identityKey"])
        self.assertGreater(contact["identityChangedAt"], 0)
        self.assertIn("State: verified", alice.ok("safety-number", "bob", json_output=False).stdout)

    def test_invalid_utf8_refused_at_send(self):
        # Case 4: text that is not valid UTF-8 is refused at send with a clear error, and the
        # recipient gets nothing.
        alice, bob = self.pair()
        for body in (b"caf\xe9", b"\xff\xfe", b"ok \xc0\xaf", b"\xed\xa0\x80 surrogate"):
            r = subprocess.run([os.fsencode(sotto_bin()), b"--data", os.fsencode(alice.data),
                                b"send", b"bob", body, b"--timeout", b"5"],
                               capture_output=True, env=alice.env, timeout=60)
            self.assertEqual(r.returncode, 1, r)
            err = r.stderr.decode("utf-8", "replace")
            self.assertIn("UTF-8", err)
            self.assertEqual(len(err.strip().splitlines()), 1, err)
        self.assertEqual(bob.receive(timeout_s=5), [])
        self.assertEqual(alice.history("bob"), [])

    # --- copies of a device's data (case 5) -------------------------------------------------------

    def test_restored_copy_asks_for_resend(self):
        # Case 5, first half: alice's data directory is restored from a copy, so her ratchet
        # reuses keys bob has used up. bob's receive reports the message and that it asked alice
        # to send it again; once alice's receive answered, bob gets it.
        alice, bob = self.pair()
        self.assertEqual(alice.send("bob", "m0").returncode, 0)
        self.assertEqual([m["body"] for m in bob.messages()], ["m0"])
        self.assertEqual(bob.send("alice", "r0").returncode, 0)
        self.assertEqual([m["body"] for m in alice.messages()], ["r0"])
        copy = alice.data + ".copy"
        shutil.copytree(alice.data, copy)
        for body in ("m1", "m2"):
            self.assertEqual(alice.send("bob", body).returncode, 0)
        self.assertEqual([m["body"] for m in bob.messages()], ["m1", "m2"])

        shutil.rmtree(alice.data)  # the original is no longer used
        shutil.move(copy, alice.data)
        r = alice.send("bob", "m3 from the restored copy")
        self.assertEqual(r.returncode, 0, r.stderr)
        events = bob.receive()
        self.assertEqual([(e["type"], e.get("from")) for e in events], [("error", "alice")], events)
        self.assertIn("asked the sender to send it again", events[0]["error"])
        alice.receive()  # answers bob's request
        self.assertEqual([m["body"] for m in bob.messages()], ["m3 from the restored copy"])
        self.assertEqual(bob.messages(), [])  # shown once
        # The conversation goes on both ways.
        self.assertEqual(bob.send("alice", "r1").returncode, 0)
        self.assertEqual([m["body"] for m in alice.messages()], ["r1"])
        self.assertEqual(alice.send("bob", "m4").returncode, 0)
        self.assertEqual([m["body"] for m in bob.messages()], ["m4"])

    def test_two_copies_at_once_device_in_use(self):
        # Case 5, second half: while one copy of alice's data is connected, the other copy is
        # refused (device_in_use, naming the problem), and no message is lost.
        alice, bob = self.pair()
        self.assertEqual(alice.send("bob", "m0").returncode, 0)
        self.assertEqual([m["body"] for m in bob.messages()], ["m0"])
        twin = self.client("alice-twin")
        shutil.copytree(alice.data, twin.data)

        p = twin.popen("chat", "bob", stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE)
        self.procs.append(p)
        out = LineReader(p.stdout)
        out.wait_json(lambda o: o.get("type") == "connection" and o.get("state") == "connected")
        self.assertEqual(bob.send("alice", "while the twin is online").returncode, 0)
        self.assertEqual(out.wait_json(lambda o: o.get("type") == "message")["body"],
                         "while the twin is online")

        error = alice.fails("receive", "--timeout", "5", code="device_in_use")
        self.assertIn("another copy", error["message"])
        self.assertIn("sotto chat", error.get("hint", ""))
        r = alice.run("receive", "--timeout", "5", json_output=False)
        self.assertEqual(r.returncode, 1)
        self.assertEqual(len(r.stderr.strip().splitlines()), 1, r.stderr)
        self.assertIn("copy", r.stderr)
        alice.fails("send", "bob", "from the other copy", "--timeout", "5", code="device_in_use")

        p.stdin.write("/quit\n")
        p.stdin.flush()
        self.assertEqual(p.wait(timeout=20), 0)
        # Nothing the refused copy tried was sent, and nothing was lost: bob got nothing new,
        # and what bob sends now reaches the original.
        # (The twin, online, said it received and read bob's message: receipts, sent with the
        # twin's session state, which the original lacks.)
        self.assertEqual([e for e in bob.receive(timeout_s=5) if e["type"] != "receipt"], [])
        self.assertEqual(bob.send("alice", "after the twin left").returncode, 0)
        # Bob's session went on from the twin's, so the original may not decrypt what bob sends
        # now; then it says so and asks bob for it again (nothing is lost silently). The resend
        # needs a new session, and the server holds the prekeys the twin uploaded when it logged
        # in as a copy: a known limitation of two copies online (docs/messages.md).
        got = alice.receive()
        bodies = [m["body"] for m in got if m.get("type") == "message"]
        if bodies:
            self.assertEqual(bodies, ["after the twin left"])
        else:
            errors = [e for e in got if e.get("type") == "error"]
            self.assertEqual(len(errors), 1, got)
            self.assertIn("asked the sender to send it again", errors[0]["error"])

    # --- the server's key (case 6) ----------------------------------------------------------------

    def test_server_certificate_renewed_with_same_key(self):
        # Case 6: a new certificate for the same key needs nothing from the clients (they pin
        # the key, not the certificate).
        alice, bob = self.pair()
        old_fp = self.server.fingerprint
        tls = os.path.join(self.server.data, "tls")
        with open(os.path.join(tls, "cert.pem"), "rb") as f:
            old_cert = f.read()
        self.server.stop()
        subprocess.run(["openssl", "req", "-new", "-x509", "-key", os.path.join(tls, "key.pem"),
                        "-out", os.path.join(tls, "cert.pem"), "-days", "30", "-subj",
                        "/CN=renewed"], check=True, capture_output=True, timeout=60)
        with open(os.path.join(tls, "cert.pem"), "rb") as f:
            self.assertNotEqual(f.read(), old_cert)
        self.server.start()
        self.assertEqual(self.server.fingerprint, old_fp)
        r = alice.send("bob", "after renewal")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual([m["body"] for m in bob.messages()], ["after renewal"])
        self.assertEqual(json.loads(alice.ok("server", "show").stdout)["fingerprint"], old_fp)

    def test_server_key_rotation_followed_without_user_action(self):
        # Case 6: `sotto-server key rotate` + SIGHUP; the clients connect (a plain `receive`) and
        # learn the next key; `key activate` + SIGHUP: they keep working, and `server show`
        # shows the new pin.
        alice, bob = self.pair()
        old_fp = self.server.fingerprint
        rotate = subprocess.run([server_bin(), "--data", self.server.data, "key", "rotate"],
                                capture_output=True, text=True, timeout=60)
        self.assertEqual(rotate.returncode, 0, rotate.stderr)
        next_fp = rotate.stdout.split("next fingerprint:", 1)[1].strip()
        self.assertNotEqual(next_fp, old_fp)
        self.assertIn("sotto-server --data %s key activate" % self.server.data, rotate.stderr)
        self.assertIn("next=" + next_fp, self.server.reload())
        self.assertEqual(self.server.metric("sotto_next_key_devices_told"), 0)
        for c in (alice, bob):
            c.receive(timeout_s=5)
            shown = json.loads(c.ok("server", "show").stdout)
            self.assertEqual((shown["fingerprint"], shown["nextFingerprint"]), (old_fp, next_fp))
        self.assertIn(next_fp, alice.ok("server", "show", json_output=False).stdout)
        self.assertEqual(self.server.metric("sotto_next_key_devices_told"), 2)
        self.server.reload()  # the same announcement: the count stays
        self.assertEqual(self.server.metric("sotto_next_key_devices_told"), 2)
        activate = subprocess.run([server_bin(), "--data", self.server.data, "key", "activate"],
                                  capture_output=True, text=True, timeout=60)
        self.assertEqual(activate.returncode, 0, activate.stderr)
        # The operator is warned about devices that were not told.
        self.assertIn("sotto server trust " + next_fp, activate.stderr)
        self.assertIn("sotto_next_key_devices_told", activate.stderr)
        self.assertIn("fingerprint=" + next_fp, self.server.reload())
        r = alice.send("bob", "after rotation")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual([m["body"] for m in bob.messages()], ["after rotation"])
        for c in (alice, bob):
            shown = json.loads(c.ok("server", "show").stdout)
            self.assertEqual((shown["fingerprint"], shown["nextFingerprint"]), (next_fp, None))
        self.assertEqual(self.server.metric("sotto_next_key_devices_told"), 0)
        # `key show` on a data directory that does not exist names it.
        missing = os.path.join(self.root, "no-such-dir")
        r = subprocess.run([server_bin(), "--data", missing, "key", "show"], capture_output=True,
                           text=True, timeout=60)
        self.assertEqual(r.returncode, 1)
        self.assertIn(missing + " does not exist", r.stderr)
        self.assertNotIn("DIR", r.stderr)

    def test_server_key_changed_without_announcement_then_moved(self):
        # Case 6: a server whose key changed without announcement (a new data directory with the
        # same database) is refused with both fingerprints in the error, until `sotto server
        # trust NEWFP`; `sotto server set-address` follows the server to another port.
        alice, bob = self.pair()
        old_fp = self.server.fingerprint
        self.assertEqual(alice.send("bob", "before").returncode, 0)
        self.assertEqual([m["body"] for m in bob.messages()], ["before"])
        self.server.stop()
        moved = os.path.join(self.root, "server-new-key")
        os.makedirs(moved)
        for name in os.listdir(self.server.data):
            if name.startswith("sotto.db"):
                shutil.copy2(os.path.join(self.server.data, name), moved)
        self.server.data = moved
        self.server.start()
        new_fp = self.server.fingerprint
        self.assertNotEqual(new_fp, old_fp)

        error = alice.fails("receive", "--timeout", "5", code="fingerprint_mismatch")
        self.assertIn(new_fp, error["message"])
        self.assertIn(old_fp, error["message"])
        self.assertIn("sotto server trust FINGERPRINT", error["hint"])
        r = alice.run("receive", "--timeout", "5", json_output=False)
        self.assertEqual(r.returncode, 1)
        self.assertEqual(len(r.stderr.strip().splitlines()), 1, r.stderr)
        self.assertIn("sotto server trust", r.stderr)
        alice.fails("send", "bob", "not to this server", "--timeout", "5",
                    code="fingerprint_mismatch")
        alice.fails("server", "trust", "not-a-fingerprint", code="invalid_argument")
        self.assertEqual(json.loads(alice.ok("server", "show").stdout)["fingerprint"], old_fp)

        alice.ok("server", "trust", new_fp.upper())
        self.assertEqual(json.loads(alice.ok("server", "show").stdout)["fingerprint"], new_fp)
        r = alice.send("bob", "after trusting the new key")
        self.assertEqual(r.returncode, 0, r.stderr)
        bob.fails("receive", "--timeout", "5", code="fingerprint_mismatch")
        bob.ok("server", "trust", new_fp)
        self.assertEqual([m["body"] for m in bob.messages()], ["after trusting the new key"])

        # The same server on another port.
        self.server.stop()
        self.server.port = free_port()
        self.server.start()
        self.assertEqual(self.server.fingerprint, new_fp)
        alice.fails("send", "bob", "to the old address", "--timeout", "2", code="network")
        for c in (alice, bob):
            c.ok("server", "set-address", self.server.address)
            self.assertEqual(json.loads(c.ok("server", "show").stdout)["server"],
                             self.server.address)
        r = alice.send("bob", "after the move")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual([m["body"] for m in bob.messages()], ["after the move"])
    # --- recovery and backups (case 7) ------------------------------------------------------------

    def test_recovery_code_and_recover(self):
        # Case 7: register prints a recovery code (once, human and JSON); `recover` on a new data
        # directory takes the account back; the old device is refused afterwards; a wrong code is
        # refused and leaves no store or lock file behind; contacts see an identity change.
        code_re = re.compile(r"^[A-Z2-7]{4}(-[A-Z2-7]{4}){5}$")
        alice = self.client("alice")
        r = alice.ok("register", "alice", "--server", self.server.address, json_output=False)
        codes = [l.strip() for l in r.stdout.splitlines() if code_re.match(l.strip())]
        self.assertEqual(len(codes), 1, r.stdout)
        self.assertIn("shown only once", r.stdout)
        self.assertIn("every device is lost", r.stdout)
        self.assertIn("sotto recover alice --code CODE --server " + self.server.address, r.stdout)
        code = codes[0]
        bob = self.client("bob")
        info = bob.register("bob", self.server)
        self.assertRegex(info["recoveryCode"], code_re)
        self.assertNotEqual(info["recoveryCode"], code)
        self.assertEqual(alice.send("bob", "before recovery").returncode, 0)
        self.assertEqual([m["body"] for m in bob.messages()], ["before recovery"])

        # A wrong code: refused, nothing left behind.
        wrong = self.client("alice-wrong")
        bad = "AAAA-BBBB-CCCC-DDDD-EEEE-FFFF"
        error = wrong.fails("recover", "alice", "--code", bad, "--server", self.server.address,
                            code="forbidden")
        self.assertNotIn(bad, json.dumps(error))
        self.assertEqual(sorted(os.listdir(wrong.data)) if os.path.isdir(wrong.data) else [], [])

        alice2 = self.client("alice-recovered")
        recovered = alice2.recover("alice", code.lower().replace("-", " "), self.server)
        self.assertEqual(recovered["username"], "alice")
        self.assertEqual(recovered["server"], self.server.address)
        self.assertEqual(recovered["fingerprint"], self.server.fingerprint)
        self.assertRegex(recovered["recoveryCode"], code_re)
        self.assertNotEqual(recovered["recoveryCode"], code)
        devices = parse_lines(alice2.ok("devices").stdout)
        self.assertEqual([(d["current"], d["primary"]) for d in devices], [(True, True)])

        # The old device is refused; the old code no longer works.
        error = alice.fails("receive", "--timeout", "5", code="unauthenticated")
        self.assertIn("recover", error["hint"])
        error = alice.fails("send", "bob", "from the old device", "--timeout", "5",
                            code="unauthenticated")
        old = self.client("alice-old-code")
        old.fails("recover", "alice", "--code", code, "--server", self.server.address,
                  code="forbidden")
        self.assertEqual(sorted(os.listdir(old.data)) if os.path.isdir(old.data) else [], [])

        # bob sees alice's identity change with her first message from the new key.
        r = alice2.send("bob", "I am back")
        self.assertEqual(r.returncode, 0, r.stderr)
        events = bob.receive()
        self.assertIn(("identity_changed", "alice"),
                      [(e["type"], e.get("user")) for e in events], events)
        self.assertEqual(bob.contacts()["alice"]["held"], 1)
        self.assertGreater(bob.safety_number("alice")["changedAt"], 0)

    def test_backup_export_import_and_history_transfer(self):
        # Case 7: `backup export`, then `backup import` on the recovered device, restores the
        # history; a wrong passphrase or a damaged file is refused and changes nothing;
        # `link --transfer-history` brings the history to a new device.
        env = {"SOTTO_TEST_FAST_KDF": "1"}
        alice, bob = self.client("alice", env=env), self.client("bob", env=env)
        alice.register("alice", self.server)
        bob.register("bob", self.server)
        for body in ("one", "two"):
            self.assertEqual(alice.send("bob", body).returncode, 0)
        self.assertEqual([m["body"] for m in bob.messages()], ["one", "two"])
        self.assertEqual(bob.send("alice", "three").returncode, 0)
        self.assertEqual([m["body"] for m in alice.messages()], ["three"])
        conversation = ["one", "two", "three"]
        self.assertEqual(alice.history("bob"), conversation)

        passphrase = os.path.join(self.root, "passphrase")
        with open(passphrase, "w") as f:
            f.write("correct horse battery staple\n")
        backup = os.path.join(self.root, "alice.backup")
        out = json.loads(alice.ok("backup", "export", backup,
                                  "--backup-passphrase-file", passphrase).stdout)
        self.assertEqual(out, {"messages": 3})
        by_code = os.path.join(self.root, "alice-code.backup")
        out = alice.ok("backup", "export", by_code, "--recovery-code", alice.info["recoveryCode"],
                       json_output=False).stdout
        self.assertIn("3 messages", out)

        alice2 = self.client("alice-recovered", env=env)
        alice2.recover("alice", alice.info["recoveryCode"], self.server)
        self.assertEqual(alice2.history("bob"), [])

        # A wrong passphrase, a damaged file: refused, nothing imported.
        wrong_env = dict(env, SOTTO_BACKUP_PASSPHRASE="wrong horse")
        wrong = Client(self.root, "alice-recovered", env=wrong_env)
        wrong.fails("backup", "import", backup, code="wrong_passphrase")
        damaged = os.path.join(self.root, "damaged.backup")
        with open(backup, "rb") as f:
            data = bytearray(f.read())
        data[len(data) * 2 // 3] ^= 0x40
        with open(damaged, "wb") as f:
            f.write(data)
        alice2.fails("backup", "import", damaged, "--backup-passphrase-file", passphrase)
        truncated = os.path.join(self.root, "truncated.backup")
        with open(truncated, "wb") as f:
            f.write(data[:len(data) - 20])
        alice2.fails("backup", "import", truncated, "--backup-passphrase-file", passphrase)
        self.assertEqual(alice2.history("bob"), [])
        # No secret and no terminal: a clear error, not a hang.
        alice2.fails("backup", "import", backup, code="invalid_argument", stdin="")

        good = Client(self.root, "alice-recovered",
                      env=dict(env, SOTTO_BACKUP_PASSPHRASE="correct horse battery staple"))
        self.assertEqual(json.loads(good.ok("backup", "import", backup).stdout), {"messages": 3})
        self.assertEqual(alice2.history("bob"), conversation)
        # Importing again adds nothing; the recovery-code backup holds the same messages.
        self.assertEqual(json.loads(good.ok("backup", "import", backup).stdout), {"messages": 0})
        out = alice2.ok("backup", "import", by_code, "--recovery-code", alice.info["recoveryCode"])
        self.assertEqual(json.loads(out.stdout), {"messages": 0})
        self.assertEqual(alice2.history("bob"), conversation)

        # A new device asks for the history when it is linked.
        alice3, _ = self.link(alice2, "alice-laptop", "--transfer-history")
        self.assertEqual(alice3.history("bob"), conversation)

    def test_backup_files_and_secrets(self):
        # `backup export` refuses to replace a file without --force, refuses short passphrases,
        # writes a file only its owner can read, and warns that a recovery code given as an option
        # is not checked; typed on a terminal it is asked twice. `backup import` names a missing
        # file and asks for the kind of secret the backup was written with.
        env = {"SOTTO_TEST_FAST_KDF": "1"}
        alice, bob = self.client("alice", env=env), self.client("bob", env=env)
        alice.register("alice", self.server)
        bob.register("bob", self.server)
        self.assertEqual(bob.send("alice", "one").returncode, 0)
        self.assertEqual([m["body"] for m in alice.messages()], ["one"])
        code = alice.info["recoveryCode"]
        by_code = os.path.join(self.root, "by-code.backup")

        old_umask = os.umask(0o022)
        try:
            r = alice.run("backup", "export", by_code, "--recovery-code", code, json_output=False)
        finally:
            os.umask(old_umask)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("warning", r.stderr)
        self.assertIn("Keep that exact code", r.stderr)
        self.assertEqual(os.stat(by_code).st_mode & 0o777, 0o600)
        self.assertFalse(os.path.exists(by_code + ".partial"))
        error = alice.fails("backup", "export", by_code, "--recovery-code", code)
        self.assertIn("exists already", error["message"])
        self.assertIn("--force", error["message"])
        alice.ok("backup", "export", by_code, "--recovery-code", code, "--force")
        self.assertEqual(os.stat(by_code).st_mode & 0o777, 0o600)
        error = alice.fails("backup", "export", os.path.join(self.root, "x.backup"),
                            "--recovery-code", "ABCD-EFGH", code="invalid_argument")
        self.assertEqual(error["message"], "a recovery code has 24 characters (six groups of four)")
        short = Client(self.root, "alice", env=dict(env, SOTTO_BACKUP_PASSPHRASE="short"))
        error = short.fails("backup", "export", os.path.join(self.root, "short.backup"))
        self.assertIn("at least 8 characters", error["message"])
        self.assertFalse(os.path.exists(os.path.join(self.root, "short.backup")))

        missing = os.path.join(self.root, "no-such.backup")
        error = alice.fails("backup", "import", missing, code="invalid_argument")
        self.assertIn("does not exist", error["message"])
        self.assertIn(missing, error["message"])
        # A recovery-code backup without the code (a passphrase at hand, no terminal): the error
        # names what is needed.
        with_passphrase = Client(self.root, "alice",
                                 env=dict(env, SOTTO_BACKUP_PASSPHRASE="long enough passphrase"))
        error = with_passphrase.fails("backup", "import", by_code, stdin="")
        self.assertIn("encrypted with the account's recovery code", error["message"])
        self.assertIn("--recovery-code CODE", error["message"])
        by_passphrase = os.path.join(self.root, "by-passphrase.backup")
        with_passphrase.ok("backup", "export", by_passphrase)
        error = alice.fails("backup", "import", by_passphrase, "--recovery-code", code)
        self.assertIn("encrypted with a passphrase", error["message"])

        # On a terminal the recovery code is asked for (once to import, twice to export).
        status, out, err = run_on_terminal(alice, ["backup", "import", by_code],
                                           [("Recovery code: ", code)])
        self.assertEqual(status, 0, err)
        self.assertIn("Added 0 messages", out)
        self.assertNotIn("passphrase", err)
        typed = os.path.join(self.root, "typed.backup")
        status, out, err = run_on_terminal(
            alice, ["backup", "export", typed, "--recovery-code", "-"],
            [("Recovery code: ", code), ("again: ", "ABCD" * 6)])
        self.assertEqual(status, 1, out)
        self.assertIn("differ", err)
        self.assertFalse(os.path.exists(typed))
        status, out, err = run_on_terminal(
            alice, ["backup", "export", typed, "--recovery-code", "-"],
            [("Recovery code: ", code), ("again: ", code.lower().replace("-", " "))])
        self.assertEqual(status, 0, err)
        self.assertNotIn("warning", err)
        out = alice.ok("backup", "import", typed, "--recovery-code", code).stdout
        self.assertEqual(json.loads(out), {"messages": 0})

    # --- devices (case 8) -------------------------------------------------------------------------

    def test_device_names_primary_and_device_events(self):
        # Case 8: `link --name` shows in `devices` on both devices; a linked device cannot remove
        # the primary one (forbidden); device 1's receive reports the link and the removal.
        alice = self.client("alice")
        alice.register("alice", self.server)
        self.assertEqual(alice.receive(timeout_s=5), [])  # knows its device list from now on
        laptop, device = self.link(alice, "alice-laptop", "--name", "Work laptop")
        self.assertEqual(device, 2)
        for c, current in ((alice, 1), (laptop, 2)):
            devices = parse_lines(c.ok("devices").stdout)
            self.assertEqual([(d["id"], d["name"], d["primary"], d["current"]) for d in devices],
                             [(1, "", True, current == 1), (2, "Work laptop", False, current == 2)])
            for d in devices:
                self.assertGreater(d["createdDay"], 19000)
                self.assertIn("registrationId", d)
        text = alice.ok("devices", json_output=False).stdout
        self.assertIn('"Work laptop"', text)
        self.assertIn("primary", text.splitlines()[0])
        events = [e for e in alice.receive() if e["type"] == "devices_changed"]
        self.assertEqual([(e["added"], e["removed"]) for e in events], [([2], [])])

        error = laptop.fails("devices", "remove", "1", code="forbidden")
        self.assertIn("primary", error["message"])
        r = laptop.run("devices", "remove", "1", json_output=False)
        self.assertEqual(r.returncode, 1)
        self.assertEqual(len(r.stderr.strip().splitlines()), 1, r.stderr)
        self.assertIn("primary", r.stderr)
        self.assertEqual(len(parse_lines(alice.ok("devices").stdout)), 2)

        alice.ok("devices", "remove", "2")
        events = [e for e in alice.receive() if e["type"] == "devices_changed"]
        self.assertEqual([(e["added"], e["removed"]) for e in events], [([], [2])])
        self.assertEqual([d["id"] for d in parse_lines(alice.ok("devices").stdout)], [1])
        laptop.fails("receive", "--timeout", "5", code="unauthenticated")
        # A chat on the removed device stops by itself (its input still open), with status 1.
        for json_output in (True, False):
            p = laptop.popen("chat", "bob", json_output=json_output, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            self.procs.append(p)
            self.assertEqual(p.wait(timeout=20), 1)

    # --- smaller cases (case 10) ------------------------------------------------------------------

    def test_queue_depth_metric_after_restart(self):
        # Case 10: sotto_queue_depth (/metrics) equals the stored count after a restart with
        # messages queued, goes back to 0 once they are acknowledged, and never below.
        alice, bob = self.pair()
        self.assertEqual(self.server.metric("sotto_queue_depth"), 0)
        for i in range(3):
            self.assertEqual(alice.send("bob", "queued %d" % i).returncode, 0)
        self.assertEqual(self.server.metric("sotto_queue_depth"), 3)
        self.server.stop()
        self.server.start()
        self.assertEqual(self.server.metric("sotto_queue_depth"), 3)
        self.assertEqual(len(bob.messages()), 3)
        alice.receive()  # bob's delivery receipts
        self.assertEqual(self.server.metric("sotto_queue_depth"), 0)
        self.assertEqual(bob.messages(), [])  # a receive with nothing to acknowledge
        self.assertEqual(self.server.metric("sotto_queue_depth"), 0)
        self.server.stop()
        self.server.start()
        self.assertEqual(self.server.metric("sotto_queue_depth"), 0)
        self.assertEqual(alice.send("bob", "one more").returncode, 0)
        self.assertEqual([m["body"] for m in bob.messages()], ["one more"])
        alice.receive()
        self.assertEqual(self.server.metric("sotto_queue_depth"), 0)

    def test_server_config_data_key_and_sighup(self):
        # Case 10: the config file's `data` key is honoured (only --config given), and SIGHUP
        # reloads instead of killing the server.
        self.server.stop()
        data = os.path.join(self.root, "from-config")
        config = os.path.join(self.root, "server.toml")
        with open(config, "w") as f:
            f.write('data = "%s"\nlisten = "%s"\nhttp = "127.0.0.1:%d"\n'
                    % (data, self.server.address, self.server.http_port))
        self.server.start(args=["--config", config])
        self.assertTrue(os.path.exists(os.path.join(data, "sotto.db")))
        self.assertTrue(os.path.exists(os.path.join(data, "tls", "key.pem")))
        self.server.data = data
        alice, bob = self.pair()
        self.assertIn("result=ok", self.server.reload())
        self.assertIsNone(self.server.proc.poll())
        self.server.reload()
        self.assertEqual(alice.send("bob", "after two SIGHUPs").returncode, 0)
        self.assertEqual([m["body"] for m in bob.messages()], ["after two SIGHUPs"])

    def test_corrupt_history_row_hides_only_itself(self):
        # Case 10: one damaged row of alice's history (a flipped byte of one messages.body) does
        # not hide the rest of the conversation.
        alice, bob = self.pair()
        for body in ("first", "second", "third"):
            self.assertEqual(bob.send("alice", body).returncode, 0)
        self.assertEqual([m["body"] for m in alice.messages()], ["first", "second", "third"])
        db = sqlite3.connect(os.path.join(alice.data, "alice.db"))
        try:
            rows = db.execute("SELECT seq, body FROM messages ORDER BY seq").fetchall()
            self.assertEqual(len(rows), 3)
            seq, body = rows[1]
            damaged = bytearray(body)
            damaged[len(damaged) // 2] ^= 0x01
            db.execute("UPDATE messages SET body = ? WHERE seq = ?", (bytes(damaged), seq))
            db.commit()
        finally:
            db.close()
        r = alice.run("history", "bob")
        self.assertEqual(r.returncode, 0, r.stderr)
        bodies = [m["body"] for m in parse_lines(r.stdout)]
        self.assertIn("first", bodies)
        self.assertIn("third", bodies)
        self.assertNotIn("second", bodies)
        r = alice.run("history", "bob", json_output=False)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("third", r.stdout)

    def test_contacts_json_one_object_per_line(self):
        # Case 10: `contacts --json` prints one object per line (it printed an array).
        alice, bob = self.pair()
        carol = self.client("carol")
        carol.register("carol", self.server)
        self.assertEqual(alice.send("bob", "hi bob").returncode, 0)
        self.assertEqual(alice.send("carol", "hi carol").returncode, 0)
        lines = [l for l in alice.ok("contacts").stdout.splitlines() if l.strip()]
        self.assertEqual(len(lines), 2, lines)
        contacts = [json.loads(l) for l in lines]
        self.assertTrue(all(isinstance(c, dict) for c in contacts))
        self.assertEqual(sorted(c["username"] for c in contacts), ["bob", "carol"])
        for c in contacts:
            self.assertEqual(set(c), {"username", "accepted", "verified", "identityChangedAt",
                                      "identityKey", "held"})
            self.assertEqual((c["accepted"], c["verified"], c["held"]), (True, False, 0))
        text = alice.ok("contacts", json_output=False).stdout
        self.assertIn("bob  not verified", text)

    def test_block_sender_at_server(self):
        # A recipient blocks a sender at the server: nothing of theirs reaches any of the
        # recipient's devices (what was queued before is dropped unread), the sender is not told,
        # and after an unblock their messages arrive again.
        alice, bob = self.pair()
        mallory = self.client("mallory")
        mallory.register("mallory", self.server)
        alice2, _ = self.link(alice, "alice2")
        self.assertEqual(mallory.send("alice", "queued before the block").returncode, 0)

        self.assertEqual(json.loads(alice.ok("block", "Mallory").stdout), {"blocked": "mallory"})
        self.assertIn("Blocked mallory", alice.ok("block", "mallory", json_output=False).stdout)
        for c in (alice, alice2):  # the list is the account's
            self.assertEqual(parse_lines(c.ok("blocked").stdout), [{"username": "mallory"}])
        self.assertEqual(alice2.ok("blocked", json_output=False).stdout.strip(), "mallory")

        sent = mallory.send("alice", "sent while blocked")
        self.assertEqual(sent.returncode, 0, sent.stderr)  # not told
        self.assertEqual(bob.send("alice", "from bob").returncode, 0)
        for c in (alice, alice2):
            got = c.messages()
            self.assertEqual([(m["from"], m["body"]) for m in got], [("bob", "from bob")])
            self.assertNotIn("mallory", [m.get("from") for m in c.receive(5)])
            self.assertEqual(c.history("mallory"), [])

        # Bad input is refused and changes nothing.
        self.assertEqual(alice.fails("block", "no spaces", code="invalid_argument")["code"],
                         "invalid_argument")
        alice.fails("block", "nobody", code="not_found")
        alice.fails("block", "alice", code="invalid_argument")
        alice.fails("unblock", "x", code="invalid_argument")
        self.assertEqual(parse_lines(alice.ok("blocked").stdout), [{"username": "mallory"}])

        # Unblocked on the other device: mallory's next message reaches both.
        self.assertEqual(json.loads(alice2.ok("unblock", "mallory").stdout),
                         {"unblocked": "mallory"})
        self.assertEqual(alice.ok("blocked").stdout.strip(), "")
        self.assertEqual(alice.ok("blocked", json_output=False).stdout.strip(),
                         "No one is blocked.")
        self.assertEqual(mallory.send("alice", "after the unblock").returncode, 0)
        for c in (alice, alice2):
            self.assertEqual([(m["from"], m["body"]) for m in c.messages()],
                             [("mallory", "after the unblock")])

    def test_invite_codes_in_any_case(self):
        # An invite-only server accepts its codes in any case and without dashes (they are made
        # in lower case); a missing or unknown code gets a hint that says which it was.
        self.server.stop()
        self.server.start(args=["--data", self.server.data, "--listen", self.server.address,
                                "--http", "127.0.0.1:%d" % self.server.http_port,
                                "--invite-only"])
        codes = self.server.operator("invite", "create", "--count", "2").split()
        self.assertEqual(len(codes), 2)
        alice, bob, carol = self.client("alice"), self.client("bob"), self.client("carol")
        error = alice.fails("register", "alice", "--server", self.server.address)
        self.assertIn("--invite CODE", error["hint"])
        error = alice.fails("register", "alice", "--server", self.server.address,
                            "--invite", "aaaa-bbbb-cccc-dddd")
        self.assertIn("unknown", error["hint"])
        alice.register("alice", self.server, "--invite", codes[0].upper())
        bob.register("bob", self.server, "--invite", " " + codes[1].replace("-", "").upper())
        error = carol.fails("register", "carol", "--server", self.server.address,
                            "--invite", codes[0])
        self.assertIn("already used", error["hint"])

    def test_send_to_self_is_a_note(self):
        # A message to oneself with no other device is a note, not "0 device copies".
        alice = self.client("alice")
        alice.register("alice", self.server)
        out = alice.ok("send", "Alice", "remember the milk", json_output=False).stdout
        self.assertIn("Saved as a note to yourself (no other device", out)
        self.assertEqual(alice.history("alice"), ["remember the milk"])

    def test_error_texts_say_it_once(self):
        # The CLI's hint adds to the library's text without saying it again, and the text ends
        # as a sentence.
        alice = self.client("alice")
        alice.register("alice", self.server)
        alice.ok("register", "carol", "--server", self.server.address)  # a second account here
        r = alice.run("contacts", json_output=False)
        self.assertEqual(r.returncode, 1)
        self.assertEqual(r.stderr.lower().count("choose one"), 1, r.stderr)
        self.assertIn("--account NAME", r.stderr)
        r = self.client("other").run("recover", "alice", "--code", "ABCD-EFGH", "--server",
                                     self.server.address, json_output=False)
        self.assertEqual(r.returncode, 1)
        self.assertEqual(r.stderr.count("recovery code has"), 1, r.stderr)
        self.assertEqual(alice.run("--account", "alice", "send", "carol", "hi").returncode, 0)
        r = alice.run("--account", "alice", "trust", "carol", "--safety-number", "1" * 60,
                      json_output=False)
        self.assertEqual(r.returncode, 1)
        self.assertTrue(r.stderr.strip().endswith("."), r.stderr)

    def test_data_directory_problems_are_named(self):
        # A data directory that is missing, a file or unreadable is called so, with its path
        # (the library alone would find "no account" in each).
        missing = self.client("missing")
        error = missing.fails("contacts", code="no_account")
        self.assertIn("the data directory %s does not exist" % missing.data, error["message"])
        a_file = self.client("a-file")
        with open(a_file.data, "w") as f:
            f.write("not a directory\n")
        for args in (["contacts"], ["register", "x-user", "--server", self.server.address]):
            error = a_file.fails(*args)
            self.assertIn("the data directory %s is not a directory" % a_file.data,
                          error["message"])
        locked = self.client("locked")
        os.makedirs(locked.data, mode=0o000)
        os.chmod(self.root, 0o755)
        command = [sotto_bin(), "--data", locked.data, "--json", "contacts"]
        if os.geteuid() == 0:  # root reads anything: run as nobody
            if shutil.which("setpriv") is None:
                self.skipTest("running as root without setpriv")
            command = ["setpriv", "--reuid", "65534", "--regid", "65534",
                       "--clear-groups"] + command
        r = subprocess.run(command, capture_output=True, text=True, timeout=60)
        os.chmod(locked.data, 0o700)
        self.assertEqual(r.returncode, 1, r.stderr)
        error = json.loads(r.stderr)["error"]
        self.assertIn("the data directory %s cannot be read" % locked.data, error["message"])

    def test_command_line_errors(self):
        # What CLI11 refuses is reported like any other error: with --json one JSON object on
        # stderr, and status 1; an unknown command is called so. --help still exits with 0.
        alice = self.client("alice")
        error = alice.fails("devices", "remove", "abc", code="invalid_argument")
        self.assertIn("ID", error["message"])
        self.assertIn("sotto devices remove --help", error["hint"])
        error = alice.fails("send", "bob", code="invalid_argument")
        self.assertIn("TEXT is required", error["message"])
        error = alice.fails("send", "bob", "two", "words", code="invalid_argument")
        self.assertIn("Quote", error["hint"])
        for args in (["bogus"], ["backup", "bogus"]):
            r = alice.run(*args, json_output=False)
            self.assertEqual(r.returncode, 1)
            self.assertIn("unknown command `%s`" % " ".join(args), r.stderr)
            self.assertIn("--help", r.stderr)
            self.assertEqual(len(r.stderr.strip().splitlines()), 1, r.stderr)
        r = alice.run("--help", json_output=False)
        self.assertEqual(r.returncode, 0)
        self.assertIn("Usage", r.stdout)

    def test_first_key_under_policy_never_is_not_a_change(self):
        # With --trust-new-identities never, a new contact's first key is "not accepted yet", not
        # a "safety number changed".
        alice, bob = self.client("alice"), self.client("bob")
        alice.register("alice", self.server, "--trust-new-identities", "never")
        bob.register("bob", self.server)
        self.assertEqual(bob.send("alice", "hello").returncode, 0)
        alice.receive(timeout_s=5)
        contact = alice.contacts()["bob"]
        self.assertEqual((contact["accepted"], contact["identityChangedAt"]), (False, 0))
        text = alice.ok("contacts", json_output=False).stdout
        self.assertIn("bob  not accepted yet (the trust policy accepts only keys whose safety "
                      "number you verified", text)
        self.assertNotIn("changed", text)
        text = alice.ok("safety-number", "bob", json_output=False).stdout
        self.assertIn("bob's key is not accepted yet", text)
        self.assertNotIn("changed", text)

    def test_failed_registration_leaves_no_files(self):
        # Case 10: a registration refused by the server (taken username) leaves no USER.lock and
        # no USER.db behind, and its hint names `sotto recover`.
        alice = self.client("alice")
        alice.register("alice", self.server)
        other = self.client("other")
        error = other.fails("register", "alice", "--server", self.server.address,
                            code="account_exists")
        self.assertIn("taken", error["message"])
        self.assertIn("sotto recover alice --code CODE --server " + self.server.address,
                      error["hint"])
        left = os.listdir(other.data) if os.path.isdir(other.data) else []
        self.assertNotIn("alice.lock", left)
        self.assertNotIn("alice.db", left)
        self.assertEqual([n for n in left if n.startswith("alice")], [])
        # The directory is usable afterwards.
        other.register("other", self.server)

    def test_chat_commands_and_last_line(self):
        # Case 10: `chat` does not send "/help" (or any unknown /command), "//x" sends "/x", and
        # a last line without a trailing newline is sent. A message that cannot be sent makes
        # the exit status 1.
        alice, bob = self.pair()
        r = alice.run("chat", "bob", json_output=False,
                      stdin="/help\n/nonsense\n//slash\n/history 1\nhello")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("/safety-number", r.stdout)  # the help
        self.assertIn("/trust DIGITS", r.stdout)
        self.assertNotIn("disconnected", r.stdout)  # leaving is no news
        self.assertIn("unknown command /nonsense", r.stdout)
        self.assertEqual([m["body"] for m in bob.messages()], ["/slash", "hello"])
        r = alice.run("chat", "bob", stdin="no newline at the end")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual([m["body"] for m in bob.messages()], ["no newline at the end"])
        r = alice.run("chat", "bob", json_output=False, stdin="/safety-number\n/quit\nnot sent\n")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(alice.safety_number("bob")["digits"][:5], r.stdout)
        self.assertEqual(bob.messages(), [])
        # A message that cannot be sent (bob's key changed): exit status 1. The chat says so
        # when it starts, and says "not sent" once.
        bob2 = self.recovered("bob", bob, "bob-new")
        r = alice.run("chat", "bob", json_output=False, stdin="to the new key\n")
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("bob's safety number changed", r.stdout)
        self.assertIn("Nothing can be sent to bob until you accept it", r.stdout)
        self.assertIn("not sent", r.stdout)
        self.assertNotIn("not sent: not sent", r.stdout)
        self.assertNotIn("disconnected", r.stdout)
        # /trust with wrong digits changes nothing; plain /trust accepts the new key.
        r = alice.run("chat", "bob", json_output=False,
                      stdin="/trust 1234\n/trust\nafter /trust\n/quit\n")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("60 digits", r.stdout)
        self.assertIn("accepted, not verified", r.stdout)
        self.assertEqual([m["body"] for m in bob2.messages()], ["after /trust"])
        digits = alice.safety_number("bob")["digits"]
        r = alice.run("chat", "bob", json_output=False, stdin="/trust %s\n" % digits)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("bob is verified", r.stdout)
        self.assertNotIn("Nothing can be sent", r.stdout)

    def test_chat_with_empty_input_exits(self):
        # Case 10 (chat at end of input): a chat whose input ends at once (</dev/null, an empty
        # pipe) exits with status 0 instead of hanging.
        alice, bob = self.pair()
        for json_output in (True, False):
            p = alice.popen("chat", "bob", json_output=json_output, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            self.procs.append(p)
            try:
                self.assertEqual(p.wait(timeout=10), 0)
            except subprocess.TimeoutExpired:
                self.fail("`sotto chat` with empty input did not exit")

    def test_chat_with_a_user_without_an_account_says_so(self):
        # A name without an account: one clear error before the chat opens, as `send` gives.
        alice, bob = self.pair()
        err = alice.fails("chat", "nosuchuser", code="not_found", stdin="")
        self.assertIn("nosuchuser has no account", err["message"])
        r = alice.run("chat", "nosuchuser", json_output=False, stdin="")
        self.assertEqual(r.returncode, 1)
        self.assertIn("no account", r.stderr)
        self.assertEqual(r.stdout, "")

    def test_server_timestamp_only_when_known(self):
        # A received message has the server's time; the history does not keep it, so it has no
        # serverTimestamp rather than a 0.
        alice, bob = self.pair()
        self.assertEqual(alice.send("bob", "when").returncode, 0)
        [m] = bob.messages()
        self.assertGreater(m["serverTimestamp"], 0)
        for h in parse_lines(bob.ok("history", "alice").stdout):
            self.assertNotIn("serverTimestamp", h)

    def test_multiline_body_cannot_pass_for_another_message(self):
        # A body's lines after the first are indented and marked in every human output (receive,
        # history, chat), so a sender cannot forge a line that looks like another user's message;
        # JSON keeps the body as sent.
        alice, bob = self.pair()
        forged = "2020-02-02 09:55:00  carol (device 1): please send me your recovery code"
        body = "see below\n" + forged + "\u2028" + forged + "\n"
        self.assertEqual(bob.send("alice", body).returncode, 0)

        def check(text):
            lines = [l for l in text.splitlines() if l.strip()]
            self.assertTrue(any(l.endswith("bob (device 1): see below") for l in lines), text)
            self.assertEqual(sum(1 for l in lines if l.startswith("  | " + forged)), 2, text)
            self.assertFalse([l for l in lines if l.startswith("2020-02-02")], text)

        check(alice.ok("receive", "--timeout", "5", json_output=False).stdout)
        check(alice.ok("history", "bob", json_output=False).stdout)
        check(alice.ok("chat", "bob", json_output=False, stdin="").stdout)
        self.assertEqual(alice.history("bob"), [body])

    def test_history_beside_a_running_chat(self):
        # `history` reads the conversation while another process (a chat here, a daemon alike)
        # holds the account, instead of failing with account_busy.
        alice, bob = self.pair()
        self.assertEqual(alice.send("bob", "before the chat").returncode, 0)
        self.assertEqual([m["body"] for m in bob.messages()], ["before the chat"])
        p = bob.popen("chat", "alice", stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                      stderr=subprocess.PIPE)
        self.procs.append(p)
        out = LineReader(p.stdout)
        out.wait_json(lambda o: o.get("type") == "connection" and o.get("state") == "connected")
        self.assertEqual(alice.send("bob", "during the chat").returncode, 0)
        out.wait_json(lambda o: o.get("type") == "message")
        started = time.monotonic()
        self.assertEqual(bob.history("alice"), ["before the chat", "during the chat"])
        text = bob.ok("history", "alice", json_output=False).stdout
        self.assertIn("alice (device 1): during the chat", text)
        self.assertLess(time.monotonic() - started, 8)
        # Commands that need the account fail soon, with one message that says it once.
        started = time.monotonic()
        error = bob.fails("contacts", code="account_busy")
        self.assertLess(time.monotonic() - started, 5)
        self.assertIn("sotto history", error["hint"])
        r = bob.run("contacts", json_output=False)
        self.assertEqual(r.returncode, 1)
        self.assertEqual(len(r.stderr.strip().splitlines()), 1, r.stderr)
        self.assertNotIn("is using the account", r.stderr)
        p.stdin.close()
        self.assertEqual(p.wait(timeout=20), 0)


def main():
    global BIN_DIR
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--bin", required=True, help="CMake binary directory")
    parser.add_argument("--postgres", action="store_true",
                        help="run every server on a private PostgreSQL started for the run")
    args, rest = parser.parse_known_args()
    BIN_DIR = os.path.abspath(args.bin)
    for b in (sotto_bin(), server_bin()):
        if not os.access(b, os.X_OK):
            sys.stderr.write("missing binary: %s (build the sotto and sotto-server targets)\n" % b)
            return 1
    if args.postgres:
        global POSTGRES
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "util"))
        from private_postgres import PrivatePostgres
        POSTGRES = PrivatePostgres()
        POSTGRES.start()
    try:
        program = unittest.main(argv=[sys.argv[0]] + rest, exit=False, verbosity=2)
    finally:
        if POSTGRES:
            POSTGRES.stop()
    return 0 if program.result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main())
