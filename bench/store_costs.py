#!/usr/bin/env python3
"""The figures of docs/scaling.md: runs sotto-load against a sotto-server this script starts, on
SQLite or on a private PostgreSQL (tests/util/private_postgres.py), and reads around the run the
server's CPU time (utime + stime, /proc/PID/stat) and I/O (/proc/PID/io), and on PostgreSQL the
CPU of all its processes, the WAL position and pg_stat_database.xact_commit. Prints one JSON
object; divide by result.delivery.messages_accepted for per-message figures.

    python3 bench/store_costs.py sqlite|pg PHASES [sotto-load options]   # from the source tree,
    # after: cmake --build --preset release --target sotto-server sotto-load
"""
import json, os, shutil, subprocess, sys, tempfile, time, socket
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "util"))
B = os.environ.get("SOTTO_BUILD", os.path.join(ROOT, "build", "release")) + "/apps"
store = sys.argv[1]
phases = sys.argv[2]
extra = sys.argv[3:]
TICK = os.sysconf("SC_CLK_TCK")

def cpu(pid):
    f = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / TICK

def io(pid):
    return dict(l.split(": ") for l in open("/proc/%d/io" % pid).read().splitlines())

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

pg = None
d = tempfile.mkdtemp(prefix="sotto-measure-")
cfg = os.path.join(d, "load.toml")
open(cfg, "w").write("""registrations_per_minute = 1000000
logins_per_minute = 10000000
sends_per_minute = 10000000
send_bytes_per_minute = 1125899906842624
acks_per_minute = 100000000
logins_per_account_per_minute = 10000000
max_connections_per_address = 1000000
max_prelogin_per_address = 1000000
""")
args = [B + "/sotto-server/sotto-server", "--data", os.path.join(d, "data"), "--config", cfg,
        "--listen", "127.0.0.1:0", "--http", "127.0.0.1:%d" % free_port(), "--log-level", "warn"]
if store == "pg":
    from private_postgres import PrivatePostgres
    pg = PrivatePostgres(); pg.start()
    uri = pg.fresh_uri()
    subprocess.run(args[:3] + ["--store", uri, "migrate"], check=True, stdout=subprocess.DEVNULL)
    args += ["--store", uri]
log = open(os.path.join(d, "server.out"), "w+")
srv = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
fp = port = None
for _ in range(600):
    log.seek(0); t = log.read()
    for l in t.splitlines():
        if l.startswith("fingerprint: "): fp = l.split()[1]
        if l.startswith("listening on "): port = l.rsplit(":", 1)[1]
    if fp and port: break
    time.sleep(0.05)
def pg_state():
    if not pg: return None
    def ppid(x):
        try: return open("/proc/%s/stat" % x).read().rsplit(")", 1)[1].split()[1]
        except OSError: return None
    pids = [pg.proc.pid] + [int(x) for x in os.listdir("/proc") if x.isdigit() and ppid(x) == str(pg.proc.pid)]
    c = 0
    for p in pids:
        try: c += cpu(p)
        except OSError: pass
    row = pg.psql("select pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint, xact_commit from pg_stat_database where datname = current_database()").strip().split("|")
    return c, int(row[0]), int(row[1])
pg0 = pg_state()
c0, io0, t0 = cpu(srv.pid), io(srv.pid), time.monotonic()
r = subprocess.run([B + "/sotto-load/sotto-load", "--server", "127.0.0.1:" + port,
                    "--server-fingerprint", fp, "--server-pid", str(srv.pid), "--phases", phases,
                    "--json"] + extra, capture_output=True, text=True)
c1, io1, t1 = cpu(srv.pid), io(srv.pid), time.monotonic()
pg1 = pg_state()
srv.terminate(); srv.wait()
if pg: pg.stop()
shutil.rmtree(d, ignore_errors=True)
try:
    j = json.loads(r.stdout.strip().splitlines()[-1])
except Exception:
    print(r.stdout[-3000:], r.stderr[-3000:]); sys.exit(1)
out = {"store": store, "phases": phases, "server_cpu_s": round(c1 - c0, 2), "wall_s": round(t1 - t0, 1),
       "rchar": int(io1["rchar"]) - int(io0["rchar"]), "wchar": int(io1["wchar"]) - int(io0["wchar"]),
       "disk_write_bytes": int(io1["write_bytes"]) - int(io0["write_bytes"]),
       "load": os.getloadavg()[0], "result": j}
if pg0:
    out["pg_cpu_s"] = round(pg1[0] - pg0[0], 2)
    out["pg_wal_bytes"] = pg1[1] - pg0[1]
    out["pg_commits"] = pg1[2] - pg0[2]
print(json.dumps(out))
