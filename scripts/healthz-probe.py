#!/usr/bin/env python3
"""Times `/healthz` answers while idle client connections are held open.

    python3 scripts/healthz-probe.py HOST PORT IDLE PROBES

Opens IDLE TCP connections to HOST:PORT and leaves them idle, then sends
PROBES `GET /healthz` requests one after the other, each on a new
connection (as a load balancer or kubelet probe does), and prints the
status codes and the latency distribution (connect to last byte).
"""

import socket
import statistics
import sys
import time


def probe(host, port, path):
    start = time.perf_counter()
    with socket.create_connection((host, port), timeout=5) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        buf = b""
        while chunk := s.recv(65536):
            buf += chunk
    return time.perf_counter() - start, buf.split(b" ", 2)[1].decode()


def main():
    host, port, idle_n, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    idle = [socket.create_connection((host, port)) for _ in range(idle_n)]
    results = [probe(host, port, "/healthz") for _ in range(n)]
    codes = sorted({code for _, code in results})
    ms = sorted(t * 1000 for t, _ in results)
    p99 = ms[max(0, int(len(ms) * 0.99) - 1)]
    print(
        f"idle={idle_n} probes={n} codes={codes} min={ms[0]:.3f}ms "
        f"median={statistics.median(ms):.3f}ms p99={p99:.3f}ms max={ms[-1]:.3f}ms"
    )
    for s in idle:
        s.close()


if __name__ == "__main__":
    main()
