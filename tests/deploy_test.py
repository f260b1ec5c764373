#!/usr/bin/env python3
"""The shipped deployment files (deploy/) stay usable:

- every config under deploy/config is accepted by `sotto-server check-config` (so no key in them
  is unknown, mistyped or out of range), and a config with an unknown key, a value out of range or
  a certificate file that does not load is refused with exit 1 and the reason;
- the systemd unit's LimitNOFILE leaves room for each config's max_connections plus the
  descriptors the server keeps for itself (else the server clamps max_connections at start);
- the unit passes `systemd-analyze verify` with no finding (skipped without systemd);
- deploy/haproxy/haproxy.cfg passes `haproxy -c` (skipped when haproxy is not installed).

    python3 tests/deploy_test.py --server BUILD/apps/sotto-server/sotto-server --source SRC
"""
import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

SERVER = None
SOURCE = None
RESERVED_DESCRIPTORS = 128  # apps/sotto-server/main.cpp: kReservedDescriptors


def read(path):
    with open(path) as f:
        return f.read()


def check_config(path):
    return subprocess.run([SERVER, "--config", path, "check-config"], capture_output=True,
                          text=True, timeout=60)


class DeployFiles(unittest.TestCase):
    def configs(self):
        found = sorted(glob.glob(os.path.join(SOURCE, "deploy", "config", "*.toml")))
        self.assertGreaterEqual(len(found), 2, "deploy/config has the single-node and "
                                "PostgreSQL configs")
        return found

    def test_every_shipped_config_is_accepted(self):
        for path in self.configs():
            with self.subTest(config=os.path.basename(path)):
                r = check_config(path)
                self.assertEqual(r.returncode, 0, r.stderr)
                self.assertIn("config ok: " + path, r.stdout)

    def test_check_config_refuses_an_unknown_key_a_bad_value_and_a_missing_certificate(self):
        with tempfile.TemporaryDirectory() as d:
            base = read(os.path.join(SOURCE, "deploy", "config", "single-node.toml"))
            cases = {"max_conections = 10\n": "max_conections",
                     "max_connections = 0\n": "max_connections"}
            for extra, key in cases.items():
                with self.subTest(key=key):
                    path = os.path.join(d, "server.toml")
                    with open(path, "w") as f:
                        f.write(base.replace("max_connections = 60000\n", "") + extra)
                    r = check_config(path)
                    self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
                    self.assertIn(key, r.stderr)
                    self.assertNotIn("config ok", r.stdout)
            # A certificate the config names must load.
            path = os.path.join(d, "server.toml")
            with open(path, "w") as f:
                f.write(base + 'tls_certificate = "%s/missing.pem"\n'
                        'tls_private_key = "%s/missing-key.pem"\n' % (d, d))
            r = check_config(path)
            self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
            self.assertIn("TLS certificate", r.stderr)
            # check-config touches nothing: the data directory it names is not created.
            data = os.path.join(d, "data")
            path = os.path.join(d, "server.toml")
            with open(path, "w") as f:
                f.write(base.replace('data = "/var/lib/sotto"', 'data = "%s"' % data))
            r = check_config(path)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertFalse(os.path.exists(data))

    def test_unit_descriptor_limit_fits_max_connections(self):
        unit = read(os.path.join(SOURCE, "deploy", "systemd", "sotto-server.service"))
        limit = int(re.search(r"^LimitNOFILE=(\d+)$", unit, re.M).group(1))
        for path in self.configs():
            m = re.search(r"^max_connections\s*=\s*(\d+)", read(path), re.M)
            wanted = int(m.group(1)) if m else 60000
            with self.subTest(config=os.path.basename(path)):
                self.assertLessEqual(wanted + RESERVED_DESCRIPTORS, limit)
        for line in ("User=sotto", "StateDirectory=sotto", "ProtectSystem=strict",
                     "NoNewPrivileges=yes", "PrivateTmp=yes", "Restart=on-failure",
                     "ExecReload=/bin/kill -HUP $MAINPID", "KillSignal=SIGTERM"):
            self.assertIn("\n" + line + "\n", unit)

    def test_unit_passes_systemd_analyze_verify(self):
        analyze = shutil.which("systemd-analyze")
        if not analyze:
            self.skipTest("systemd-analyze is not installed")
        unit = read(os.path.join(SOURCE, "deploy", "systemd", "sotto-server.service"))
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "sotto-server.service")
            with open(path, "w") as f:
                f.write(unit.replace("/usr/local/bin/sotto-server", SERVER))
            r = subprocess.run([analyze, "verify", path], capture_output=True, text=True,
                               timeout=60)
        # verify exits 0 on unknown keys too: any line it prints about the unit is a finding.
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        findings = [line for line in (r.stdout + r.stderr).splitlines()
                    if "sotto-server.service" in line]
        self.assertEqual(findings, [])

    def test_haproxy_config_is_valid(self):
        haproxy = shutil.which("haproxy") or (
            "/usr/sbin/haproxy" if os.access("/usr/sbin/haproxy", os.X_OK) else None)
        if not haproxy:
            self.skipTest("haproxy is not installed (scripts/bootstrap installs it)")
        r = subprocess.run([haproxy, "-c", "-f",
                            os.path.join(SOURCE, "deploy", "haproxy", "haproxy.cfg")],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)


def main():
    global SERVER, SOURCE
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--server", required=True)
    parser.add_argument("--source", required=True)
    args, rest = parser.parse_known_args()
    SERVER = os.path.abspath(args.server)
    SOURCE = os.path.abspath(args.source)
    program = unittest.main(argv=[sys.argv[0]] + rest, exit=False, verbosity=2)
    return 0 if program.result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main())
