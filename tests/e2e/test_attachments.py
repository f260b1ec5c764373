#!/usr/bin/env python3
"""End-to-end tests of attachments (docs/attachments.md): real `sotto-server` and `sotto`
processes over TLS.

    python3 tests/e2e/test_attachments.py --bin BUILD_DIR [unittest options]

SOTTO_E2E_ATTACHMENT_MIB sets the size of the large round trip (default 200). Under ASan the
CMake test passes a smaller size: the sanitizers slow the encryption and hashing of every byte
several times over, and the memory bound is what the test is about, not the size.
"""

import base64
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_e2e  # noqa: E402
from test_e2e import Client, Server, parse_lines  # noqa: E402

BIG_MIB = int(os.environ.get("SOTTO_E2E_ATTACHMENT_MIB", "200"))
MEMORY_LIMIT_KIB = 64 * 1024
# Under ASan a process starts near 100 MB (shadow memory, the allocator's own pools), which says
# nothing of what the code holds: there the test checks that the big file's peak is within
# GROWTH_LIMIT_KIB of a 1 MiB file's, i.e. that memory does not grow with the file (a buffer of
# the whole file would add at least BIG_MIB). The dev build checks the absolute bound.
SANITIZED = os.environ.get("SOTTO_E2E_SANITIZED") == "1"
GROWTH_LIMIT_KIB = 40 * 1024
# A sanitized process would keep up to 256 MB of freed memory in ASan's quarantine, which says
# nothing of what the code holds: keep it small (the server and clients inherit this).
if "quarantine_size_mb" not in os.environ.get("ASAN_OPTIONS", ""):
    os.environ["ASAN_OPTIONS"] = ":".join(filter(None, [
        os.environ.get("ASAN_OPTIONS", ""),
        "quarantine_size_mb=8:thread_local_quarantine_size_kb=256"]))


def write_random(path, size, seed):
    """A file of `size` pseudo-random bytes (SHAKE-256 of the seed: fast and reproducible);
    returns its SHA-256."""
    digest = hashlib.sha256()
    block = 1 << 20
    with open(path, "wb") as f:
        i = 0
        while size > 0:
            n = min(block, size)
            data = hashlib.shake_256(b"%d-%d" % (seed, i)).digest(n)
            f.write(data)
            digest.update(data)
            size -= n
            i += 1
    return digest.hexdigest()


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            data = f.read(1 << 20)
            if not data:
                return digest.hexdigest()
            digest.update(data)


def vm_hwm_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM for %d" % pid)


