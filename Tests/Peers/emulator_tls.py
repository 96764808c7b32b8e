#!/usr/bin/env python3
"""The emulator's TLS listener and Entra ID mode, driven by the official Python SDKs.

Usage: emulator_tls.py CONNECTION_STRING CA_FILE SCENARIO [SCENARIO...] [--plain=http://HOST:PORT]
CONNECTION_STRING is the emulator's https:// one; CA_FILE the root that signed its certificate (the test CA);
--plain the emulator's plain listener, when it has one. Prints `PASS <scenario>` or `FAIL <scenario>: <reason>`
per scenario; exits 1 if any failed. Every wait is bounded; every client is closed.
"""
import base64
import contextlib
import faulthandler
import json
import os
import socket
import ssl
import sys
import threading
import time
import traceback
import urllib.error
import urllib.request
import uuid
import warnings

import certifi

from azure.core.credentials import AccessToken, AzureKeyCredential
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ServiceRequestError
from azure.messaging.webpubsubservice import WebPubSubServiceClient
from websockets.sync.client import connect as ws_connect

CS = sys.argv[1]
CA = sys.argv[2]
ENDPOINT = [p.split("=", 1)[1] for p in CS.split(";") if p.lower().startswith("endpoint=")][0].rstrip("/")
KEY = [p.split("=", 1)[1] for p in CS.split(";") if p.lower().startswith("accesskey=")][0]
PLAIN = ""
JSONP = "json.webpubsub.azure.v1"
ENTRA_AUDIENCE = "https://webpubsub.azure.com"
ENTRA_SCOPE = "https://webpubsub.azure.com/.default"
TRUSTED = ssl.create_default_context(cafile=CA)


