"""A small app the gateway tests put behind `fleetgate gateway`: Starlette on uvicorn, from PyPI
(scripts/requirements-test.txt), not Rust. It is the independent observer: it counts its own
in-flight requests, overall and per user (the X-Fleetgate-User header the gateway sets), and
reports the maxima at GET /stats.

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

Run: python app.py [PORT] (0 or none: any free port); prints "PORT <n>" once listening.
"""

import asyncio, json, socket, sys

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

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

async def stats(request: Request):
    keys = ("in_flight", "max_in_flight", "max_per_user", "served", "order")
    return JSONResponse({k: state[k] for k in keys})

async def echo(request: Request):
    seen = {}
    for k, v in request.headers.raw:
        k, v = k.decode("latin-1").lower(), v.decode("latin-1")
        seen[k] = seen[k] + ", " + v if k in seen else v
    # Hop-by-hop fields of its own, which the gateway must not pass on to the client.
    return JSONResponse(seen, headers={"keep-alive": "timeout=5", "x-hop": "secret",
                                       "connection": "x-hop"})

async def switch(request: Request):
    global broken
    broken = request.url.path == "/break"
    return PlainTextResponse(request.url.path[1:])

async def released(request: Request):
    release.set()
    return PlainTextResponse("released")

async def sse(request: Request):
    user = request.headers.get("x-fleetgate-user")

    async def events():
        enter(user)
        try:
            yield b"data: first\n\n"
            await asyncio.wait_for(release.wait(), 30)
            yield b"data: last\n\n"
        finally:
            leave(user)

    return StreamingResponse(events(), headers={"content-type": "text/event-stream"})

async def work(request: Request):
    await request.body()
    ms = int(request.query_params.get("ms", "300"))
    status = int(request.query_params.get("status", "500" if broken else "200"))
    user = request.headers.get("x-fleetgate-user")
    enter(user)
    try:
        await asyncio.sleep(ms / 1000)
    finally:
        leave(user)
    return PlainTextResponse("ok" if status == 200 else "fail", status_code=status)

async def not_found(request: Request):
    return PlainTextResponse("app: no such path " + request.url.path, status_code=404)

async def ws(websocket: WebSocket):
    """Echoes text and binary messages until the client closes."""
    user = websocket.headers.get("x-fleetgate-user")
    await websocket.accept()
    enter(user)
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") is not None:
                await websocket.send_text(message["text"])
            elif message.get("bytes") is not None:
                await websocket.send_bytes(message["bytes"])
    except WebSocketDisconnect:
        pass
    finally:
        leave(user)

ANY = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
app = Starlette(routes=[
    Route("/stats", stats, methods=ANY),
    Route("/echo", echo, methods=ANY),
    Route("/break", switch, methods=ANY),
    Route("/heal", switch, methods=ANY),
    Route("/release", released, methods=ANY),
    Route("/sse", sse, methods=ANY),
    Route("/work", work, methods=ANY),
    WebSocketRoute("/ws", ws),
    Route("/{path:path}", not_found, methods=ANY),
])

def main():
    # Bound here, so the port is known before uvicorn serves on it.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", int(sys.argv[1]) if len(sys.argv) > 1 else 0))
    print("PORT", sock.getsockname()[1], flush=True)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    asyncio.run(uvicorn.Server(config).serve(sockets=[sock]))

main()
