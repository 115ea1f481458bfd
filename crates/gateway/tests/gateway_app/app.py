"""A small app the gateway tests put behind `fleetgate gateway`: plain asyncio, not Rust; its
WebSocket side is the `websockets` package's protocol (scripts/requirements-test.txt). It is the independent observer: it counts its own in-flight requests, overall and per
user (the X-Fleetgate-User header the gateway sets), and reports the maxima at GET /stats.

  GET  /stats         {"max_in_flight", "in_flight", "max_per_user": {user: n}, "served",
                       "order": users in the order their requests started}
  GET  /echo          the request headers it received, as JSON
  ANY  /work?ms=N     holds the request N ms (default 300), then answers "ok"; with &status=S it
                      answers S instead, and 500 while broken
  POST /break         from now on /work answers 500 ("the app fails")
  POST /heal          /work answers normally again
  GET  /ws            WebSocket echo (counted in flight while open, like a request)
  GET  /sse           one SSE event at once, the next only after POST /release, then ends
  POST /release       lets every waiting /sse finish

Prints "PORT <n>" once listening on 127.0.0.1 (port 0: the OS picks).
"""
import asyncio, json, sys
from urllib.parse import urlsplit, parse_qs
from websockets.frames import Opcode
from websockets.server import ServerProtocol

state = {"in_flight": 0, "max_in_flight": 0, "per_user": {}, "max_per_user": {}, "served": 0,
         "order": []}
release = asyncio.Event()
broken = False

def enter(user):
    state["order"].append(user)
    state["in_flight"] += 1
    state["max_in_flight"] = max(state["max_in_flight"], state["in_flight"])
    if user:
        n = state["per_user"].get(user, 0) + 1
        state["per_user"][user] = n
        state["max_per_user"][user] = max(state["max_per_user"].get(user, 0), n)

def leave(user):
    state["in_flight"] -= 1
    state["served"] += 1
    if user:
        state["per_user"][user] -= 1

async def read_request(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        if line:
            k, v = line.split(":", 1)
            k = k.strip().lower()
            headers[k] = headers[k] + ", " + v.strip() if k in headers else v.strip()
    if "content-length" in headers:
        await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int((await reader.readline()).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    return method, target, headers

def respond(writer, status, body, ctype="text/plain", extra=""):
    body = body.encode()
    writer.write((f"HTTP/1.1 {status}\r\ncontent-type: {ctype}\r\ncontent-length: {len(body)}\r\n"
                  f"{extra}connection: close\r\n\r\n").encode() + body)

async def websocket(reader, writer, target, headers, user):
    """Echoes text and binary messages until the client closes."""
    proto = ServerProtocol()
    # The protocol parses the handshake itself: hand it the request head again.
    head = f"GET {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    proto.receive_data((head + "\r\n").encode("latin-1"))
    resp = proto.accept(proto.events_received()[0])
    proto.send_response(resp)
    writer.write(b"".join(proto.data_to_send()))
    await writer.drain()
    if resp.status_code != 101:
        return
    enter(user)
    try:
        while True:
            data = await reader.read(65536)
            if data:
                proto.receive_data(data)
            else:
                proto.receive_eof()
            for frame in proto.events_received():
                if frame.opcode == Opcode.TEXT:
                    proto.send_text(frame.data)
                elif frame.opcode == Opcode.BINARY:
                    proto.send_binary(frame.data)
            out = proto.data_to_send()
            for chunk in out:
                if chunk:
                    writer.write(chunk)
            await writer.drain()
            # An empty chunk: the protocol is done with the connection (close handshake or EOF).
            if not data or any(chunk == b"" for chunk in out):
                return
    finally:
        leave(user)

async def handle(reader, writer):
    global broken
    try:
        method, target, headers = await read_request(reader)
        url = urlsplit(target)
        user = headers.get("x-fleetgate-user")
        if url.path == "/stats":
            stats = {k: state[k] for k in ("in_flight", "max_in_flight", "max_per_user", "served", "order")}
            respond(writer, "200 OK", json.dumps(stats), "application/json")
        elif url.path == "/echo":
            # Hop-by-hop fields of its own, which the gateway must not pass on to the client.
            respond(writer, "200 OK", json.dumps(headers), "application/json",
                    "keep-alive: timeout=5\r\nx-hop: secret\r\nconnection: x-hop\r\n")
        elif url.path == "/ws":
            await websocket(reader, writer, target, headers, user)
        elif url.path in ("/break", "/heal"):
            broken = url.path == "/break"
            respond(writer, "200 OK", url.path[1:])
        elif url.path == "/release":
            release.set()
            respond(writer, "200 OK", "released")
        elif url.path == "/sse":
            enter(user)
            try:
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                             b"transfer-encoding: chunked\r\nconnection: close\r\n\r\n")
                for event in (b"data: first\n\n", None, b"data: last\n\n"):
                    if event is None:
                        await asyncio.wait_for(release.wait(), 30)
                        continue
                    writer.write(b"%x\r\n%s\r\n" % (len(event), event))
                    await writer.drain()
                writer.write(b"0\r\n\r\n")
            finally:
                leave(user)
        elif url.path == "/work":
            query = parse_qs(url.query)
            ms = int(query.get("ms", ["300"])[0])
            status = int(query.get("status", ["500" if broken else "200"])[0])
            enter(user)
            try:
                await asyncio.sleep(ms / 1000)
            finally:
                leave(user)
            if status == 200:
                respond(writer, "200 OK", "ok")
            else:
                respond(writer, f"{status} Failing", "fail")
        else:
            respond(writer, "404 Not Found", "app: no such path " + url.path)
        await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.TimeoutError):
        pass
    finally:
        writer.close()

async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", int(sys.argv[1]) if len(sys.argv) > 1 else 0)
    print("PORT", server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()

asyncio.run(main())
