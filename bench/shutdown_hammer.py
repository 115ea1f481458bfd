#!/usr/bin/env python3
"""Connections reset by a replica's shutdown: opens new connections to a `fleetgate serve` as fast
as 16 threads can (GET /healthz, one request each), sends SIGTERM mid-load, and counts how each
connection ended: answered, refused at connect (a balancer retries those elsewhere), or accepted
and then reset (lost). Repeats for --rounds shutdowns.

    python3 bench/shutdown_hammer.py --bin target/debug/fleetgate --rounds 5

Needs Redis on 127.0.0.1:6379 and PostgreSQL on 127.0.0.1:5432 (trust auth), as the tests do.
"""
import argparse
import collections
import os
import signal
import socket
import subprocess
import threading
import time

REQUEST = b"GET /healthz HTTP/1.1\r\nHost: hammer\r\nConnection: close\r\n\r\n"


def hammer(port, seconds, counts, lock):
    stop = time.time() + seconds
    while time.time() < stop:
        s = socket.socket()
        s.settimeout(5)
        try:
            s.connect(("127.0.0.1", port))
        except OSError:
            with lock:
                counts["refused"] += 1
            s.close()
            time.sleep(0.005)
            continue
        try:
            s.sendall(REQUEST)
            reply = b""
            while True:
                d = s.recv(4096)
                if not d:
                    break
                reply += d
            kind = "answered" if reply.startswith(b"HTTP/1.1 ") else "lost"
        except OSError:
            kind = "lost"
        finally:
            s.close()
        with lock:
            counts[kind] += 1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/debug/fleetgate")
    ap.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432/test")
    ap.add_argument("--port", type=int, default=18555)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "FLEETGATE_DATABASE_URL": args.database_url,
        "FLEETGATE_REDIS_URL": "redis://127.0.0.1:6379",
        "FLEETGATE_REDIS_PREFIX": "hammer",
        "FLEETGATE_LISTEN": f"127.0.0.1:{args.port}",
        "FLEETGATE_JWT_SECRET": "0123456789abcdef0123456789abcdef",
        "FLEETGATE_PIPELINE": "echo",
    }
    subprocess.run([args.bin, "migrate"], env=env, check=True, capture_output=True)
    lost_total = 0
    for r in range(args.rounds):
        server = subprocess.Popen([args.bin, "serve"], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(2)
        counts, lock = collections.Counter(), threading.Lock()
        threads = [threading.Thread(target=hammer, args=(args.port, 3, counts, lock))
                   for _ in range(16)]
        for t in threads:
            t.start()
        time.sleep(1)
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
        for t in threads:
            t.join()
        lost_total += counts["lost"]
        print(f"shutdown {r + 1}: answered {counts['answered']}, refused {counts['refused']}, "
              f"lost {counts['lost']}")
    print(f"lost per shutdown: {lost_total / args.rounds:.2f}")


if __name__ == "__main__":
    main()
