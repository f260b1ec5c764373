#!/usr/bin/env python3
"""The main job, end to end (`make demo`): a local sotto-server on the embedded default (SQLite
under a temporary data directory, a self-signed certificate made on first start), two people
registering with the `sotto` command line, messages both ways, one while the recipient is
offline, and the safety number each of them sees. Every step is a real `sotto` process over TLS;
the commands are printed as a user would type them.

    python3 scripts/demo.py --bin build/dev [--keep]
"""

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Demo:
    def __init__(self, bin_dir, root):
        self.sotto = os.path.join(bin_dir, "apps", "sotto", "sotto")
        self.server_bin = os.path.join(bin_dir, "apps", "sotto-server", "sotto-server")
        for b in (self.sotto, self.server_bin):
            if not os.access(b, os.X_OK):
                sys.exit("demo: %s is missing; build first (make demo does)" % b)
        self.root = root
        self.port = free_port()
        self.http_port = free_port()
        self.address = "127.0.0.1:%d" % self.port
        self.server = None
        self.fingerprint = None
        self.env = dict(os.environ)
        self.env.pop("SOTTO_PASSPHRASE", None)

    # --- the server ---------------------------------------------------------------------------
    def start_server(self):
        data = os.path.join(self.root, "server")
        log_path = os.path.join(self.root, "server.log")
        cmd = [self.server_bin, "--data", data, "--listen", self.address,
               "--http", "127.0.0.1:%d" % self.http_port]
        self.say("$ sotto-server --data %s --listen %s" % (data, self.address))
        log = open(log_path, "wb")
        self.server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + 20
        text = ""
        while time.monotonic() < deadline:
            with open(log_path, "rb") as f:
                text = f.read().decode("utf-8", "replace")
            for line in text.splitlines():
                if line.startswith("fingerprint: "):
                    self.fingerprint = line.split(": ", 1)[1].strip()
            if "listening on" in text and self.fingerprint and self.accepting():
                break
            if self.server.poll() is not None:
                sys.exit("demo: sotto-server exited early:\n" + text)
            time.sleep(0.05)
        else:
            sys.exit("demo: sotto-server did not start:\n" + text)
        for line in text.splitlines():
            self.out(line)

    def accepting(self):
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    def queued_on_server(self):
        """The server's own count of stored envelopes (Prometheus /metrics, loopback only)."""
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % self.http_port, timeout=5) as r:
            for line in r.read().decode().splitlines():
                if line.startswith("sotto_queue_depth "):
                    return int(float(line.split()[1]))
        return None

    def stop_server(self):
        if self.server and self.server.poll() is None:
            self.say("$ kill -TERM <sotto-server>   (graceful: in-flight commits finish)")
            self.server.send_signal(signal.SIGTERM)
            try:
                self.server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.server.kill()
                self.server.wait()
            self.out("sotto-server exited with status %d" % self.server.returncode)
        self.server = None

    # --- clients ------------------------------------------------------------------------------
    def sotto_cmd(self, who, *args):
        data = os.path.join(self.root, who)
        self.say("%s$ sotto %s" % (who, " ".join(quote(a) for a in args)))
        r = subprocess.run([self.sotto, "--data", data] + list(args), capture_output=True,
                           text=True, timeout=120, env=self.env)
        for line in r.stdout.splitlines():
            self.out(line)
        if r.returncode != 0:
            for line in r.stderr.splitlines():
                self.out(line)
            raise SystemExit("demo: `sotto %s` failed with status %d" % (" ".join(args), r.returncode))
        return r.stdout

    # --- output -------------------------------------------------------------------------------
    @staticmethod
    def step(title):
        print("\n== %s" % title, flush=True)

    @staticmethod
    def say(text):
        print(text, flush=True)

    @staticmethod
    def out(text):
        print("    " + text, flush=True)


def quote(arg):
    return "'%s'" % arg if (" " in arg or "'" in arg or not arg) else arg


