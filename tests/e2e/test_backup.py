#!/usr/bin/env python3
"""Back up and restore an SQLite server with the commands docs/operations.md documents, over real
`sotto-server` and `sotto` processes:

- `sqlite3 DIR/sotto.db ".backup FILE"` while the server runs, and `cp -a DIR/tls DIR/blobs`;
- the copies restored into a new, empty data directory, and a server started on it;
- the restored server presents the same key fingerprint (clients keep their pin), a message
  queued before the backup reaches its recipient, and one acknowledged after the backup was taken
  is gone with the restore (as the documentation warns).

    python3 tests/e2e/test_backup.py --bin BUILD_DIR [unittest options]
"""
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_e2e  # noqa: E402
from test_e2e import Client, Server  # noqa: E402


class SqliteBackup(unittest.TestCase):
    def setUp(self):
        if not shutil.which("sqlite3"):
            self.skipTest("the sqlite3 command-line shell is not installed (scripts/bootstrap)")
        self.root = tempfile.mkdtemp(prefix="sotto-backup-e2e-")
        self.server = Server(self.root)

    def tearDown(self):
        self.server.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def test_online_backup_restores_queue_and_identity(self):
        server = self.server
        server.start()
        fingerprint = server.fingerprint
        alice = Client(self.root, "alice")
        bob = Client(self.root, "bob")
        alice.register("alice", server)
        bob.register("bob", server)
        # bob is offline: the message waits in the server's queue.
        r = alice.send("bob", "queued before the backup")
        self.assertEqual(r.returncode, 0, r.stderr)

        # The documented backup, with the server running.
        backup = os.path.join(self.root, "backup")
        os.makedirs(backup)
        db = os.path.join(server.data, "sotto.db")
        subprocess.run(["sqlite3", db, ".backup " + os.path.join(backup, "sotto.db")],
                       check=True, timeout=120)
        for sub in ("tls", "blobs"):
            if os.path.isdir(os.path.join(server.data, sub)):
                subprocess.run(["cp", "-a", os.path.join(server.data, sub), backup + "/"],
                               check=True, timeout=120)
        self.assertTrue(server.proc.poll() is None, "the server kept running during the backup")

        # Acknowledged after the backup: lost with the restore.
        r = alice.send("bob", "sent after the backup")
        self.assertEqual(r.returncode, 0, r.stderr)
        server.stop()

        # Restore into a new data directory and start a server on it (same address: clients
        # keep their configured server).
        restored = os.path.join(self.root, "restored")
        os.makedirs(restored, mode=0o700)
        shutil.copy2(os.path.join(backup, "sotto.db"), os.path.join(restored, "sotto.db"))
        for sub in ("tls", "blobs"):
            if os.path.isdir(os.path.join(backup, sub)):
                subprocess.run(["cp", "-a", os.path.join(backup, sub), restored + "/"],
                               check=True, timeout=120)
        server.data = restored
        server.start()
        self.assertEqual(server.fingerprint, fingerprint)

        bodies = [m["body"] for m in bob.messages()]
        self.assertEqual(bodies, ["queued before the backup"])
        # Both accounts still log in and talk on the restored server.
        r = bob.send("alice", "after the restore")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("after the restore", [m["body"] for m in alice.messages()])


def main():
    import argparse
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--bin", required=True)
    args, rest = parser.parse_known_args()
    test_e2e.BIN_DIR = os.path.abspath(args.bin)
    program = unittest.main(argv=[sys.argv[0]] + rest, exit=False, verbosity=2)
    return 0 if program.result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main())
