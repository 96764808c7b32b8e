#!/usr/bin/env python3
"""A local Web PubSub event handler (aiohttp) for emulator tests.

Prints `READY <port>` once listening on 127.0.0.1 (port 0 = any). Handles:
  OPTIONS (abuse protection)  -> WebHook-Allowed-Origin: *
  connect    -> 403 for userId "blocked"; {"userId":"renamed","groups":["fromconnect"]} for "renameme"; else 204
  user events: echo (text "echo:<data>"), jsonecho (JSON with the payload, userId and signature check),
               silent (204), fail (500), anything else: 200 with the body echoed back (same Content-Type)
  GET /log   -> JSON list of received CloudEvents (type, hub, validated, signatureOK)
Usage: upstream_server.py ACCESS_KEY [PORT]
"""
import hashlib
import hmac
import json
import sys

from aiohttp import web

KEY = sys.argv[1].encode()
PORT = int(sys.argv[2]) if len(sys.argv) > 2 else 0
LOG = []


def signature_ok(request):
    cid = request.headers.get("ce-connectionId", "")
    want = "sha256=" + hmac.new(KEY, cid.encode(), hashlib.sha256).hexdigest()
    return want in [s.strip() for s in request.headers.get("ce-signature", "").split(",")]


async def options(request):
    LOG.append({"type": "validate", "hub": "", "validated": True, "signatureOK": True})
    return web.Response(status=200, headers={"WebHook-Allowed-Origin": "*"})


async def event(request):
    body = await request.read()
    ce_type = request.headers.get("ce-type", "")
    hub = request.headers.get("ce-hub", "")
    ok = signature_ok(request)
    LOG.append({"type": ce_type, "hub": hub, "signatureOK": ok, "id": request.headers.get("ce-id"),
                "userId": request.headers.get("ce-userId")})
    if ce_type == "azure.webpubsub.sys.connect":
        claims = json.loads(body).get("claims", {})
        user = (claims.get("sub") or [None])[0]
        if user == "blocked":
            return web.Response(status=403, text="blocked")
        if user == "renameme":
            return web.json_response({"userId": "renamed", "groups": ["fromconnect"]})
        return web.Response(status=204)
    if ce_type.startswith("azure.webpubsub.sys."):
        return web.Response(status=204)
    name = request.headers.get("ce-eventName", "")
    if name == "echo":
        return web.Response(text="echo:" + body.decode(), content_type="text/plain")
    if name == "jsonecho":
        return web.json_response({"got": json.loads(body), "userId": request.headers.get("ce-userId"), "signatureOK": ok})
    if name == "silent":
        return web.Response(status=204)
    if name == "fail":
        return web.Response(status=500, text="nope")
    return web.Response(body=body, content_type=request.headers.get("Content-Type", "application/octet-stream"))


async def log(request):
    return web.json_response(LOG)


async def main():
    app = web.Application(client_max_size=32 * 1024 * 1024)
    app.router.add_route("OPTIONS", "/{tail:.*}", options)
    app.router.add_get("/log", log)
    app.router.add_post("/{tail:.*}", event)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", PORT)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    print(f"READY {port}", flush=True)
    import asyncio
    await asyncio.Event().wait()


if __name__ == "__main__":
    import asyncio
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