def make_png(path, width, height):
    """A real PNG (8-bit RGB, written with zlib): the left half red, the right half blue."""
    import struct
    import zlib

    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data +
                struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    row = b"\x00" + b"\xff\x00\x00" * (width // 2) + b"\x00\x00\xff" * (width - width // 2)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        f.write(chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)))
        f.write(chunk(b"IDAT", zlib.compress(row * height)))
        f.write(chunk(b"IEND", b""))


def jpeg_size(data):
    """(width, height) from a JPEG's start-of-frame, asserting the JPEG's markers on the way."""
    assert data[:3] == b"\xff\xd8\xff", data[:4]
    at = 2
    while at + 4 <= len(data):
        assert data[at] == 0xFF, at
        marker = data[at + 1]
        length = int.from_bytes(data[at + 2:at + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return (int.from_bytes(data[at + 7:at + 9], "big"),
                    int.from_bytes(data[at + 5:at + 7], "big"))
        at += 2 + length
    raise AssertionError("no frame header")


class AttachmentTest(unittest.TestCase):
    config = ""

    def setUp(self):
        self.root = tempfile.mkdtemp(prefix="sotto-attach-e2e-")
        self.server = Server(self.root)
        os.makedirs(self.server.data, exist_ok=True)
        config = os.path.join(self.root, "server.toml")
        with open(config, "w") as f:
            f.write(self.config)
        self.server.start(args=["--config", config, "--data", self.server.data,
                                "--listen", self.server.address,
                                "--http", "127.0.0.1:%d" % self.server.http_port])
        self.alice = Client(self.root, "alice")
        self.bob = Client(self.root, "bob")
        self.alice.register("alice", self.server)
        self.bob.register("bob", self.server)
        self.inbox = os.path.join(self.root, "inbox")

    def tearDown(self):
        self.server.stop()
        import shutil
        shutil.rmtree(self.root, ignore_errors=True)

    def blobs(self):
        d = os.path.join(self.server.data, "blobs")
        return {name: os.path.getsize(os.path.join(d, name)) for name in os.listdir(d)}

    def receive(self, *extra):
        r = self.bob.ok("receive", "--timeout", "20", "--attachments-dir", self.inbox, *extra,
                        timeout=600)
        return [e for e in parse_lines(r.stdout) if e.get("type") == "message"]


class RoundTrip(AttachmentTest):
    config = 'max_attachment_bytes = %d\nattachment_quota_bytes = %d\n' % (
        (BIG_MIB + 16) << 20, (4 * BIG_MIB + 64) << 20)

    def test_small_files_text_history_and_no_plaintext_on_the_server(self):
        png = os.path.join(self.root, "picture.png")
        # A PNG header (dimensions 640x480) and a recognisable body.
        with open(png, "wb") as f:
            f.write(b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR" + (640).to_bytes(4, "big") +
                    (480).to_bytes(4, "big") + b"\x08\x02\x00\x00\x00")
            f.write(b"plaintext-marker-that-must-not-reach-the-server " * 4000)
        notes = os.path.join(self.root, "notes.txt")
        notes_sha = write_random(notes, 300_000, 1)
        png_sha = sha256_file(png)
        r = self.alice.ok("send", "bob", "two files", "--attach", png, "--attach", notes)
        self.assertIn("timestamp", json.loads(r.stdout))
        messages = self.receive()
        self.assertEqual(len(messages), 1)
        m = messages[0]
        self.assertEqual(m["body"], "two files")
        files = m["attachments"]
        self.assertEqual([a["fileName"] for a in files], ["picture.png", "notes.txt"])
        self.assertEqual(files[0]["contentType"], "image/png")
        self.assertEqual((files[0]["width"], files[0]["height"]), (640, 480))
        self.assertEqual(files[0]["sha256"], png_sha)
        # Its header says 640x480 but its body is not a PNG's: sent, without a thumbnail.
        self.assertNotIn("thumbnail", files[0])
        self.assertNotIn("thumbnail", files[1])
        self.assertEqual(files[1]["sha256"], notes_sha)
        self.assertEqual(files[1]["size"], 300_000)
        for a in files:
            self.assertEqual(sha256_file(a["path"]), a["sha256"])
            self.assertEqual(os.path.dirname(a["path"]), self.inbox)
        self.assertEqual(sorted(os.listdir(self.inbox)), ["notes.txt", "picture.png"])
        # History shows them, on both sides.
        h = parse_lines(self.bob.ok("history", "alice").stdout)
        self.assertEqual([a["fileName"] for a in h[-1]["attachments"]], ["picture.png", "notes.txt"])
        h = parse_lines(self.alice.ok("history", "bob").stdout)
        self.assertEqual(h[-1]["attachments"][1]["size"], 300_000)
        text = self.bob.ok("history", "alice", json_output=False).stdout
        self.assertIn("[file] picture.png", text)
        # A file without text, with a caption, and a second copy of a name that is taken.
        self.alice.ok("send", "bob", "--attach", notes, "--caption", "the notes")
        m = self.receive()[0]
        self.assertEqual(m["body"], "")
        self.assertEqual(os.path.basename(m["attachments"][0]["path"]), "notes (1).txt")
        self.assertEqual(m["attachments"][0]["caption"], "the notes")
        # Text after --attach is taken for a file: the error says where the text goes.
        e = self.alice.fails("send", "bob", "--attach", notes, "the notes",
                             code="invalid_argument")
        self.assertIn("put the message text before --attach, or use --caption", e["message"])
        e = self.alice.fails("send", "bob", "hi", "--caption", "x", code="invalid_argument")
        self.assertIn("--attach", e["message"])
        # Nothing of the plaintext is in any file of the server's data directory.
        with open(png, "rb") as f:
            png_bytes = f.read()
        with open(notes, "rb") as f:
            notes_bytes = f.read()
        needles = [b"plaintext-marker", png_bytes[:24], notes_bytes[1000:1032],
                   notes_bytes[200_000:200_032]]
        for dirpath, _, names in os.walk(self.server.data):
            for name in names:
                with open(os.path.join(dirpath, name), "rb") as f:
                    data = f.read()
                for needle in needles:
                    self.assertNotIn(needle, data, os.path.join(dirpath, name))

    def test_images_carry_dimensions_and_a_thumbnail(self):
        # A PNG made here; then the JPEG thumbnail bob receives goes back to alice as a JPEG
        # file of its own (libjpeg-turbo's output, so a real JPEG), which she must decode to
        # draw her own thumbnail of it.
        png = os.path.join(self.root, "photo")  # no extension: the type comes from the bytes
        make_png(png, 1000, 600)
        self.alice.ok("send", "bob", "a picture", "--attach", png)
        m, = self.receive()
        a, = m["attachments"]
        self.assertEqual(a["contentType"], "image/png")
        self.assertEqual((a["width"], a["height"]), (1000, 600))
        self.assertEqual(a["thumbnailContentType"], "image/jpeg")
        thumb = base64.b64decode(a["thumbnail"], validate=True)
        self.assertLessEqual(len(thumb), 8192)
        self.assertEqual(jpeg_size(thumb), (128, 77))
        self.assertEqual(sha256_file(a["path"]), a["sha256"])
        # History shows the same.
        h = parse_lines(self.bob.ok("history", "alice").stdout)
        self.assertEqual(h[-1]["attachments"][0]["thumbnail"], a["thumbnail"])

        jpeg = os.path.join(self.root, "thumb.jpg")
        with open(jpeg, "wb") as f:
            f.write(thumb)
        self.bob.ok("send", "alice", "--attach", jpeg)
        r = self.alice.ok("receive", "--timeout", "20", "--attachments-dir",
                          os.path.join(self.root, "alice-inbox"), timeout=120)
        m, = [e for e in parse_lines(r.stdout) if e.get("type") == "message"]
        b, = m["attachments"]
        self.assertEqual(b["contentType"], "image/jpeg")
        self.assertEqual((b["width"], b["height"]), (128, 77))
        again = base64.b64decode(b["thumbnail"], validate=True)
        self.assertEqual(jpeg_size(again), (128, 77))  # not enlarged

    def test_large_file_round_trip_in_bounded_memory(self):
        size = BIG_MIB << 20
        path = os.path.join(self.root, "big.bin")
        sha = write_random(path, size, 2)
        def run(client, *args):
            """Runs sotto to its end; its output and its peak RSS (KiB, from wait4)."""
            with client.popen(*args, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as p:
                out = p.stdout.read()
                err = p.stderr.read()
                _, status, usage = os.wait4(p.pid, 0)
                p.returncode = os.waitstatus_to_exitcode(status)
            self.assertEqual(p.returncode, 0, err)
            return out, usage.ru_maxrss

        if SANITIZED:
            small = os.path.join(self.root, "small.bin")
            write_random(small, 1 << 20, 3)
            _, base_upload = run(self.alice, "send", "bob", "small", "--attach", small)
            _, base_download = run(self.bob, "receive", "--timeout", "20", "--attachments-dir",
                                   self.inbox)
            base_server = vm_hwm_kib(self.server.proc.pid)
        _, upload_kib = run(self.alice, "send", "bob", "big", "--attach", path)
        out, download_kib = run(self.bob, "receive", "--timeout", "20", "--attachments-dir",
                                self.inbox)
        server_kib = vm_hwm_kib(self.server.proc.pid)
        m = [e for e in parse_lines(out) if e.get("type") == "message"][0]
        a = m["attachments"][0]
        self.assertEqual(a["size"], size)
        self.assertEqual(a["sha256"], sha)
        self.assertEqual(sha256_file(a["path"]), sha)
        sys.stderr.write("\n  %d MiB: peak RSS upload %d KiB, download %d KiB, server %d KiB\n"
                         % (BIG_MIB, upload_kib, download_kib, server_kib))
        if SANITIZED:
            sys.stderr.write("  1 MiB: peak RSS upload %d KiB, download %d KiB, server %d KiB\n"
                             % (base_upload, base_download, base_server))
            self.assertLess(upload_kib - base_upload, GROWTH_LIMIT_KIB)
            self.assertLess(download_kib - base_download, GROWTH_LIMIT_KIB)
            self.assertLess(server_kib - base_server, GROWTH_LIMIT_KIB)
            return
        self.assertLess(upload_kib, MEMORY_LIMIT_KIB)
        self.assertLess(download_kib, MEMORY_LIMIT_KIB)
        self.assertLess(server_kib, MEMORY_LIMIT_KIB)

    def test_altered_blob_is_refused_and_nothing_is_saved(self):
        path = os.path.join(self.root, "doc.bin")
        write_random(path, 3 << 20, 3)
        self.alice.ok("send", "bob", "--attach", path)
        (name, size), = self.blobs().items()
        blob = os.path.join(self.server.data, "blobs", name)
        with open(blob, "r+b") as f:
            f.seek(size // 2)
            b = f.read(1)
            f.seek(size // 2)
            f.write(bytes([b[0] ^ 0x01]))
        m = self.receive()[0]
        a = m["attachments"][0]
        self.assertNotIn("path", a)
        self.assertIn("nothing was saved", a["error"])
        self.assertEqual(os.listdir(self.inbox) if os.path.isdir(self.inbox) else [], [])

    def test_held_message_keeps_its_attachments(self):
        # Under --trust-new-identities never, a message from a key not accepted yet is held; its
        # attachments wait with it and come out when the key is accepted.
        carol = Client(self.root, "carol")
        carol.register("carol", self.server, "--trust-new-identities", "never")
        path = os.path.join(self.root, "held.bin")
        sha = write_random(path, 200_000, 8)
        self.alice.ok("send", "carol", "held", "--attach", path)
        inbox = os.path.join(self.root, "carol-inbox")
        r = carol.ok("receive", "--timeout", "10", "--attachments-dir", inbox)
        self.assertEqual([e for e in parse_lines(r.stdout) if e.get("type") == "message"], [])
        carol.ok("trust", "alice", "--safety-number", carol.safety_number("alice")["digits"])
        r = carol.ok("receive", "--timeout", "10", "--attachments-dir", inbox)
        m, = [e for e in parse_lines(r.stdout) if e.get("type") == "message"]
        self.assertEqual(m["body"], "held")
        self.assertEqual(m["attachments"][0]["sha256"], sha)

    def test_upload_killed_at_half_resumes(self):
        size = 48 << 20
        path = os.path.join(self.root, "resume.bin")
        sha = write_random(path, size, 4)
        p = self.alice.popen("send", "bob", "--attach", path,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            sizes = list(self.blobs().values()) if os.path.isdir(
                os.path.join(self.server.data, "blobs")) else []
            if sizes and sizes[0] >= size // 2:
                break
            time.sleep(0.01)
        p.send_signal(signal.SIGKILL)
        p.wait()
        (name, got), = self.blobs().items()
        self.assertGreaterEqual(got, size // 2)
        self.assertLess(got, size)  # cut before the end
        self.alice.ok("send", "bob", "--attach", path)
        # The same blob was completed, not a new one uploaded.
        self.assertEqual(list(self.blobs().keys()), [name])
        a = self.receive()[0]["attachments"][0]
        self.assertEqual(a["sha256"], sha)


class Limits(AttachmentTest):
    config = "max_attachment_bytes = 1048576\nattachment_quota_bytes = 2621440\n"

    def test_size_limit_and_quota(self):
        big = os.path.join(self.root, "big.bin")
        write_random(big, 2 << 20, 5)
        e = self.alice.fails("send", "bob", "--attach", big)
        self.assertIn("too large", e["message"])
        files = []
        for i in range(3):
            f = os.path.join(self.root, "part%d.bin" % i)
            write_random(f, 900_000, 10 + i)
            files.append(f)
        self.alice.ok("send", "bob", "--attach", files[0])
        self.alice.ok("send", "bob", "--attach", files[1])
        e = self.alice.fails("send", "bob", "--attach", files[2])
        self.assertIn("quota", e["message"])
        self.assertEqual(len(self.receive()), 2)


import test_daemon  # noqa: E402


class DaemonAttachments(test_daemon.DaemonTest):
    """The daemon's `send` with "attachments" (signal-cli's shape: file paths) and the
    attachments array of a received message's notification. Only this class's own test runs
    here (load_tests below), not the DaemonTest tests it inherits its helpers from."""

    def test_daemon_sends_and_saves_attachments(self):
        alice, bob = self.pair()
        inbox = os.path.join(self.root, "bob-inbox")
        _, bob_rpc = self.stdio_daemon(bob, "--attachments-dir", inbox)
        _, alice_rpc = self.stdio_daemon(alice)
        path = os.path.join(self.root, "report.pdf")
        sha = write_random(path, 1_500_000, 7)
        png = os.path.join(self.root, "chart.png")
        make_png(png, 300, 200)
        sent = alice_rpc.result("send", {"recipient": "bob", "attachments": [path, png]},
                                timeout=60)
        self.assertEqual(sent["results"][0]["type"], "SUCCESS")
        m = bob_rpc.notification(test_daemon.is_message, timeout=60)
        a, image = m["attachments"]
        self.assertEqual((image["width"], image["height"]), (300, 200))
        self.assertEqual(jpeg_size(base64.b64decode(image["thumbnail"])), (128, 85))
        self.assertNotIn("thumbnail", a)
        self.assertEqual((a["fileName"], a["contentType"], a["size"], a["sha256"]),
                         ("report.pdf", "application/pdf", 1_500_000, sha))
        self.assertEqual(sha256_file(a["path"]), sha)
        self.assertEqual(os.path.dirname(a["path"]), inbox)
        error = alice_rpc.call("send", {"recipient": "bob", "attachments": [7]})
        self.assertIn("error", error)


def load_tests(loader, tests, pattern):
    suite = unittest.TestSuite()
    for case in (RoundTrip, Limits):
        suite.addTests(loader.loadTestsFromTestCase(case))
    suite.addTest(DaemonAttachments("test_daemon_sends_and_saves_attachments"))
    return suite


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
