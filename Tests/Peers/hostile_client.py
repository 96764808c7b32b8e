#!/usr/bin/env python3
"""Hostile or limit-probing clients of the emulator (issue 10 regression tests).

Usage:
  hostile_client.py joins URL N    connect with json.webpubsub.azure.v1, send N joinGroup requests (ackId 1..N,
                                   groups g1..gN), print "ACK <id> <success> <error name>" for each ack, then exit.
"""
import asyncio
import json
import signal
import os
import sys

signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGTERM, signal.SIGINT])
signal.signal(signal.SIGTERM, lambda *_: os._exit(0))

import websockets.asyncio.client as wsc


async def joins(url, n):
    async with wsc.connect(url, subprotocols=["json.webpubsub.azure.v1"], open_timeout=10) as ws:
        for i in range(1, n + 1):
            await ws.send(json.dumps({"type": "joinGroup", "group": f"g{i}", "ackId": i}))
        acks = 0
        while acks < n:
            m = json.loads(await asyncio.wait_for(ws.recv(), 20))
            if m.get("type") == "ack":
                acks += 1
                print(f"ACK {m['ackId']} {m['success']} {(m.get('error') or {}).get('name', '-')}", flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "joins":
        asyncio.run(joins(sys.argv[2], int(sys.argv[3])))
    else:
        sys.exit(f"unknown mode {sys.argv[1]}")
