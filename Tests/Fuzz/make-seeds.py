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
# Inflight tracking: INFLIGHT_SHMFD negotiated, GET_INFLIGHT_FD, then SET_INFLIGHT_FD with the guest
# memory file as the buffer (its top bits 01: one descriptor) for 4 queues of 256 entries, then
# the ring set up and started over it (SET_VRING_KICK with an eventfd would need 2 descriptors:
# polled, 0x100).
stride = (32 + 32 * 256 + 63) // 64 * 64
inflight = struct.pack("<QQHHI", 4 * stride, 0, 4, 256, 0)
set_inflight = bytearray(message(32, inflight))
set_inflight[0] |= 0x40
set_mem = bytearray(message(5, struct.pack("<II", 1, 0) + struct.pack("<QQQQ", 0, 1 << 20, 0x7f0000000000, 0)))
set_mem[0] |= 0x40
put("FuzzFraming", "inflight", message(3) + message(1) + message(15) + message(16, u64(0x1 | 0x8 | 0x1000))
    + message(2, u64((1 << 32) | (1 << 30) | (1 << 34))) + bytes(set_mem) + message(31, inflight) + bytes(set_inflight)
    + message(8, struct.pack("<II", 1, 16)) + message(10, struct.pack("<II", 1, 0x8000))
    + message(9, struct.pack("<IIQQQQ", 1, 0, 0x7f0000000000 + 0x40000, 0x7f0000000000 + 0x41000, 0x7f0000000000 + 0x42000, 0))
    + message(12, u64(1 | 0x100)))

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


def rx_seed(options, frames, descriptors, heads, extra=()):
    """FuzzRXWriter: 32 bytes of parameters (ring of 8), then guest memory from gpa 0x10000: the
    descriptor table, the avail ring at +0x1000 naming `heads`, and `extra` (offset, bytes)."""
    params = bytearray(32)
    params[0], params[1], params[2], params[3] = 3, options, len(frames) - 1, 0x21
    for i, (length, hdr) in enumerate(frames):
        struct.pack_into("<HB", params, 8 + 3 * i, length, hdr)
    mem = bytearray(0x3000)
    for i, d in enumerate(descriptors):
        struct.pack_into("<QIHH", mem, 16 * i, *d)
    struct.pack_into("<HH", mem, 0x1000, 0, len(heads))
    for i, h in enumerate(heads):
        struct.pack_into("<H", mem, 0x1004 + 2 * i, h)
    for offset, data in extra:
        mem[offset:offset + len(data)] = data
    return bytes(params) + bytes(mem)


W, N, I = 2, 1, 4  # VRING_DESC_F_WRITE, NEXT, INDIRECT
put("FuzzRXWriter", "single", rx_seed(0x02, [(60, 0), (1500, 1), (100, 0)],
                                       [(0x20000 + 4096 * i, 2048, W, 0) for i in range(4)], [0, 1, 2, 3]))
put("FuzzRXWriter", "mergeable", rx_seed(0x01 | 0x20, [(1500, 1), (60, 0)],
                                          [(0x20000 + 1024 * i, 512, W, 0) for i in range(8)], list(range(8))))
put("FuzzRXWriter", "split-chain", rx_seed(0x02 | 0x08, [(1000, 0)],
                                            [(0x1ff00, 0x100, W | N, 1), (0x20000, 2048, W, 0)], [0]))
table = b"".join(struct.pack("<QIHH", *d) for d in [(0x21000, 12, W | N, 1), (0x22000, 1500, W, 0)])
put("FuzzRXWriter", "indirect-logged", rx_seed(0x02 | 0x04 | 0x10, [(1400, 0)], [(0x12f00, 32, I, 0)], [0],
                                                extra=[(0x2f00, table)]))


