#!/usr/bin/env python3
"""Moves N bytes of TCP and checks them: 'recv ADDR PORT' prints the byte count and SHA-256 of
what arrived (until EOF); 'send ADDR PORT N' sends N bytes of a fixed pattern and prints the
count and SHA-256 of what it sent. The test compares the two lines."""
import hashlib, socket, sys

def pattern(n):
    block = hashlib.sha256(b"vhost-netmap").digest() * 4096  # 128 KiB
    sent = 0
    while sent < n:
        chunk = block[: min(len(block), n - sent)]
        sent += len(chunk)
        yield chunk

mode, addr, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
h = hashlib.sha256()
count = 0
if mode == "recv":
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((addr, port))
    srv.listen(1)
    srv.settimeout(60)
    conn, _ = srv.accept()
    conn.settimeout(60)
    while True:
        data = conn.recv(1 << 20)
        if not data:
            break
        h.update(data)
        count += len(data)
else:
    n = int(sys.argv[4])
    s = socket.create_connection((addr, port), timeout=60)
    for chunk in pattern(n):
        s.sendall(chunk)
        h.update(chunk)
        count += len(chunk)
    s.shutdown(socket.SHUT_WR)
    s.recv(1)
    s.close()
print(count, h.hexdigest())
