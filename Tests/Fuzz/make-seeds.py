#!/usr/bin/env python3
"""Writes the fuzz targets' seed corpora (small, valid inputs, as the tests' traffic has them)
into Tests/Fuzz/Corpus/<target>/. Run by scripts/fuzz.sh when a corpus is missing."""
import os
import struct
import sys

root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "Corpus")


def put(target, name, data):
    d = os.path.join(root, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def message(request, payload=b"", flags=1):
    return struct.pack("<III", request, flags, len(payload)) + payload


u64 = lambda v: struct.pack("<Q", v)
# A front-end's start-up: owner, features, protocol features, memory table, one ring set up.
startup = (message(3) + message(1) + message(15) + message(16, u64(0x1 | 0x8 | 0x8000))
           + message(2, u64((1 << 32) | (1 << 30) | (1 << 28))) + message(17)
           + message(5, struct.pack("<II", 1, 0) + struct.pack("<QQQQ", 0, 1 << 20, 0x7f0000000000, 0))
           + message(8, struct.pack("<II", 0, 256)) + message(10, struct.pack("<II", 0, 0))
           + message(9, struct.pack("<IIQQQQ", 0, 0, 0x7f0000000000, 0x7f0000002000, 0x7f0000001000, 0))
           + message(36) + message(37, u64(0) + struct.pack("<QQQQ", 1 << 32, 4096, 0x7f0000100000, 0)))
# The first byte of each message's first chunk selects descriptors (top two bits): SET_MEM_TABLE
# and ADD_MEM_REG need one. Their request numbers (5, 37) have the top bits clear, so the seed
# sends them without; the fuzzer finds the variants.
put("FuzzFraming", "startup", startup)
put("FuzzFraming", "features", message(1) + message(2, u64(1 << 32)))

# A ring of 8 with two chains: head 0 (two descriptors, next) and head 2 (one writable).
desc = bytearray(4096)
struct.pack_into("<QIHH", desc, 0, 0x10000 + 12288, 64, 1, 1)
struct.pack_into("<QIHH", desc, 16, 0x10000 + 16384, 1500, 0, 0)
struct.pack_into("<QIHH", desc, 32, 0x10000 + 20480, 2048, 2, 0)
avail = bytearray(4096)
struct.pack_into("<HHHH", avail, 0, 0, 2, 0, 2)
put("FuzzChainWalker", "two-chains", bytes([3, 0, 1]) + bytes(desc[3:]) + bytes(avail) + bytes(4096))

for name in ["vale0:vm1", "vale0:vm1=/run/x.sock,client,queues=4,mode=0660,group=kvm", "netmap:eth0^2/x@conf:rings=2",
             "eth0*", "x{1", "vale1:a}3", "vale0:tap0,queues=2,mtu=9000"]:
    put("FuzzNames", "name-" + "".join(c if c.isalnum() else "_" for c in name), name.encode())

for i, args in enumerate([["-i", "vhost-user:/tmp/a.sock", "-f", "tx", "-n", "1000", "-l", "60"],
             ["-ivale0:x", "-frx", "-W", "-T", "500"], ["-i", "eth0", "-f", "ping", "-D", "02:00:00:00:00:01", "-R", "1000"]]):
    put("FuzzPktGenOptions", f"args-{i}", b"\0".join(a.encode() for a in args))