def netmap_seed(header_choice, rx_frames):
    """FuzzNetmapRing: parameters, 16 kernel actions (zeros: harmless), then a 64 KiB netmap
    region: netmap_if at 256 (one TX, one RX ring), TX ring at 1024 (16 slots free), RX ring at
    2048 holding `rx_frames` (lists of fragment lengths), 2048-byte buffers from 8192 (all 0xff: broadcast frames)."""
    params = bytearray(16)
    struct.pack_into("<HBB", params, 0, 256, header_choice, 3)
    params[8:11] = bytes([1, 6, 200])  # frames of 277, 1662 and 55400 bytes
    region = bytearray(8192) + b"\xff" * ((1 << 16) - 8192)  # buffers of broadcast frames
    struct.pack_into("<IIIIII", region, 256 + 20, 0, 1, 1, 0, 0, 0)  # flags, tx, rx, bufs_head, host tx, host rx
    struct.pack_into("<qq", region, 256 + 56, 1024 - 256, 2048 - 256)
    for start, first_buffer in [(1024, 2), (2048, 18)]:
        struct.pack_into("<qIIHHIII", region, start, 8192 - start, 16, 2048, 0, 0, 0, 0, 0)
        for i in range(16):
            struct.pack_into("<IHH", region, start + 256 + 16 * i, first_buffer + i, 0, 0)
    struct.pack_into("<I", region, 1024 + 28, 15)  # TX tail: 15 slots ours
    slot = 0
    for fragments in rx_frames:
        for k, length in enumerate(fragments):
            struct.pack_into("<HH", region, 2048 + 256 + 16 * slot + 4, length, 0x20 if k < len(fragments) - 1 else 0)  # NS_MOREFRAG
            slot += 1
    struct.pack_into("<I", region, 2048 + 28, slot)  # RX tail
    return bytes(params) + bytes(16 * 12) + bytes(region)


put("FuzzNetmapRing", "plain", netmap_seed(0, [[60], [2048, 100], [1514]]))
put("FuzzNetmapRing", "header", netmap_seed(2, [[72], [2048, 2048, 12]]))

# FuzzControl: a piece-size byte, then what `vhost-netmap vale` and `stats` send.
for i, text in enumerate([b"stats\n", b"ping\nlist vale0\n", b"attach vale0:vm9,queues=2\n", b"attach-host vale0:tap9,queues=1\n",
                          b"detach vale0:a\ndetach vale0:b", b"fdb\r\n  ping  \n", b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"]):
    put("FuzzControl", f"lines-{i}", bytes([i * 3]) + text)

# FuzzMemoryTable: operations (byte % 6: table, add, remove, translate ×2, log), plausible fields.
table = bytes([0, 2]) + bytes([3, 0, 4, 0, 0, 0]) + bytes([2, 0, 2, 1, 1, 0])  # two regions: 1 MiB file, 64 KiB file
translate = bytes([3, 0, 1, 0, 16, 12]) + bytes([4, 1, 1, 0, 255, 4])
put("FuzzMemoryTable", "table-translate-log", table + translate + bytes([5, 3, 0, 8, 0, 0, 1, 1, 0, 200, 3]))
put("FuzzMemoryTable", "slots", bytes([1, 3, 0, 2, 0, 0, 0]) + bytes([1, 2, 0, 1, 5, 3, 0]) + bytes([3, 1, 1, 0, 0, 4, 2])
    + bytes([2, 0, 0]) + bytes([3, 0, 1, 0, 0, 4, 2]))

# FuzzDomainXML: domain XML as libvirt hands it out, with vhost-user interfaces in and out of /run/vn.
iface = "<interface type='vhostuser'><mac address='52:54:00:00:00:0%d'/><source type='unix' path='%s' mode='%s'/>%s<model type='virtio'/></interface>"
for i, (path, mode, driver) in enumerate([("/run/vn/vale0/a.sock", "client", ""), ("/run/vn/vale1/b.sock", "server", "<driver queues='4'/>"),
                                          ("/run//vn/./vale0/c.sock", "client", "<driver queues='17'/>"), ("/elsewhere/vale0/d.sock", "client", "")]):
    put("FuzzDomainXML", f"domain-{i}", ("<domain type='qemu'><name>d</name><devices>" + iface % (i, path, mode, driver)
                                          + "<interface type='network'><source network='default'/></interface></devices></domain>").encode())

# FuzzChainWalker, packed: size 8 (byte 0 = 7), readable, indirect allowed + packed, start at slot 1
# lap 1 (byte 3 = 0x81; bytes 0-3 are also slot 0's address, unused); a 2-descriptor chain (id 5)
# and a 1-descriptor chain (id 6) made available in lap 1 (AVAIL=1, USED=0).
packed_ring = bytearray(4096)
struct.pack_into("<QIHH", packed_ring, 16, 0x10000 + 20480, 64, 5, 0x80 | 1)
struct.pack_into("<QIHH", packed_ring, 32, 0x10000 + 20544, 64, 5, 0x80)
struct.pack_into("<QIHH", packed_ring, 48, 0x10000 + 20608, 128, 6, 0x80)
put("FuzzChainWalker", "packed-two-chains", bytes([7, 0, 5, 0x81]) + bytes(packed_ring[4:]) + bytes(8192))
