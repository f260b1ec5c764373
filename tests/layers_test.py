#!/usr/bin/env python3
"""Fails when a file includes a header of a layer above its own (docs/architecture.md section 2).

Each folder below may include only the folders listed for it (and its own). Generated protobuf
headers (*.pb.h) belong to src/wire. Usage: layers_test.py SOURCE_DIR
"""
import os
import re
import sys

# The layers, each with what it may include besides itself. A new folder must be added here.
ALLOWED = {
    "src/crypto": set(),
    "src/wire": set(),
    "src/contract": {"crypto"},
    "src/transparency": {"crypto", "contract"},
    "src/protocol": {"crypto", "wire"},
    "src/store/server": {"crypto", "wire", "protocol"},
    "src/store/client": {"crypto", "wire", "protocol"},
    "src/net": {"crypto", "wire"},
    "src/server": {"crypto", "wire", "contract", "protocol", "store/server", "net",
                   "transparency"},
    "src/client": {"crypto", "wire", "contract", "protocol", "store/client", "net", "sotto",
                   "transparency"},
}
# Folders an include may name; anything else (a system or third-party header, or a file beside
# the includer) is not a layer and is not checked.
LAYER_OF_TOP = {
    "crypto": "crypto", "wire": "wire", "contract": "contract", "protocol": "protocol",
    "net": "net", "server": "server", "client": "client", "sotto": "sotto",
    "transparency": "transparency",
}
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def layer_of(include):
    if include.endswith(".pb.h") and "/" not in include:
        return "wire"
    parts = include.split("/")
    if parts[0] == "store" and len(parts) > 2:
        return "store/" + parts[1]
    return LAYER_OF_TOP.get(parts[0])


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else "."
    problems = []
    for folder, allowed in ALLOWED.items():
        own = folder[len("src/"):]
        base = os.path.join(root, folder)
        for dirpath, _, files in os.walk(base):
            for name in files:
                if not name.endswith((".h", ".cpp")):
                    continue
                path = os.path.join(dirpath, name)
                with open(path, encoding="utf-8", errors="replace") as f:
                    text = f.read()
                for include in INCLUDE.findall(text):
                    layer = layer_of(include)
                    if layer is None or layer == own or layer in allowed:
                        continue
                    problems.append(f"{os.path.relpath(path, root)}: includes \"{include}\" "
                                    f"({layer} is not below {own})")
    for p in problems:
        print(p)
    if problems:
        print(f"{len(problems)} upward include(s); see docs/architecture.md section 2")
        return 1
    print("no upward includes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