def digits_of(text):
    """The 60 digits of `sotto safety-number`'s human output (lines of 5-digit groups)."""
    groups = []
    for line in text.splitlines():
        words = line.split()
        if words and all(len(w) == 5 and w.isdigit() for w in words):
            groups += words
    return "".join(groups)


def run(demo):
    demo.step("A local server on the embedded default (SQLite, self-signed TLS certificate)")
    demo.start_server()

    demo.step("Alice and Bob register; each pins the server's key (the SHA-256 of its public key, "
              "printed by sotto-server as `fingerprint:`)")
    demo.sotto_cmd("alice", "register", "alice", "--server", demo.address,
                   "--server-fingerprint", demo.fingerprint)
    demo.sotto_cmd("bob", "register", "bob", "--server", demo.address,
                   "--server-fingerprint", demo.fingerprint)

    demo.step("Alice writes to Bob (X3DH from Bob's prekey bundle, then the Double Ratchet)")
    demo.sotto_cmd("alice", "send", "bob", "Hi Bob! Are we still on for Friday?")
    demo.sotto_cmd("bob", "receive", "--timeout", "20")

    demo.step("Bob answers")
    demo.sotto_cmd("bob", "send", "alice", "Yes - 7pm at the usual place.")
    demo.sotto_cmd("alice", "receive", "--timeout", "20")

    demo.step("Bob is offline; Alice writes anyway: the server keeps only ciphertext for him")
    demo.sotto_cmd("alice", "send", "bob", "Bring the map, please.")
    queued = demo.queued_on_server()
    demo.out("(the server's /metrics: %s envelope(s) queued, unreadable to it)" % queued)

    demo.step("Bob comes back online and gets what he missed")
    demo.sotto_cmd("bob", "receive", "--timeout", "20")

    demo.step("Carol joins them in a group: its members' clients hold it; the server never learns "
              "who is in it")
    demo.sotto_cmd("carol", "register", "carol", "--server", demo.address,
                   "--server-fingerprint", demo.fingerprint)
    group = demo.sotto_cmd("alice", "group", "create", "Friday", "--member", "bob",
                           "--member", "carol").strip()
    demo.sotto_cmd("bob", "receive", "--timeout", "20")
    demo.sotto_cmd("carol", "receive", "--timeout", "20")

    demo.step("Bob sends the group the map: the file is encrypted before upload, one message "
              "reaches every member's devices")
    map_file = os.path.join(demo.root, "map.txt")
    with open(map_file, "w") as f:
        f.write("The usual place: second street on the left, blue door.\n")
    demo.sotto_cmd("bob", "send", "--group", group, "Here is the map", "--attach", map_file)
    for who in ("alice", "carol"):
        demo.sotto_cmd(who, "receive", "--timeout", "20", "--attachments-dir",
                       os.path.join(demo.root, who + "-files"))

    demo.step("Both compare the safety number (in person, or by scanning each other's QR code)")
    a = demo.sotto_cmd("alice", "safety-number", "bob")
    b = demo.sotto_cmd("bob", "safety-number", "alice")
    da, db = digits_of(a), digits_of(b)
    same = len(da) == 60 and da == db
    demo.say("alice sees %s" % " ".join(da[i:i + 5] for i in range(0, 60, 5)))
    demo.say("bob   sees %s" % " ".join(db[i:i + 5] for i in range(0, 60, 5)))
    demo.say("-> the same number: no one is in the middle" if same else "-> DIFFERENT numbers")
    return same


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bin", required=True, help="CMake binary directory (e.g. build/dev)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data directories")
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix="sotto-demo-")
    demo = Demo(os.path.abspath(args.bin), root)
    ok = False
    try:
        ok = run(demo)
    finally:
        demo.step("Stopping the server")
        demo.stop_server()
        if args.keep:
            print("\ndata kept in %s" % root)
        else:
            shutil.rmtree(root, ignore_errors=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
