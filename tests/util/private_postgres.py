"""A private PostgreSQL server for process tests (the `cluster` label): initdb in a fresh temporary
directory, postgres listening only on a Unix socket in that directory, stopped and removed by
stop(). As root (CI) PostgreSQL refuses to run, so initdb and postgres run as the unprivileged
`postgres` user (the directory is made theirs); the test, as root, still reaches the socket.
The C++ tests have the same in tests/util/postgres_server.h. Python 3 standard library only.

    with PrivatePostgres() as pg:
        uri = pg.fresh_uri()   # postgresql://... in a new, empty schema
"""
import ctypes
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.parse

PORT = 5432  # only names the socket file: the directory is private
PR_SET_PDEATHSIG = 1


def find_bin_dir():
    """PostgreSQL's server binaries: SOTTO_PG_BIN, else the newest /usr/lib/postgresql/*/bin."""
    env = os.environ.get("SOTTO_PG_BIN")
    if env:
        return env
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                  key=lambda d: int(d.split("/")[-2]) if d.split("/")[-2].isdigit() else 0)
    for d in reversed(dirs):
        if os.access(os.path.join(d, "initdb"), os.X_OK):
            return d
    return None


class PrivatePostgres:
    def __init__(self, bin_dir=None):
        self.bin_dir = bin_dir or find_bin_dir()
        if not self.bin_dir:
            raise RuntimeError("PostgreSQL server binaries not found (set SOTTO_PG_BIN)")
        self.dir = None
        self.proc = None
        self.uid = None
        self.gid = None
        self._schemas = 0

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

    def _as_owner(self):
        uid, gid = self.uid, self.gid

        def drop():
            os.setsid()
            if uid is not None:
                os.setgroups([])
                os.setgid(gid)
                os.setuid(uid)
            # After setuid (a change of credentials clears it): SIGINT when the test dies first.
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGINT)
        return drop

    def start(self):
        self.dir = tempfile.mkdtemp(prefix="sotto-pg-")
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            self.uid, self.gid = pw.pw_uid, pw.pw_gid
            os.chown(self.dir, self.uid, self.gid)
        log = os.path.join(self.dir, "initdb.log")
        with open(log, "ab") as out:
            r = subprocess.run([os.path.join(self.bin_dir, "initdb"), "-D",
                                os.path.join(self.dir, "data"), "-A", "trust", "-U", "postgres",
                                "-E", "UTF8", "--locale=C", "--no-sync"],
                               stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                               preexec_fn=self._as_owner())
        if r.returncode != 0:
            text = open(log).read()
            shutil.rmtree(self.dir, ignore_errors=True)
            raise RuntimeError("initdb failed:\n" + text)
        self._start_server()

    def _start_server(self):
        log = open(os.path.join(self.dir, "postgres.log"), "ab")
        self.proc = subprocess.Popen(
            [os.path.join(self.bin_dir, "postgres"), "-D", os.path.join(self.dir, "data"),
             "-k", self.dir, "-p", str(PORT), "-c", "listen_addresses=",
             "-c", "max_connections=300", "-c", "shared_buffers=32MB"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            preexec_fn=self._as_owner())
        log.close()
        # A deadline for the start, not a test assertion.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("postgres exited at start:\n" + self.log())
            r = subprocess.run([os.path.join(self.bin_dir, "pg_isready"), "-q", "-h", self.dir,
                                "-p", str(PORT)], stdin=subprocess.DEVNULL)
            if r.returncode == 0:
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("postgres did not accept connections")

    def log(self):
        with open(os.path.join(self.dir, "postgres.log"), "rb") as f:
            return f.read().decode("utf-8", "replace")

    def psql(self, sql):
        psql = os.path.join(self.bin_dir, "psql")
        if not os.access(psql, os.X_OK):
            psql = "psql"
        r = subprocess.run([psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", self.dir, "-p",
                            str(PORT), "-U", "postgres", "-d", "postgres", "-At", "-c", sql],
                           capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if r.returncode != 0:
            raise RuntimeError("psql failed: " + r.stderr)
        return r.stdout

    def uri(self, schema=None):
        """A postgresql:// URI for the server's `postgres` database (in `schema` when given)."""
        u = "postgresql://postgres@%s:%d/postgres" % (urllib.parse.quote(self.dir, safe=""), PORT)
        if schema:
            u += "?options=" + urllib.parse.quote("-csearch_path=" + schema, safe="")
        return u

    def fresh_uri(self):
        """A new, empty schema and the URI that works in it."""
        self._schemas += 1
        name = "e%d" % self._schemas
        self.psql("DROP SCHEMA IF EXISTS %s CASCADE; CREATE SCHEMA %s" % (name, name))
        return self.uri(name)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # fast shutdown
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
