#!/usr/bin/env python3
"""Compares the ABI vectors (kernel/abi/netmap-abi.json: sizes, field offsets and sizes,
constants) with netmap's real user headers: a C program is generated that prints each value
as the compiler sees it through those headers, compiled with gcc and run. The project's own
declarations are checked against the same vectors by Tests/NetmapTests/ABITests.swift, so the
two checks together tie the project to the headers of the module the guest tests load.

usage: check-headers.py HEADERS_DIR [ABI_JSON]    (HEADERS_DIR holds net/netmap*.h)
Prints "N values checked, M differ" and each difference; exits 1 if any differs.
"""
import json
import os
import subprocess
import sys
import tempfile

headers = sys.argv[1]
abi_path = sys.argv[2] if len(sys.argv) > 2 else os.path.join(os.path.dirname(__file__), "netmap-abi.json")
abi = json.load(open(abi_path))


def struct(name):
    return name if name in ("ssize_t",) else f"struct {name}"


def member(path):
    """'a.b[].c' -> ('struct a', '->b[0].c'): an lvalue expression below a null struct pointer."""
    head, _, rest = path.partition(".")
    return struct(head), "->" + rest.replace("[]", "[0]")


def expression(kind, key):
    if kind == "sizes":
        if key.endswith("[]_element"):
            s, m = member(key[: -len("[]_element")])
            return f"sizeof((({s} *)0){m}[0])"
        return f"sizeof({struct(key)})"
    if kind == "field_sizes":
        if key.endswith("[]_element"):
            s, m = member(key[: -len("[]_element")])
            return f"sizeof((({s} *)0){m}[0])"
        s, m = member(key)
        return f"sizeof((({s} *)0){m})"
    if kind == "offsets":
        s, m = member(key)
        if "[]." in key:  # inside an array element: the offset within the element
            element = m[: m.index("[0]") + 3]
            return f"((size_t)&(({s} *)0){m} - (size_t)&(({s} *)0){element})"
        return f"((size_t)&(({s} *)0){m})"
    raise ValueError(kind)


lines = [
    "#define _GNU_SOURCE",
    "#include <stdio.h>", "#include <stddef.h>", "#include <stdint.h>", "#include <sys/ioctl.h>", "#include <net/if.h>", "#include <poll.h>", "#include <sys/types.h>", "#include <sys/time.h>",
    "#include <net/netmap.h>", "#include <net/netmap_legacy.h>", "#include <net/netmap_user.h>",
    "#include <net/netmap_virt.h>",
    "int main(void) {",
]
for kind in ("sizes", "offsets", "field_sizes"):
    for key in abi[kind]:
        lines.append(f'  printf("{kind}\\t{key}\\t%lld\\n", (long long)({expression(kind, key)}));')
for key, value in abi["constants"].items():
    if isinstance(value, str):
        lines.append(f'  printf("constants\\t{key}\\t%s\\n", {key});')
    else:
        lines.append(f'  printf("constants\\t{key}\\t%lld\\n", (long long)({key}));')
lines += ["  return 0;", "}"]

with tempfile.TemporaryDirectory() as tmp:
    src, exe = os.path.join(tmp, "abi.c"), os.path.join(tmp, "abi")
    open(src, "w").write("\n".join(lines) + "\n")
    build = subprocess.run(["gcc", "-std=gnu11", "-O0", "-w", "-I", headers, src, "-o", exe], capture_output=True, text=True)
    if build.returncode != 0:
        print(build.stderr[-3000:])
        print("0 values checked, 1 differ (the generated program did not compile against the headers)")
        sys.exit(1)
    output = subprocess.run([exe], capture_output=True, text=True, check=True).stdout

checked = differ = 0
for row in output.splitlines():
    kind, key, got = row.split("\t")
    want = abi[kind][key]
    checked += 1
    if str(want) != got:
        differ += 1
        print(f"differs: {kind} {key}: headers say {got}, netmap-abi.json says {want}")
print(f"{checked} values checked, {differ} differ")
sys.exit(1 if differ else 0)