class Failure(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Failure(msg)


def hub_name(prefix):
    return prefix + uuid.uuid4().hex[:6]


def hook(path, method="POST"):
    req = urllib.request.Request(ENDPOINT + "/_emulator/" + path, method=method, data=b"" if method == "POST" else None)
    with urllib.request.urlopen(req, timeout=5, context=TRUSTED) as r:
        return json.loads(r.read() or b"null")


def wss(url, subprotocol=JSONP):
    return ws_connect(url, subprotocols=[subprotocol], ssl=TRUSTED, open_timeout=5, max_size=None)


def recv_json(ws, timeout=5):
    return json.loads(ws.recv(timeout=timeout))


def recv_until(ws, pred, timeout=5, what="message"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        m = recv_json(ws, timeout=max(0.1, deadline - time.time()))
        if pred(m):
            return m
    raise Failure(f"timed out waiting for {what}")


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def fake_entra_jwt(aud=ENTRA_AUDIENCE, lifetime=3600, nbf_offset=None):
    """A made-up Entra ID access token: RS256 header, Entra-like claims, a signature nobody can check."""
    now = int(time.time())
    claims = {
        "aud": aud,
        "iss": "https://sts.windows.net/00000000-0000-0000-0000-000000000000/",
        "iat": now,
        "exp": now + lifetime,
        "oid": str(uuid.uuid4()),
        "tid": "00000000-0000-0000-0000-000000000000",
        "sub": "fake-app",
    }
    if nbf_offset is not None:
        claims["nbf"] = now + nbf_offset
    header = {"alg": "RS256", "typ": "JWT", "kid": "fake"}
    return ".".join([b64url(json.dumps(header).encode()), b64url(json.dumps(claims).encode()), b64url(os.urandom(256))])


class FakeEntraCredential:
    """A `TokenCredential` (what DefaultAzureCredential is) returning a made-up JWT; records the scopes asked for."""

    def __init__(self, **claims):
        self.claims = claims
        self.scopes = []

    def get_token(self, *scopes, **kwargs):
        self.scopes.append(scopes)
        token = fake_entra_jwt(**self.claims)
        return AccessToken(token, int(time.time()) + 3600)


def entra_client(hub, credential, endpoint=None, verify=CA):
    return WebPubSubServiceClient(endpoint=endpoint or ENDPOINT, hub=hub, credential=credential,
                                  connection_verify=verify, retry_total=0, connection_timeout=10, read_timeout=10)


def key_client(hub, verify=CA):
    return WebPubSubServiceClient.from_connection_string(CS, hub=hub, connection_verify=verify, retry_total=0, connection_timeout=10, read_timeout=10)


def expect_status(fn, status, what):
    try:
        fn()
    except HttpResponseError as e:
        check(e.status_code == status, f"{what}: expected {status}, got {e.status_code}: {e.message}")
        return e
    raise Failure(f"{what}: expected {status}, the call succeeded")


def connect_and_receive(service, hub, user):
    """get_client_access_token → a wss:// URL → connected → a REST message to that user arrives over TLS."""
    token = service.get_client_access_token(user_id=user, roles=["webpubsub.joinLeaveGroup"], groups=["g"])
    check(token["url"].startswith("wss://"), f"client access URL is not wss://: {token['url'][:40]}")
    check(token["baseUrl"] == ENDPOINT.replace("https://", "wss://") + f"/client/hubs/{hub}", f"baseUrl {token['baseUrl']}")
    with wss(token["url"]) as ws:
        hello = recv_json(ws)
        check(hello.get("event") == "connected" and hello.get("userId") == user, f"connected: {hello}")
        service.send_to_user(user, {"to": user}, content_type="application/json")
        m = recv_until(ws, lambda m: m.get("type") == "message", what="the message to the user")
        check(m.get("data") == {"to": user} and m.get("from") == "server", f"message: {m}")
        service.send_to_group("g", "to the group", content_type="text/plain")
        m = recv_until(ws, lambda m: m.get("type") == "message", what="the group message")
        check(m.get("data") == "to the group", f"group message: {m}")
        return hello["connectionId"]


# --------------------------------------------------------------------------------------------- scenarios


def s_sdk_key():
    """The service SDK over https:// with the access key, verifying the emulator against the test CA."""
    hub = hub_name("tlskey")
    service = key_client(hub)
    service.send_to_all("hello", content_type="text/plain")
    connect_and_receive(service, hub, "k1")
    # A paged list: the nextLink the emulator writes is https:// (requests would fail on http:// here).
    tokens = [service.get_client_access_token(user_id=f"p{i}", groups=["paged"])["url"] for i in range(3)]
    with contextlib.ExitStack() as stack:
        for u in tokens:
            recv_json(stack.enter_context(wss(u)))
        from azure.messaging.webpubsubservice._patch import JwtCredentialPolicy

        url = ENDPOINT + f"/api/hubs/{hub}/groups/paged/connections?api-version=2024-12-01&maxpagesize=1"
        req = urllib.request.Request(url)
        req.add_header("Authorization", "Bearer " + JwtCredentialPolicy(AzureKeyCredential(KEY))._encode(url))
        with urllib.request.urlopen(req, timeout=5, context=TRUSTED) as r:
            page = json.loads(r.read())
        check(len(page["value"]) == 1 and page.get("nextLink", "").startswith("https://"), f"page: {page}")
        members = list(service.list_connections(group="paged"))
        check(len(members) == 3, f"list_connections over https: {len(members)}")


def s_sdk_entra():
    """The service SDK with a TokenCredential (a fake Entra ID token): REST calls and get_client_access_token
    (REST :generateToken with the bearer token), whose wss:// URL connects."""
    hub = hub_name("entra")
    credential = FakeEntraCredential()
    service = entra_client(hub, credential)
    service.send_to_all("hello", content_type="text/plain")
    check(credential.scopes and all(s == (ENTRA_SCOPE,) for s in credential.scopes), f"scopes {credential.scopes}")
    connect_and_receive(service, hub, "e1")
    check(service.group_exists("g") is False, "group_exists after the client left")
    # Audience and lifetime are checked.
    expect_status(lambda: entra_client(hub, FakeEntraCredential(aud="https://management.azure.com")).send_to_all(
        "x", content_type="text/plain"), 401, "wrong audience")
    expect_status(lambda: entra_client(hub, FakeEntraCredential(lifetime=-3600)).send_to_all(
        "x", content_type="text/plain"), 401, "expired")
    expect_status(lambda: entra_client(hub, FakeEntraCredential(nbf_offset=3600)).send_to_all(
        "x", content_type="text/plain"), 401, "not valid yet")
    # Within the 5 minutes of skew: accepted.
    entra_client(hub, FakeEntraCredential(lifetime=-60)).send_to_all("skew", content_type="text/plain")
    if PLAIN:
        # Why TLS matters: azure-core refuses to send a bearer token over http.
        try:
            entra_client(hub, FakeEntraCredential(), endpoint=PLAIN).send_to_all("x", content_type="text/plain")
            raise Failure("azure-core sent a bearer token over http")
        except ServiceRequestError as e:
            check("https" in str(e).lower() or "tls" in str(e).lower(), f"http refusal: {e}")


def s_entra_off():
    """Without --entra-id: an Entra ID token is refused with 401 and the hint; the access key still works."""
    hub = hub_name("nontra")
    e = expect_status(lambda: entra_client(hub, FakeEntraCredential()).send_to_all("x", content_type="text/plain"),
                      401, "Entra ID mode off")
    check("--entra-id accept-unvalidated" in (e.message or ""), f"no hint in {e.message}")
    expect_status(lambda: entra_client(hub, FakeEntraCredential()).get_client_access_token(user_id="u"),
                  401, ":generateToken with Entra ID mode off")
    key_client(hub).send_to_all("still fine", content_type="text/plain")


def s_untrusted():
    """Without the test CA, the SDK and a WebSocket client refuse the emulator's certificate."""
    hub = hub_name("untr")
    try:
        key_client(hub, verify=True).send_to_all("x", content_type="text/plain")
        raise Failure("the SDK accepted a certificate from an unknown CA")
    except ServiceRequestError as e:
        check("certificate" in str(e).lower(), f"SDK error: {e}")
    url = key_client(hub).get_client_access_token(user_id="u")["url"]
    public = ssl.create_default_context(cafile=certifi.where())  # the public roots, whatever SSL_CERT_FILE says
    try:
        with ws_connect(url, subprotocols=[JSONP], ssl=public, open_timeout=5):
            raise Failure("websockets accepted a certificate from an unknown CA")
    except ssl.SSLCertVerificationError:
        pass


def s_python_client_wss():
    """The official Python client SDK (websocket-client underneath) over wss://, trusting the test CA through
    SSL_CERT_FILE (set by the caller), through a drop (recovery) and an expire (reconnect)."""
    from azure.messaging.webpubsubclient import WebPubSubClient, WebPubSubClientCredential
    from azure.messaging.webpubsubclient.models import CallbackType

    hub = hub_name("pyc")
    service = key_client(hub)
    got, connected, lock = [], [], threading.Lock()
    client = WebPubSubClient(
        credential=WebPubSubClientCredential(client_access_url_provider=lambda: service.get_client_access_token(
            user_id="py", roles=["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"])["url"]),
        message_retry_total=0, ack_timeout=5)
    client.subscribe(CallbackType.GROUP_MESSAGE, lambda e: got.append(e.data))
    client.subscribe(CallbackType.CONNECTED, lambda e: connected.append(e.connection_id))

    def wait_for(pred, what, timeout=15):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if pred():
                return
            time.sleep(0.02)
        raise Failure(f"timed out waiting for {what}")

    with client:
        wait_for(lambda: connected, "connected")
        first = connected[-1]
        client.join_group("room")
        service.send_to_group("room", "one", content_type="text/plain")
        wait_for(lambda: got == ["one"], "one")
        hook(f"connections/{first}/drop")
        service.send_to_group("room", "two", content_type="text/plain")
        wait_for(lambda: got == ["one", "two"], "two after the drop (recovered)")
        hook(f"connections/{first}/expire")
        wait_for(lambda: len(connected) >= 2 and connected[-1] != first, "a new connection after expire")
        wait_for(lambda: any(c["connectionId"] == connected[-1] and "room" in c["groups"]
                             for c in hook("connections", "GET")), "rejoined the group")
        service.send_to_group("room", "three", content_type="text/plain")
        wait_for(lambda: got == ["one", "two", "three"], "three after the reconnect")


def s_bad_handshakes():
    """Failing TLS handshakes (plain HTTP, TLS 1.1 only, garbage, a half ClientHello) each close their own
    connection only: a wss:// client opened before keeps receiving, and new ones connect."""
    hub = hub_name("badtls")
    service = key_client(hub)
    host, port = ENDPOINT.split("://", 1)[1].rsplit(":", 1)
    port = int(port)
    with wss(service.get_client_access_token(user_id="bystander", groups=["g"])["url"]) as bystander:
        recv_json(bystander)

        def bystander_receives(text):
            service.send_to_group("g", text, content_type="text/plain")
            m = recv_until(bystander, lambda m: m.get("type") == "message", what=text)
            check(m.get("data") == text, f"bystander got {m}")

        # 1. Plain HTTP on the TLS port: a plain-text 400, then close.
        with socket.create_connection((host, port), timeout=5) as s:
            s.sendall(b"GET /api/health HTTP/1.1\r\nHost: x\r\n\r\n")
            reply = b""
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                reply += chunk
            check(reply.startswith(b"HTTP/1.1 400") and b"TLS" in reply, f"plain HTTP got {reply[:80]!r}")
        bystander_receives("after plain http")

        # 2. A client that offers TLS 1.1 at most: refused (protocol_version alert).
        old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        old.check_hostname = False
        old.verify_mode = ssl.CERT_NONE
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            old.minimum_version = ssl.TLSVersion.TLSv1
            old.maximum_version = ssl.TLSVersion.TLSv1_1
        old.set_ciphers("DEFAULT:@SECLEVEL=0")
        try:
            with socket.create_connection((host, port), timeout=5) as raw, old.wrap_socket(raw, server_hostname="localhost"):
                raise Failure("a TLS 1.1 handshake succeeded")
        except ssl.SSLError as e:
            check("version" in str(e).lower() or "protocol" in str(e).lower(), f"TLS 1.1 error: {e}")
        bystander_receives("after TLS 1.1")

        # 3. Garbage that looks like a TLS record header.
        with socket.create_connection((host, port), timeout=5) as s:
            s.sendall(b"\x16\x03\x01\x00\x05hello, not a client hello" * 4)
            try:
                while s.recv(4096):
                    pass
            except ConnectionError:
                pass
        bystander_receives("after garbage")

        # 4. Half a ClientHello, then the client goes away.
        with socket.create_connection((host, port), timeout=5) as s:
            s.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
        bystander_receives("after half a hello")

        # New TLS clients still connect.
        with wss(service.get_client_access_token(user_id="late")["url"]) as late:
            check(recv_json(late).get("event") == "connected", "a new wss:// client after the bad handshakes")
        bystander_receives("at the end")


def s_silent_client():
    """A client that connects and never says a word is closed after the emulator's handshake timeout (the
    caller sets a short one); a wss:// bystander keeps receiving."""
    hub = hub_name("silent")
    service = key_client(hub)
    host, port = ENDPOINT.split("://", 1)[1].rsplit(":", 1)
    with wss(service.get_client_access_token(user_id="bystander", groups=["g"])["url"]) as bystander:
        recv_json(bystander)
        with socket.create_connection((host, int(port)), timeout=20) as s:
            try:
                check(s.recv(4096) == b"", "the silent client got bytes")
            except ConnectionError:
                pass
            except socket.timeout:
                raise Failure("the silent client was not closed")
        service.send_to_group("g", "still here", content_type="text/plain")
        m = recv_until(bystander, lambda m: m.get("type") == "message", what="the bystander's message")
        check(m.get("data") == "still here", f"bystander got {m}")


SCENARIOS = {name[2:]: fn for name, fn in globals().items() if name.startswith("s_")}

if __name__ == "__main__":
    faulthandler.dump_traceback_later(90, exit=True)  # a hang prints every thread's stack and exits
    failed = False
    for arg in sys.argv[3:]:
        if arg.startswith("--plain="):
            PLAIN = arg.split("=", 1)[1].rstrip("/")
    for name in [a for a in sys.argv[3:] if not a.startswith("--")]:
        try:
            SCENARIOS[name]()
            print(f"PASS {name}", flush=True)
        except Exception as e:  # noqa: BLE001
            failed = True
            detail = str(e) if isinstance(e, Failure) else traceback.format_exc()
            print(f"FAIL {name}: {detail}", flush=True)
    sys.exit(1 if failed else 0)
