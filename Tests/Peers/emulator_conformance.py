#!/usr/bin/env python3
"""Conformance scenarios for the Swift Web PubSub emulator, driven by the official Python SDKs.

Usage: emulator_conformance.py CONNECTION_STRING SCENARIO [SCENARIO...]
Prints `PASS <scenario>` or `FAIL <scenario>: <reason>` per scenario; exits 1 if any failed.
Every wait is bounded; every client is closed.
"""
import base64
import json
import sys
import threading
import time
import traceback
import urllib.error
import urllib.request
import uuid

from azure.messaging.webpubsubclient import WebPubSubClient, WebPubSubClientCredential
from azure.messaging.webpubsubclient.models import (
    CallbackType,
    SendMessageError,
    WebPubSubDataType,
    WebPubSubProtocolType,
)
from azure.messaging.webpubsubservice import WebPubSubServiceClient
from azure.core.exceptions import HttpResponseError
from websockets.sync.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

CS = sys.argv[1]
ENDPOINT = [p.split("=", 1)[1] for p in CS.split(";") if p.lower().startswith("endpoint=")][0].rstrip("/")
RELIABLE = "json.reliable.webpubsub.azure.v1"
JSONP = "json.webpubsub.azure.v1"


class Failure(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Failure(msg)


def wait_until(pred, timeout=10.0, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return
        time.sleep(0.02)
    raise Failure(f"timed out waiting for {what}")


def service(hub):
    return WebPubSubServiceClient.from_connection_string(CS, hub=hub)


def url_for(hub, **kw):
    return service(hub).get_client_access_token(**kw)["url"]


def hook(path, method="POST"):
    req = urllib.request.Request(ENDPOINT + "/_emulator/" + path, method=method, data=b"" if method == "POST" else None)
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.loads(r.read() or b"null")


def unacked(connection_id):
    """How many messages the emulator holds for `connection_id` that its client has not sequence-acked."""
    for c in hook("connections", "GET"):
        if c["connectionId"] == connection_id:
            return c["unackedMessages"]
    return None


KEY = [p.split("=", 1)[1] for p in CS.split(";") if p.lower().startswith("accesskey=")][0]


def rest_raw(method, path, body=b"", content_type=None, sign=True):
    """A REST call outside the SDK, signed the way the SDK signs (aud = the full URL)."""
    from azure.core.credentials import AzureKeyCredential
    from azure.messaging.webpubsubservice._patch import JwtCredentialPolicy

    url = ENDPOINT + path
    req = urllib.request.Request(url, method=method, data=body if method in ("POST", "PUT") else None)
    if content_type:
        req.add_header("Content-Type", content_type)
    if sign:
        req.add_header("Authorization", "Bearer " + JwtCredentialPolicy(AzureKeyCredential(KEY))._encode(url))
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def stats():
    return hook("stats", "GET")


class Recorder:
    """A Python SDK client with every callback recorded."""

    def __init__(self, hub, protocol=WebPubSubProtocolType.JSON_RELIABLE, **token):
        self.hub = hub
        self.token = token
        self.urls = 0
        self.lock = threading.Lock()
        self.group_messages = []
        self.server_messages = []
        self.connected = []
        self.disconnected = []
        self.rejoin_failed = []
        self.stopped = threading.Event()

        def provider():
            self.urls += 1
            return url_for(hub, **token)

        self.client = WebPubSubClient(
            credential=WebPubSubClientCredential(client_access_url_provider=provider),
            protocol_type=protocol,
            message_retry_total=0,
            ack_timeout=5,
        )
        c = self.client
        c.subscribe(CallbackType.GROUP_MESSAGE, lambda e: self._add(self.group_messages, e))
        c.subscribe(CallbackType.SERVER_MESSAGE, lambda e: self._add(self.server_messages, e))
        c.subscribe(CallbackType.CONNECTED, self._on_connected)
        c.subscribe(CallbackType.DISCONNECTED, lambda e: self._add(self.disconnected, e))
        c.subscribe(CallbackType.REJOIN_GROUP_FAILED, lambda e: self._add(self.rejoin_failed, e))
        c.subscribe(CallbackType.STOPPED, lambda *a: self.stopped.set())

    def _on_connected(self, e):
        # Python SDK 1.1.0 sends, then starts waiting on a condition without checking whether the ack already
        # came: an ack faster than that (loopback) is missed and the call waits ack_timeout. Delaying acks by a
        # few milliseconds (an emulator hook) keeps these tests fast and deterministic.
        try:
            hook(f"connections/{e.connection_id}/delay-acks?ms=25")
        except Exception:
            pass
        self._add(self.connected, e)

    def _add(self, lst, e):
        with self.lock:
            lst.append(e)

    def __enter__(self):
        self.client.open()
        wait_until(lambda: self.connected, what="connected callback")
        return self

    def __exit__(self, *a):
        try:
            self.client.close()
        except Exception:
            pass

    @property
    def connection_id(self):
        return self.connected[-1].connection_id

    def group_data(self):
        with self.lock:
            return [m.data for m in self.group_messages]


def raw_ws(hub, subprotocol=RELIABLE, **token):
    sp = [subprotocol] if subprotocol else None
    return ws_connect(url_for(hub, **token), subprotocols=sp, open_timeout=5, max_size=None)


def recv_json(ws, timeout=5):
    return json.loads(ws.recv(timeout=timeout))


def recovery_url(hub, connection_id, reconnection_token):
    """The URL a reliable client reconnects to in order to recover `connection_id`."""
    return url_for(hub) + f"&awps_connection_id={connection_id}&awps_reconnection_token={reconnection_token}"


def drop_raw(ws, connection_id, timeout):
    """Drops `connection_id` through the hook and waits (at most `timeout`) until the raw socket sees it."""
    hook(f"connections/{connection_id}/drop")
    try:
        ws.recv(timeout=timeout)
    except (ConnectionClosed, TimeoutError):
        pass
    ws.close()


def expect_close(ws, code, timeout=5):
    deadline = time.time() + timeout
    try:
        while time.time() < deadline:
            ws.recv(timeout=max(0.1, deadline - time.time()))
    except ConnectionClosed as e:
        got = e.rcvd.code if e.rcvd else None
        check(got == code, f"expected close {code}, got {got}")
        return
    except TimeoutError:
        pass
    raise Failure(f"expected close {code}, connection stayed open")


# --------------------------------------------------------------------------------------------- scenarios


def s_handshake():
    hub = "hs" + uuid.uuid4().hex[:6]
    for sp in (RELIABLE, JSONP):
        with raw_ws(hub, sp, user_id="u1") as ws:
            check(ws.subprotocol == sp, f"subprotocol not echoed: {ws.subprotocol}")
            first = recv_json(ws)
            check(first["type"] == "system" and first["event"] == "connected", f"first frame {first}")
            check(first["userId"] == "u1" and len(first["connectionId"]) == 32, f"connected {first}")
            check(("reconnectionToken" in first) == (sp == RELIABLE), f"reconnectionToken presence {first}")
    # A plain WebSocket client (no subprotocol) is accepted and gets no JSON frames.
    with raw_ws(hub, None) as ws:
        check(ws.subprotocol is None, "raw client got a subprotocol")
    # Tokens: bad signature, expired, wrong audience, missing → 401.
    good = url_for(hub)
    bad_sig = good[:-3] + ("AAA" if not good.endswith("AAA") else "BBB")
    other_key = "Endpoint=%s;AccessKey=%s;Version=1.0;" % (ENDPOINT, "Z" * 44)
    wrong_key = WebPubSubServiceClient.from_connection_string(other_key, hub=hub).get_client_access_token()["url"]
    wrong_aud = service("otherhub").get_client_access_token()["url"].replace("otherhub", hub)
    expired = service(hub).get_client_access_token(minutes_to_expire=-10)["url"]
    no_token = ENDPOINT.replace("http", "ws") + "/client/hubs/" + hub
    for name, url in [("bad signature", bad_sig), ("wrong key", wrong_key), ("wrong audience", wrong_aud),
                      ("expired", expired), ("missing", no_token)]:
        try:
            ws_connect(url, subprotocols=[RELIABLE], open_timeout=5).close()
            raise Failure(f"{name} token accepted")
        except InvalidStatus as e:
            check(e.response.status_code == 401, f"{name}: status {e.response.status_code}")
    # /client/?hub= form.
    tok = service(hub).get_client_access_token()["token"]
    with ws_connect(f"{ENDPOINT.replace('http', 'ws')}/client/?hub={hub}&access_token={tok}", subprotocols=[JSONP]) as ws:
        check(recv_json(ws)["event"] == "connected", "query-hub form")


def s_acks():
    hub = "ack" + uuid.uuid4().hex[:6]
    with raw_ws(hub, RELIABLE, roles=["webpubsub.joinLeaveGroup.allowed"]) as ws:
        recv_json(ws)
        ws.send(json.dumps({"type": "joinGroup", "group": "allowed", "ackId": 1}))
        a = recv_json(ws)
        check(a == {"type": "ack", "ackId": 1, "success": True}, f"ack {a}")
        ws.send(json.dumps({"type": "joinGroup", "group": "allowed", "ackId": 1}))
        a = recv_json(ws)
        check(not a["success"] and a["error"]["name"] == "Duplicate", f"duplicate {a}")
        ws.send(json.dumps({"type": "joinGroup", "group": "denied", "ackId": 2}))
        a = recv_json(ws)
        check(not a["success"] and a["error"]["name"] == "Forbidden", f"forbidden {a}")
        # A failed request is not remembered: the same id runs again.
        ws.send(json.dumps({"type": "sendToGroup", "group": "denied", "ackId": 2, "dataType": "text", "data": "x"}))
        a = recv_json(ws)
        check(a["error"]["name"] == "Forbidden", f"retry of failed id {a}")
        ws.send(json.dumps({"type": "ping"}))
        check(recv_json(ws) == {"type": "pong"}, "pong")
        # sequenceAck 0, repeats, and beyond the last id are accepted silently.
        for n in (0, 0, 5):
            ws.send(json.dumps({"type": "sequenceAck", "sequenceId": n}))
        ws.send(json.dumps({"type": "leaveGroup", "group": "allowed", "ackId": 3}))
        check(recv_json(ws)["success"], "leave ack")
    # SDK view: Forbidden raises SendMessageError; Duplicate counts as success.
    with Recorder(hub, user_id="u") as r:
        try:
            r.client.join_group("nope")
            raise Failure("join without permission succeeded")
        except SendMessageError as e:
            check(e.error_detail.name == "Forbidden", f"SDK forbidden {e.error_detail.name}")
    with Recorder(hub, roles=["webpubsub.joinLeaveGroup"]) as r:
        r.client.join_group("g", ack_id=77)
        r.client.join_group("g", ack_id=77)  # Duplicate → success for the SDK
        # fail-acks hook: the next ack is InternalServerError and the request is not executed.
        hook(f"connections/{r.connection_id}/fail-acks?count=1")
        try:
            r.client.join_group("h", ack_id=78)
            raise Failure("fail-acks hook ignored")
        except SendMessageError as e:
            check(e.error_detail.name == "InternalServerError", f"fail-acks {e.error_detail.name}")
        r.client.join_group("h", ack_id=78)  # retry with the same id really runs
        conns = {c["connectionId"]: c for c in hook("connections", "GET")}
        check(sorted(conns[r.connection_id]["groups"]) == ["g", "h"], f"groups {conns[r.connection_id]}")


def s_fanout():
    hub = "fan" + uuid.uuid4().hex[:6]
    roles = ["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"]
    with Recorder(hub, user_id="alice", roles=roles) as a, Recorder(hub, user_id="bob", roles=roles,
                                                                     protocol=WebPubSubProtocolType.JSON) as b:
        a.client.join_group("g")
        b.client.join_group("g")
        a.client.send_to_group("g", "echoed", WebPubSubDataType.TEXT)
        a.client.send_to_group("g", "quiet", WebPubSubDataType.TEXT, no_echo=True)
        a.client.send_to_group("g", {"k": [1, 2]}, WebPubSubDataType.JSON)
        a.client.send_to_group("g", memoryview(b"\x00\x01\xff"), WebPubSubDataType.BINARY)
        wait_until(lambda: len(b.group_messages) == 4, what="bob's 4 messages")
        wait_until(lambda: len(a.group_messages) == 3, what="alice's 3 messages")
        time.sleep(0.3)
        check(a.group_data()[:1] == ["echoed"] and "quiet" not in a.group_data(), f"alice {a.group_data()}")
        bd = b.group_data()
        check(bd[0] == "echoed" and bd[1] == "quiet" and bd[2] == {"k": [1, 2]}, f"bob {bd}")
        check(bytes(bd[3]) == b"\x00\x01\xff", f"binary {bd[3]!r}")
        check(all(m.from_user_id == "alice" for m in b.group_messages), "fromUserId")
        check([m.sequence_id for m in a.group_messages] == [1, 2, 3], f"reliable ids {[m.sequence_id for m in a.group_messages]}")
        check(all(m.sequence_id is None for m in b.group_messages), "non-reliable got sequenceId")
        # Server messages: text, json (a str body is JSON), binary.
        svc = service(hub)
        svc.send_to_connection(a.connection_id, "plain", content_type="text/plain")
        svc.send_to_connection(a.connection_id, {"hello": "world"})
        svc.send_to_connection(a.connection_id, "quoted")
        svc.send_to_connection(a.connection_id, b"\x01\x02", content_type="application/octet-stream")
        wait_until(lambda: len(a.server_messages) == 4, what="4 server messages")
        sm = a.server_messages
        check([m.data_type for m in sm] == ["text", "json", "json", "binary"], f"types {[m.data_type for m in sm]}")
        check(sm[0].data == "plain" and sm[1].data == {"hello": "world"} and sm[2].data == "quoted", "server data")
        check(bytes(sm[3].data) == b"\x01\x02", "server binary")
    s = stats()
    check(s["groupMessagesPublished"] >= 4, f"stats {s}")


def s_recovery():
    hub = "rec" + uuid.uuid4().hex[:6]
    with Recorder(hub, user_id="r", roles=["webpubsub.joinLeaveGroup"]) as r:
        r.client.join_group("g")
        svc = service(hub)
        for i in range(5):
            svc.send_to_group("g", f"m{i}", content_type="text/plain")
        wait_until(lambda: len(r.group_messages) == 5, what="first 5")
        first_id = r.connection_id
        hook(f"connections/{first_id}/drop")
        for i in range(5, 40):
            svc.send_to_group("g", f"m{i}", content_type="text/plain")
        wait_until(lambda: len(r.group_messages) >= 40, timeout=20, what="all 40 after recovery")
        time.sleep(1.5)
        got = r.group_data()
        check(got == [f"m{i}" for i in range(40)], f"order/duplicates: {got}")
        check(len(r.connected) == 1 and r.urls == 1, f"recovered as a new connection ({len(r.connected)}, {r.urls} urls)")
        conns = hook("connections", "GET")
        check([c["connectionId"] for c in conns if c["hub"] == hub] == [first_id], f"connection id changed {conns}")
        check(stats()["recoveries"] >= 1, "recoveries counter")


def s_dead_session():
    hub = "dead" + uuid.uuid4().hex[:6]
    with Recorder(hub, user_id="d", roles=["webpubsub.joinLeaveGroup"]) as r:
        r.client.join_group("g1")
        r.client.join_group("g2")
        first_id = r.connection_id
        hook(f"connections/{first_id}/expire")
        wait_until(lambda: len(r.connected) == 2, timeout=20, what="reconnect after 1008")
        check(r.connection_id != first_id and r.urls == 2, "not a fresh connection")
        conns = {c["connectionId"]: c for c in hook("connections", "GET")}
        wait_until(lambda: sorted(hook("connections", "GET") and
                                  {c["connectionId"]: c for c in hook("connections", "GET")}[r.connection_id]["groups"]) == ["g1", "g2"],
                   what="rejoined groups")
        check(first_id not in conns, "old session still listed")
        service(hub).send_to_group("g2", "after", content_type="text/plain")
        wait_until(lambda: "after" in r.group_data(), what="message after rejoin")
        check(not r.rejoin_failed, "rejoin failed")


def s_kick():
    hub = "kick" + uuid.uuid4().hex[:6]
    with Recorder(hub, user_id="k", roles=["webpubsub.joinLeaveGroup"]) as r:
        first_id = r.connection_id
        svc = service(hub)
        check(svc.connection_exists(first_id), "exists before kick")
        svc.close_connection(first_id, reason="kicked by test")
        wait_until(lambda: r.disconnected, what="disconnected callback")
        check(any(d.message == "kicked by test" for d in r.disconnected), f"reason {[d.message for d in r.disconnected]}")
        wait_until(lambda: len(r.connected) == 2, timeout=20, what="reconnect after kick")
        check(not svc.connection_exists(first_id), "kicked connection still exists")
    # Raw view: disconnected message then close 1000; recovery gets 1008.
    with raw_ws(hub, RELIABLE) as ws:
        c = recv_json(ws)
        service(hub).close_connection(c["connectionId"], reason="bye")
        d = recv_json(ws)
        check(d == {"type": "system", "event": "disconnected", "message": "bye"}, f"disconnected {d}")
        expect_close(ws, 1000)
    rec = recovery_url(hub, c["connectionId"], c["reconnectionToken"])
    with ws_connect(rec, subprotocols=[RELIABLE], open_timeout=5) as ws:
        expect_close(ws, 1008)


def s_reliable_raw():
    """sequenceAck bookkeeping, replay after a drop, and buffer overflow, seen on the wire."""
    hub = "rr" + uuid.uuid4().hex[:6]
    svc = service(hub)
    ws = raw_ws(hub, RELIABLE, groups=["g"])
    c = recv_json(ws)
    for i in range(4):
        svc.send_to_group("g", f"x{i}", content_type="text/plain")
    got = [recv_json(ws) for _ in range(4)]
    check([m["sequenceId"] for m in got] == [1, 2, 3, 4], f"ids {got}")
    ws.send(json.dumps({"type": "sequenceAck", "sequenceId": 2}))
    wait_until(lambda: unacked(c["connectionId"]) == 2, what="the sequenceAck to land")
    drop_raw(ws, c["connectionId"], timeout=3)
    svc.send_to_group("g", "x4", content_type="text/plain")
    rec = recovery_url(hub, c["connectionId"], c["reconnectionToken"])
    with ws_connect(rec, subprotocols=[RELIABLE], open_timeout=5) as ws2:
        again = recv_json(ws2)
        check(again["event"] == "connected" and again["connectionId"] == c["connectionId"], f"reconnected {again}")
        replay = [recv_json(ws2) for _ in range(3)]
        check([(m["sequenceId"], m["data"]) for m in replay] == [(3, "x2"), (4, "x3"), (5, "x4")], f"replay {replay}")
        # Overflow: 1,000 unacked messages max; the next closes with 1008 and the session is gone.
        for i in range(1000):
            svc.send_to_group("g", "y", content_type="text/plain")
        expect_close(ws2, 1008, timeout=20)
    with ws_connect(rec, subprotocols=[RELIABLE], open_timeout=5) as ws3:
        expect_close(ws3, 1008)


def s_nonreliable():
    hub = "nr" + uuid.uuid4().hex[:6]
    with raw_ws(hub, JSONP, groups=["g"]) as ws:
        c = recv_json(ws)
        check("reconnectionToken" not in c, "reconnection token on json protocol")
        service(hub).send_to_group("g", "v", content_type="text/plain")
        m = recv_json(ws)
        check("sequenceId" not in m and m["data"] == "v" and m["fromUserId"] is None, f"message {m}")
        hook(f"connections/{c['connectionId']}/drop")
    wait_until(lambda: not service(hub).connection_exists(c["connectionId"]), what="the non-reliable session to end after a drop")
    # Raw (plain) clients get payloads as frames.
    with raw_ws(hub, None, groups=["g"]) as ws:
        svc = service(hub)
        svc.send_to_group("g", "t", content_type="text/plain")
        svc.send_to_group("g", {"a": 1})
        svc.send_to_group("g", b"\x07", content_type="application/octet-stream")
        check(ws.recv(timeout=5) == "t", "raw text")
        check(json.loads(ws.recv(timeout=5)) == {"a": 1}, "raw json")
        check(ws.recv(timeout=5) == b"\x07", "raw binary")
    # Plain clients in webpubsub_mode=sendToGroup publish every frame to the group (1008 without permission).
    with raw_ws(hub, JSONP, groups=["g"]) as rx:
        recv_json(rx)
        url = url_for(hub, user_id="pub", roles=["webpubsub.sendToGroup.g"]) + "&webpubsub_mode=sendToGroup&group=g"
        with ws_connect(url, open_timeout=5) as pub:
            pub.send("from raw")
            m = recv_json(rx)
            check(m["data"] == "from raw" and m["dataType"] == "text" and m["fromUserId"] == "pub", f"raw publish {m}")
        url = url_for(hub, user_id="pub") + "&webpubsub_mode=sendToGroup&group=g"
        with ws_connect(url, open_timeout=5) as pub:
            pub.send("denied")
            expect_close(pub, 1008)


def s_bad_input():
    hub = "bad" + uuid.uuid4().hex[:6]
    bystander = raw_ws(hub, RELIABLE, groups=["g"])
    recv_json(bystander)
    cases = [
        ("bad json", "{not json", 1007),
        ("unknown type", json.dumps({"type": "teleport"}), 1007),
        ("missing group", json.dumps({"type": "joinGroup", "ackId": 1}), 1007),
        ("bad event name", json.dumps({"type": "event", "event": "9bad", "dataType": "text", "data": "x"}), 1007),
        ("bad base64", json.dumps({"type": "sendToGroup", "group": "g", "dataType": "binary", "data": "@@@"}), 1007),
        ("text data not string", json.dumps({"type": "sendToGroup", "group": "g", "dataType": "text", "data": 5}), 1007),
        ("binary frame", b'{"type":"ping"}', 1003),
        ("oversized", json.dumps({"type": "sendToGroup", "group": "g", "dataType": "text", "data": "x" * (1 << 20)}), 1009),
    ]
    for name, frame, code in cases:
        with raw_ws(hub, RELIABLE) as ws:
            recv_json(ws)
            ws.send(frame)
            try:
                d = recv_json(ws)
            except Exception as e:
                raise Failure(f"{name}: {e!r}")
            check(d["type"] == "system" and d["event"] == "disconnected", f"{name}: {d}")
            try:
                expect_close(ws, code)
            except Failure as e:
                raise Failure(f"{name}: {e}")
    # Invalid and expired tokens get 401 at the upgrade.
    for url in [service(hub).get_client_access_token(minutes_to_expire=-10)["url"], url_for(hub) + "x"]:
        try:
            ws_connect(url, subprotocols=[RELIABLE], open_timeout=5).close()
            raise Failure("bad token accepted")
        except InvalidStatus as e:
            check(e.response.status_code == 401, f"bad token status {e.response.status_code}")
    # The bystander is still served.
    service(hub).send_to_group("g", "still here", content_type="text/plain")
    check(recv_json(bystander)["data"] == "still here", "bystander")
    bystander.close()
    # REST: bad paths, bodies, tokens.
    svc = service(hub)
    v = "api-version=2024-12-01"
    for method, path, body, ct, want in [
        ("POST", f"/api/hubs/{hub}/:send?{v}", b"{bad", "application/json", 400),
        ("POST", f"/api/hubs/{hub}/:send?{v}", b"x", "image/png", 415),
        ("POST", f"/api/hubs/{hub}/:send?{v}&messageTtlSeconds=999", b"x", "text/plain", 400),
        ("POST", f"/api/hubs/{hub}/:send", b"x", "text/plain", 400),
        ("POST", f"/api/hubs/{hub}/:addToGroups?{v}", b"[1,2]", "application/json", 400),
        ("POST", f"/api/hubs/{hub}/:nonsense?{v}", b"", None, 404),
        ("PUT", f"/api/hubs/{hub}/permissions/fly/connections/c1?{v}", b"", None, 400),
        ("PUT", f"/api/hubs/{hub}/groups/g/connections/missing?{v}", b"", None, 404),
        ("POST", f"/api/hubs/9bad/:send?{v}", b"x", "text/plain", 400),
        ("GET", f"/api/hubs/{hub}/groups/g/connections?{v}", b"", None, 200),
    ]:
        status, body_out = rest_raw(method, path, body, ct)
        check(status == want, f"{method} {path}: {status} (wanted {want}) {body_out[:200]!r}")
        if status >= 400:
            detail = json.loads(body_out)
            check("code" in detail and "message" in detail, f"ErrorDetail {detail}")
    status, _ = rest_raw("POST", f"/api/hubs/{hub}/:send?{v}", b"x", "text/plain", sign=False)
    check(status == 401, f"unsigned REST call: {status}")
    try:
        svc.send_to_all("x", content_type="text/plain", filter="userId eq")
        raise Failure("bad filter accepted")
    except HttpResponseError as e:
        check(e.status_code == 400, f"bad filter status {e.status_code}")
    for path, method, want in [("/api/nothing", "GET", 404), ("/client/hubs/" + hub, "GET", 400)]:
        try:
            urllib.request.urlopen(urllib.request.Request(ENDPOINT + path, method=method, data=b"" if method == "POST" else None), timeout=5)
            raise Failure(f"{path} succeeded")
        except urllib.error.HTTPError as e:
            check(e.code == want, f"{path}: {e.code}")
            if e.code != 401:
                body = json.loads(e.read())
                check("code" in body and "message" in body, f"ErrorDetail {body}")


def s_rest():
    hub = "rest" + uuid.uuid4().hex[:6]
    svc = service(hub)
    with Recorder(hub, user_id="u1") as a, Recorder(hub, user_id="u2") as b:
        ca, cb = a.connection_id, b.connection_id
        check(svc.connection_exists(ca) and not svc.connection_exists("nope"), "connection_exists")
        check(svc.user_exists("u1") and not svc.user_exists("zz"), "user_exists")
        svc.add_connection_to_group("g", ca)
        svc.add_user_to_group("g", "u2")
        check(svc.group_exists("g") and not svc.group_exists("empty"), "group_exists")
        members = sorted((m.connection_id, m.user_id) for m in svc.list_connections(group="g"))
        check(members == sorted([(ca, "u1"), (cb, "u2")]), f"list_connections {members}")
        paged = list(svc.list_connections(group="g", maxpagesize=1))
        check(len(paged) == 2, f"paging {paged}")
        svc.send_to_group("g", "to-group", content_type="text/plain", excluded=[cb])
        svc.send_to_all("to-all", content_type="text/plain", filter="userId ne 'u1'")
        svc.send_to_user("u1", "to-user", content_type="text/plain")
        svc.send_to_all("to-g-filter", content_type="text/plain", filter="'g' in groups and userId eq 'u2'")
        wait_until(lambda: len(a.group_messages) == 1 and len(a.server_messages) == 1 and len(b.server_messages) == 2,
                   what="REST deliveries")
        check(a.group_messages[0].data == "to-group" and a.server_messages[0].data == "to-user", "a's messages")
        check([m.data for m in b.server_messages] == ["to-all", "to-g-filter"], f"b's messages {[m.data for m in b.server_messages]}")
        # Permissions.
        check(not svc.has_permission("joinLeaveGroup", ca, target_name="p"), "no permission yet")
        svc.grant_permission("joinLeaveGroup", ca, target_name="p")
        check(svc.has_permission("joinLeaveGroup", ca, target_name="p"), "granted")
        a.client.join_group("p")
        svc.revoke_permission("joinLeaveGroup", ca, target_name="p")
        check(not svc.has_permission("joinLeaveGroup", ca, target_name="p"), "revoked")
        try:
            a.client.leave_group("p")
            raise Failure("revoke did not take effect")
        except SendMessageError as e:
            check(e.error_detail.name == "Forbidden", "revoke → Forbidden")
        svc.grant_permission("sendToGroup", ca)
        check(svc.has_permission("sendToGroup", ca), "granted for all groups")
        a.client.send_to_group("g", "from-a", WebPubSubDataType.TEXT)
        # Removal.
        svc.remove_connection_from_group("g", ca)
        svc.remove_user_from_group("g", "u2")
        check(not svc.group_exists("g"), "group emptied")
        svc.add_connection_to_group("x", ca)
        svc.add_connection_to_group("y", ca)
        svc.remove_connection_from_all_groups(ca)
        svc.add_user_to_group("z", "u2")
        svc.remove_user_from_all_groups("u2")
        check(not svc.group_exists("x") and not svc.group_exists("z"), "remove from all groups")
        # :addToGroups / :removeFromGroups (REST only; not in the Python SDK 1.3.0).
        status, _ = rest_raw("POST", f"/api/hubs/{hub}/:addToGroups?api-version=2024-12-01",
                             json.dumps({"groups": ["fa", "fb"], "filter": "userId eq 'u2'"}).encode(), "application/json")
        check(status == 200 and svc.group_exists("fa") and [m.user_id for m in svc.list_connections(group="fb")] == ["u2"],
              f"addToGroups {status}")
        status, _ = rest_raw("POST", f"/api/hubs/{hub}/:removeFromGroups?api-version=2024-12-01",
                             json.dumps({"groups": ["fa", "fb"]}).encode(), "application/json")
        check(status == 200 and not svc.group_exists("fa"), f"removeFromGroups {status}")
        # Hub names are case-insensitive.
        check(service(hub.upper()).connection_exists(ca), "hub case")
        # Tokens from the service itself.
        tok = svc.get_client_access_token(user_id="t", roles=["webpubsub.sendToGroup"], groups=["g"])
        check(tok["url"].startswith(ENDPOINT.replace("http", "ws") + "/client/hubs/" + hub), f"url {tok['baseUrl']}")
        # Closing: group, user, all.
        svc.add_connection_to_group("c", ca)
        svc.close_group_connections("c", reason="g-close")
        wait_until(lambda: any(d.message == "g-close" for d in a.disconnected), what="group close")
        svc.close_user_connections("u2", reason="u-close")
        wait_until(lambda: any(d.message == "u-close" for d in b.disconnected), what="user close")
        wait_until(lambda: len(a.connected) == 2 and len(b.connected) == 2, timeout=20, what="reconnects")
        svc.close_all_connections(excluded=[b.connection_id], reason="all-close")
        wait_until(lambda: any(d.message == "all-close" for d in a.disconnected), what="close all")
        check(not any(d.message == "all-close" for d in b.disconnected), "excluded connection closed")
    # :generateToken through REST (the SDK uses it with a TokenCredential): call it directly.
    status, body = rest_raw("POST", f"/api/hubs/{hub}/:generateToken?api-version=2024-12-01&userId=q&role=r1&role=r2")
    check(status == 200, f"generateToken status {status}")
    token = json.loads(body)["token"]
    payload = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    check(payload["sub"] == "q" and payload["role"] == ["r1", "r2"], f"generateToken {payload}")
    with ws_connect(f"{ENDPOINT.replace('http', 'ws')}/client/hubs/{hub}?access_token={token}", subprotocols=[JSONP]) as ws:
        check(recv_json(ws)["userId"] == "q", "generated token connects")


def s_events():
    hub = "ev" + uuid.uuid4().hex[:6]
    with Recorder(hub, user_id="eve") as r:
        order = []
        r.client.subscribe(CallbackType.SERVER_MESSAGE, lambda e: order.append("message"))
        r.client.send_event("echo", "hi", WebPubSubDataType.TEXT)
        order.append("ack")
        check(order == ["message", "ack"], f"order {order}")
        check(r.server_messages[0].data == "echo:hi" and r.server_messages[0].data_type == "text", f"reply {r.server_messages[0].data}")
        r.client.send_event("jsonecho", {"n": 1}, WebPubSubDataType.JSON)
        wait_until(lambda: len(r.server_messages) == 2, what="json reply")
        check(r.server_messages[1].data == {"got": {"n": 1}, "userId": "eve", "signatureOK": True}, f"json reply {r.server_messages[1].data}")
        r.client.send_event("silent", "x", WebPubSubDataType.TEXT)  # 204: no message, still an ack
        try:
            r.client.send_event("fail", "x", WebPubSubDataType.TEXT)
            raise Failure("failing handler acked")
        except SendMessageError as e:
            check(e.error_detail.name == "InternalServerError", f"fail → {e.error_detail.name}")
        check(r.client.is_connected(), "connection dropped after a failing handler")
        wait_until(lambda: len(r.server_messages) >= 2, what="the messages for echo and 204")
        time.sleep(0.3)
        check(len(r.server_messages) == 2, f"server messages {len(r.server_messages)}")
    # invoke → invokeResponse (newer protocol; not in Python 1.1.0, so on the wire).
    with raw_ws(hub, RELIABLE, user_id="inv") as ws:
        recv_json(ws)
        ws.send(json.dumps({"type": "invoke", "invocationId": "1", "target": "event", "event": "echo", "dataType": "text", "data": "hi"}))
        r1 = recv_json(ws)
        check(r1 == {"type": "invokeResponse", "invocationId": "1", "success": True, "dataType": "text", "data": "echo:hi"}, f"invoke {r1}")
        ws.send(json.dumps({"type": "invoke", "invocationId": "2", "event": "fail", "dataType": "text", "data": "x"}))
        r2 = recv_json(ws)
        check(r2["invocationId"] == "2" and r2["success"] is False and r2["error"]["name"] == "InternalServerError", f"invoke fail {r2}")
        ws.send(json.dumps({"type": "cancelInvocation", "invocationId": "3"}))
        ws.send(json.dumps({"type": "ping"}))
        check(recv_json(ws) == {"type": "pong"}, "cancelInvocation accepted")
    # The upstream saw connect, connected, events and (after close) disconnected.
    deadline = time.time() + 10
    while time.time() < deadline:
        with urllib.request.urlopen(UPSTREAM + "/log", timeout=5) as resp:
            log = json.loads(resp.read())
        types = [e["type"] for e in log if e["hub"] == hub]
        if "azure.webpubsub.sys.disconnected" in types:
            break
        time.sleep(0.1)
    for t in ["azure.webpubsub.sys.connect", "azure.webpubsub.sys.connected", "azure.webpubsub.user.echo",
              "azure.webpubsub.sys.disconnected"]:
        check(t in types, f"upstream never saw {t}: {types}")
    check(all(e["signatureOK"] for e in log if e["hub"] == hub), "bad ce-signature")
    check(any(e.get("validated") for e in log), "no abuse-protection handshake")


def s_connect_reject():
    hub = "deny" + uuid.uuid4().hex[:6]
    try:
        ws_connect(url_for(hub, user_id="blocked"), subprotocols=[RELIABLE], open_timeout=5).close()
        raise Failure("connect handler 403 ignored")
    except InvalidStatus as e:
        check(e.response.status_code == 403, f"status {e.response.status_code}")
    # connect response can override userId and add groups.
    with raw_ws(hub, RELIABLE, user_id="renameme") as ws:
        c = recv_json(ws)
        check(c["userId"] == "renamed", f"connect userId override {c}")
        service(hub).send_to_group("fromconnect", "hi", content_type="text/plain")
        check(recv_json(ws)["data"] == "hi", "group from connect response")


def s_hooks():
    """pause/resume (silence, then in-order delivery), drop-acks, delay-acks, and Duplicate publishes not fanned out."""
    hub = "hk" + uuid.uuid4().hex[:6]
    svc = service(hub)
    with raw_ws(hub, RELIABLE, groups=["g"], roles=["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"]) as ws:
        cid = recv_json(ws)["connectionId"]
        hook(f"connections/{cid}/pause")
        check([c["paused"] for c in hook("connections", "GET") if c["connectionId"] == cid] == [True], "paused flag")
        for i in range(3):
            svc.send_to_group("g", f"p{i}", content_type="text/plain")
        pong = ws.ping()
        try:
            ws.recv(timeout=1.0)
            raise Failure("message delivered while paused")
        except TimeoutError:
            pass
        check(not pong.wait(0.5), "pong while paused")
        hook(f"connections/{cid}/resume")
        got = [recv_json(ws) for _ in range(3)]
        check([m["data"] for m in got] == ["p0", "p1", "p2"], f"after resume {got}")
        check(pong.wait(5), "no pong after resume")
        # drop-acks: the request runs, the ack never comes.
        hook(f"connections/{cid}/drop-acks?count=1")
        ws.send(json.dumps({"type": "joinGroup", "group": "dropped", "ackId": 10}))
        ws.send(json.dumps({"type": "ping"}))
        check(recv_json(ws) == {"type": "pong"}, "ack was not swallowed")
        check("dropped" in [c for c in hook("connections", "GET") if c["connectionId"] == cid][0]["groups"], "dropped-ack join ran")
        # delay-acks.
        hook(f"connections/{cid}/delay-acks?ms=700")
        t0 = time.time()
        ws.send(json.dumps({"type": "joinGroup", "group": "late", "ackId": 11}))
        a = recv_json(ws)
        check(a["ackId"] == 11 and a["success"] and time.time() - t0 >= 0.6, f"delayed ack {a} after {time.time() - t0:.2f}s")
        hook(f"connections/{cid}/delay-acks?ms=0")
        # A duplicate publish is answered Duplicate and does not fan out again.
        ws.send(json.dumps({"type": "sequenceAck", "sequenceId": 3}))
        before = stats()
        publish = {"type": "sendToGroup", "group": "g", "ackId": 20, "dataType": "text", "data": "once"}
        ws.send(json.dumps(publish))
        first = [recv_json(ws), recv_json(ws)]
        check(sorted(m["type"] for m in first) == ["ack", "message"], f"publish {first}")
        ws.send(json.dumps(publish))
        dup = recv_json(ws)
        check(dup["type"] == "ack" and dup["error"]["name"] == "Duplicate", f"duplicate {dup}")
        try:
            extra = ws.recv(timeout=0.5)
            raise Failure(f"duplicate fanned out again: {extra}")
        except TimeoutError:
            pass
        after = stats()
        check(after["groupMessagesPublished"] - before["groupMessagesPublished"] == 1, f"published {before} → {after}")
        check(after["messagesOut"] - before["messagesOut"] == 1, f"messagesOut {before} → {after}")
        # replay: unacked messages are sent again (duplicates a client must drop).
        ws.send(json.dumps({"type": "sequenceAck", "sequenceId": 3}))
        wait_until(lambda: unacked(cid) == 1, what="the sequenceAck to land")
        check(hook(f"connections/{cid}/replay") == {"replayed": 1}, "replay count")
        again = recv_json(ws)
        check(again["sequenceId"] == 4 and again["data"] == "once", f"replayed {again}")
        # frame hook: anything, verbatim (here an old sequence id and an unknown type).
        req = urllib.request.Request(ENDPOINT + f"/_emulator/connections/{cid}/frame", method="POST",
                                     data=b'{"type":"future","sequenceId":1}')
        urllib.request.urlopen(req, timeout=5).read()
        check(recv_json(ws) == {"type": "future", "sequenceId": 1}, "frame hook")
        # close hook: any code; a reliable session survives anything but 1008.
        hook(f"connections/{cid}/close?code=4000&reason=custom")
        expect_close(ws, 4000)
    check(service(hub).connection_exists(cid), "session lost after close 4000")
    with Recorder(hub, user_id="c", roles=["webpubsub.joinLeaveGroup"]) as r:
        r.client.join_group("g")
        first = r.connection_id
        hook(f"connections/{first}/close?code=1011&reason=transient")
        time.sleep(0.5)
        svc.send_to_group("g", "after-1011", content_type="text/plain")
        wait_until(lambda: "after-1011" in r.group_data(), timeout=15, what="message after 1011 recovery")
        check(len(r.connected) == 1 and r.urls == 1, f"1011 was not recovered in place: {len(r.connected)} connected, {r.urls} urls, {[d.message for d in r.disconnected]}")
        hook(f"connections/{first}/close?code=1008&reason=policy&disconnected=true")
        wait_until(lambda: len(r.connected) == 2, timeout=20, what="new connection after 1008")
        check(not service(hub).connection_exists(first), "1008 kept the session")


def s_ordering():
    """Concurrent publishers (3 sockets + REST threads): every reliable receiver sees sequence ids 1..N with no gap or
    duplicate, each publisher's messages in its own order, and exactly one copy of everything."""
    hub = "ord" + uuid.uuid4().hex[:6]
    per = 300
    receivers = [raw_ws(hub, RELIABLE, groups=["g"]) for _ in range(3)]
    for r in receivers:
        recv_json(r)
    pubs = [raw_ws(hub, JSONP, roles=["webpubsub.sendToGroup"]) for _ in range(3)]
    for p in pubs:
        recv_json(p)

    def publish_ws(i):
        for n in range(per):
            pubs[i].send(json.dumps({"type": "sendToGroup", "group": "g", "dataType": "json", "data": {"p": i, "n": n}}))

    def publish_rest():
        svc = service(hub)
        for n in range(60):
            svc.send_to_group("g", {"p": 9, "n": n})

    threads = [threading.Thread(target=publish_ws, args=(i,)) for i in range(3)] + [threading.Thread(target=publish_rest)]
    for t in threads:
        t.start()
    total = 3 * per + 60
    for idx, r in enumerate(receivers):
        got = [recv_json(r, timeout=20) for _ in range(total)]
        seqs = [m["sequenceId"] for m in got]
        check(seqs == list(range(1, total + 1)), f"receiver {idx}: sequence ids not contiguous")
        for p in (0, 1, 2, 9):
            ns = [m["data"]["n"] for m in got if m["data"]["p"] == p]
            check(ns == list(range(len(ns))) and len(ns) == (60 if p == 9 else per), f"receiver {idx}: publisher {p} order")
        r.send(json.dumps({"type": "sequenceAck", "sequenceId": total}))
    for t in threads:
        t.join(10)
    for w in receivers + pubs:
        w.close()


def s_shutdown():
    """Prints CONNECTED, then expects the emulator (stopped by the test) to send disconnected and close 1001."""
    ws = raw_ws("sd" + uuid.uuid4().hex[:6], RELIABLE)
    recv_json(ws)
    print("CONNECTED", flush=True)
    d = recv_json(ws, timeout=20)
    check(d["type"] == "system" and d["event"] == "disconnected", f"disconnected {d}")
    expect_close(ws, 1001)


def s_aio():
    """The asyncio client (aiohttp transport): fan-out, an abrupt drop with recovery, then a dead session."""
    import asyncio
    from azure.messaging.webpubsubclient.aio import WebPubSubClient as AioClient
    from azure.messaging.webpubsubclient.aio import WebPubSubClientCredential as AioCredential

    hub = "aio" + uuid.uuid4().hex[:6]

    async def main():
        got, connected = [], []

        async def provider():
            return url_for(hub, user_id="aio", roles=["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"])

        client = AioClient(credential=AioCredential(provider), message_retry_total=0)

        async def on_group(e):
            got.append(e.data)

        async def on_connected(e):
            connected.append(e.connection_id)

        await client.subscribe(CallbackType.GROUP_MESSAGE, on_group)
        await client.subscribe(CallbackType.CONNECTED, on_connected)
        await client.open()
        try:
            async def until(pred, what, timeout=15):
                deadline = time.time() + timeout
                while not pred():
                    if time.time() > deadline:
                        raise Failure(f"timed out waiting for {what}")
                    await asyncio.sleep(0.02)

            await until(lambda: connected, "connected")
            await client.join_group("g")
            await client.send_to_group("g", "a0", WebPubSubDataType.TEXT)
            await until(lambda: got == ["a0"], "own message")
            svc = service(hub)
            hook(f"connections/{connected[0]}/drop")
            for i in range(1, 20):
                svc.send_to_group("g", f"a{i}", content_type="text/plain")
            await until(lambda: len(got) >= 20, "messages after recovery")
            await asyncio.sleep(1.2)
            check(got == [f"a{i}" for i in range(20)] and len(connected) == 1, f"aio recovery {got} {connected}")
            hook(f"connections/{connected[0]}/expire")
            await until(lambda: len(connected) == 2, "reconnect after 1008", timeout=20)
            await until(lambda: service(hub).group_exists("g"), "rejoin")
            svc.send_to_group("g", "after", content_type="text/plain")
            await until(lambda: got[-1:] == ["after"], "message after rejoin")
        finally:
            await client.close()

    asyncio.run(main())


def s_recovery_window():
    """Run against an emulator whose recovery window is 3 s: after it, the session is gone and recovery gets 1008."""
    hub = "win" + uuid.uuid4().hex[:6]
    ws = raw_ws(hub, RELIABLE, groups=["g"])
    c = recv_json(ws)
    drop_raw(ws, c["connectionId"], timeout=2)
    check(service(hub).connection_exists(c["connectionId"]), "session gone before the window ended")
    check(service(hub).group_exists("g"), "groups dropped during the window")
    wait_until(lambda: not service(hub).connection_exists(c["connectionId"]), timeout=15, what="the session to end with the window")
    check(not service(hub).group_exists("g"), "group kept after the window")
    rec = recovery_url(hub, c["connectionId"], c["reconnectionToken"])
    with ws_connect(rec, subprotocols=[RELIABLE], open_timeout=5) as ws2:
        expect_close(ws2, 1008)
    # A forged reconnection token for a live session is refused too.
    with raw_ws(hub, RELIABLE) as live:
        c2 = recv_json(live)
        forged = recovery_url(hub, c2["connectionId"], c["reconnectionToken"])
        with ws_connect(forged, subprotocols=[RELIABLE], open_timeout=5) as ws3:
            expect_close(ws3, 1008)


def s_slow_client():
    """Run against an emulator whose outbound buffer limit is 1 MiB: a JSON client that stops reading is closed
    as a slow client instead of being buffered for without bound, and a reader in the same group gets everything."""
    import os
    import socket
    import urllib.parse
    hub = "slow" + uuid.uuid4().hex[:6]
    before = stats()
    # The slow client: a real upgrade on a raw TCP socket with a tiny receive buffer, then no more reads.
    url = urllib.parse.urlsplit(url_for(hub, user_id="slow", groups=["g"]))
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(5)
    sock.connect((url.hostname, url.port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET {url.path}?{url.query} HTTP/1.1\r\nHost: {url.netloc}\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                  f"Sec-WebSocket-Protocol: {JSONP}\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        check(chunk, "the emulator closed the upgrade")
        head += chunk
    check(head.startswith(b"HTTP/1.1 101"), f"upgrade answered {head[:40]!r}")
    slow_ids = [c["connectionId"] for c in hook("connections", "GET") if c["hub"] == hub]
    check(len(slow_ids) == 1, f"connections {slow_ids}")
    # A healthy reader in the same group.
    received = []
    with raw_ws(hub, JSONP, user_id="fast", groups=["g"]) as ws:
        recv_json(ws)  # connected

        def read():
            try:
                while len(received) < count:
                    m = json.loads(ws.recv(timeout=30))
                    if m.get("type") == "message":
                        received.append(len(m["data"]))
            except Exception:  # noqa: BLE001
                pass
        count = 160
        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        svc = service(hub)
        payload = "x" * 131072  # 160 × 128 KiB = 20 MiB: far past the limit plus what the kernels buffer
        for _ in range(count):
            svc.send_to_group("g", payload, content_type="text/plain")
        wait_until(lambda: not any(c["connectionId"] == slow_ids[0] for c in hook("connections", "GET")),
                   timeout=20, what="the slow client to be closed")
        reader.join(timeout=30)
        check(len(received) == count and set(received) == {131072}, f"the healthy reader got {len(received)} of {count}")
    check(stats()["slowClients"] - before["slowClients"] == 1, "slowClients counter")
    sock.close()


SCENARIOS = {name[2:]: fn for name, fn in globals().items() if name.startswith("s_")}
UPSTREAM = ""

if __name__ == "__main__":
    failed = False
    for arg in sys.argv[2:]:
        if arg.startswith("--upstream="):
            UPSTREAM = arg.split("=", 1)[1]
    for name in [a for a in sys.argv[2:] if not a.startswith("--")]:
        try:
            SCENARIOS[name]()
            print(f"PASS {name}", flush=True)
        except Exception as e:  # noqa: BLE001
            failed = True
            detail = str(e) if isinstance(e, Failure) else traceback.format_exc()
            print(f"FAIL {name}: {detail}", flush=True)
    sys.exit(1 if failed else 0)
