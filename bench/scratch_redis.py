"""A throwaway redis-server for the Python benches: a free port, an empty directory, no
persistence; stopped (and the directory removed) on exit."""
import contextlib
import socket
import subprocess
import tempfile
import time

import redis


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@contextlib.contextmanager
def scratch_redis():
    """Yields (client, port) of a fresh redis-server, answering PING."""
    port = free_port()
    with tempfile.TemporaryDirectory() as d:
        srv = subprocess.Popen(["redis-server", "--port", str(port), "--save", "",
                                "--appendonly", "no", "--dir", d],
                               stdout=subprocess.DEVNULL)
        try:
            r = redis.Redis(port=port)
            for _ in range(100):
                try:
                    r.ping()
                    break
                except redis.ConnectionError:
                    time.sleep(0.05)
            yield r, port
        finally:
            srv.terminate()
            srv.wait()
