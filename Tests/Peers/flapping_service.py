#!/usr/bin/env python3
"""A misbehaving Web PubSub service for the client's pacing tests.

Usage: flapping_service.py CODE; prints "PORT <n>" once listening on 127.0.0.1:0.
Every connection is accepted (either JSON subprotocol), gets a `connected` message with a
reconnection token, and is closed at once with close code CODE (1008: "no recovery", 1011: a
recoverable server error). Each connection prints "CONNECTION <n> <recovery|new>".
"""
import asyncio
import json
import os
import signal
import sys

import websockets.asyncio.server as wss

signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGTERM, signal.SIGINT])
signal.signal(signal.SIGTERM, lambda *_: os._exit(0))

CODE = int(sys.argv[1])
COUNT = 0


async def handler(ws):
    global COUNT
    COUNT += 1
    kind = "recovery" if "awps_connection_id" in ws.request.path else "new"
    print(f"CONNECTION {COUNT} {kind}", flush=True)
    await ws.send(json.dumps({"type": "system", "event": "connected", "connectionId": f"conn{COUNT}",
                              "userId": "u", "reconnectionToken": f"tok{COUNT}"}))
    await ws.close(CODE, "flapping")


async def main():
    async with wss.serve(handler, "127.0.0.1", 0,
                         subprotocols=["json.reliable.webpubsub.azure.v1", "json.webpubsub.azure.v1"]) as server:
        port = server.sockets[0].getsockname()[1]
        print(f"PORT {port}", flush=True)
        await asyncio.Future()


asyncio.run(main())
