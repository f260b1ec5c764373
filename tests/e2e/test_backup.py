#!/usr/bin/env python3
"""Back up and restore a server with the commands docs/operations.md documents, over real
`sotto-server` and `sotto` processes:

- SQLite: `sqlite3 DIR/sotto.db ".backup FILE"` while the server runs, and `cp -a DIR/tls DIR/kt
  DIR/blobs`; with --postgres also PostgreSQL (a private one, tests/util/private_postgres.py):
  `pg_dump -Fc` while the server runs, then `dropdb`, `createdb`, `pg_restore --no-owner` and
  `sotto-server migrate`;
- the copies restored into a new, empty data directory, and a server started on it;
- the restored server presents the same key fingerprint (clients keep their pin), a message
  queued before the backup reaches its recipient, and one acknowledged after the backup was taken
  is gone with the restore (as the documentation warns).

    python3 tests/e2e/test_backup.py --bin BUILD_DIR [--postgres] [unittest options]
"""
import os
import shutil
import subprocess
import sys
import tempfile
import unittest
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "util"))
import test_e2e  # noqa: E402
from test_e2e import Client, Server  # noqa: E402

WITH_POSTGRES = False


def copy_identity(src, dst):
    """`cp -a SRC/tls SRC/kt SRC/blobs DST/`, as the documentation does it."""
    for sub in ("tls", "kt", "blobs"):
        if os.path.isdir(os.path.join(src, sub)):
            subprocess.run(["cp", "-a", os.path.join(src, sub), dst + "/"], check=True,
                           timeout=120)


def kt_keys(server):
    """The transparency log's public keys the server printed at its last start."""
    lines = [l for l in server.log().splitlines() if l.startswith("kt keys: ")]
    return lines[-1] if lines else None


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
        log_keys = kt_keys(server)
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
        copy_identity(server.data, backup)
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
        copy_identity(backup, restored)
        server.data = restored
        server.start()
        self.assertEqual(server.fingerprint, fingerprint)
        self.assertEqual(kt_keys(server), log_keys)  # clients keep their pin of the log's keys

        bodies = [m["body"] for m in bob.messages()]
        self.assertEqual(bodies, ["queued before the backup"])
        # Both accounts still log in and talk on the restored server.
        r = bob.send("alice", "after the restore")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("after the restore", [m["body"] for m in alice.messages()])


class PostgresBackup(unittest.TestCase):
    def setUp(self):
        if not WITH_POSTGRES:
            self.skipTest("PostgreSQL only with --postgres (CTest e2e_backup_postgres)")
        from private_postgres import PrivatePostgres
        self.pg = PrivatePostgres()
        self.pg.start()
        self.root = tempfile.mkdtemp(prefix="sotto-pg-backup-e2e-")
        self.server = Server(self.root)
        self.env = dict(os.environ, PGHOST=self.pg.dir, PGPORT="5432", PGUSER="postgres")
        self.pg_tool("createdb", "sotto")
        self.server.store = "postgresql://postgres@%s:5432/sotto" % urllib.parse.quote(
            self.pg.dir, safe="")

    def tearDown(self):
        if hasattr(self, "server"):
            self.server.stop()
            shutil.rmtree(self.root, ignore_errors=True)
        if hasattr(self, "pg"):
            self.pg.stop()

    def pg_tool(self, *args):
        r = subprocess.run([os.path.join(self.pg.bin_dir, args[0])] + list(args[1:]),
                           env=self.env, capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, "%s: %s" % (" ".join(args), r.stderr))
        return r.stdout

    def test_dump_restores_queue_and_identity(self):
        server = self.server
        self.assertIn("schema migrated", server.operator("migrate"))
        server.start()
        fingerprint = server.fingerprint
        alice = Client(self.root, "alice")
        bob = Client(self.root, "bob")
        alice.register("alice", server)
        bob.register("bob", server)
        r = alice.send("bob", "queued before the dump")
        self.assertEqual(r.returncode, 0, r.stderr)

        backup = os.path.join(self.root, "backup")
        os.makedirs(backup)
        dump = os.path.join(backup, "sotto.dump")
        self.pg_tool("pg_dump", "-Fc", "-f", dump, "sotto")
        copy_identity(server.data, backup)
        r = alice.send("bob", "sent after the dump")
        self.assertEqual(r.returncode, 0, r.stderr)
        server.stop()

        self.pg_tool("dropdb", "sotto")
        self.pg_tool("createdb", "sotto")
        self.pg_tool("pg_restore", "-d", "sotto", "--no-owner", "--role=postgres", dump)
        restored = os.path.join(self.root, "restored")
        os.makedirs(restored, mode=0o700)
        copy_identity(backup, restored)
        server.data = restored
        self.assertIn("current", server.operator("migrate"))
        server.start()
        self.assertEqual(server.fingerprint, fingerprint)
        self.assertEqual([m["body"] for m in bob.messages()], ["queued before the dump"])


def main():
    import argparse
    global WITH_POSTGRES
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--bin", required=True)
    parser.add_argument("--postgres", action="store_true")
    args, rest = parser.parse_known_args()
    WITH_POSTGRES = args.postgres
    test_e2e.BIN_DIR = os.path.abspath(args.bin)
    program = unittest.main(argv=[sys.argv[0]] + rest, exit=False, verbosity=2)
    return 0 if program.result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main())
