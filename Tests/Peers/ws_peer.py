#!/usr/bin/env python3
"""WebSocket peers for the Swift WebSocket tests.

Usage: ws_peer.py MODE [options]; prints "PORT <n>" once listening on 127.0.0.1:0,
then serves connections until killed.

Modes served with the `websockets` library:
  echo            echo every message (--subprotocol NAME to accept one; --cert/--key for wss)
Modes served with raw asyncio sockets (a hand-made handshake, then a script):
  fragments       text in 3 fragments with a ping between them, then binary in 2; waits for echoes
  ping            sends a ping "abc" and reports the pong: "PONG <payload>"
  close CODE      sends close CODE "bye"; reports the client's answer: "CLIENT_CLOSE <code>"
  abrupt          sends "hi" then drops TCP (no close frame)
  oversize N      sends a binary message of N bytes in one frame
  badutf8         sends text fragments whose 2nd fragment holds invalid UTF-8
  badframe        sends a frame with RSV1 set
  badclosecode    sends close with code 1005 (invalid on the wire)
  pipelined       sends the 101 and a text frame "early" in one write
  http401         answers the upgrade with 401 and a body
  http403chunked  answers with 403, a chunked body and keep-alive (no Content-Length, no close)
  noproto         101 without Sec-WebSocket-Protocol (client offers one)
  wrongproto      101 with a subprotocol that was not offered
  badaccept       101 with a wrong Sec-WebSocket-Accept
  silent          accepts TCP, never answers
  mute            completes the upgrade, then never sends anything (keep-alive tests)
  rawecho         (or any other name) echoes every message, answers a close and reports it
  noread          completes the upgrade, then reads nothing (backpressure tests)
  slowread        sends a ping at once, then reads slowly (tiny receive buffer); reports
                  "PONG_AFTER <data frames before the pong>" and "FRAGMENTS <data frames in the message>"
  garbage         completes the upgrade, then sends random bytes (a new seed per connection)
  garbagehttp     answers the upgrade request with random bytes
  negativelength  answers the upgrade with 400 and "Content-Length: -1"
  pingflood       completes the upgrade, then sends 125-byte pings without ever reading (tiny receive
                  buffer) until the client closes the socket or 512 MiB went out; reports "FLOOD_SENT <bytes>"
Every client close frame a raw mode receives is printed as "CLIENT_CLOSE <code>".
"""
import argparse
import asyncio
import base64
import hashlib
import os
import random
import signal
import socket
import ssl
import struct
import sys

# The test runner may spawn us with SIGTERM blocked (inherited signal mask): unblock it and exit on it.
signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGTERM, signal.SIGINT])
signal.signal(signal.SIGTERM, lambda *_: os._exit(0))

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def frame(opcode, payload=b"", fin=True, rsv=0):
    b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", b0, n)
    elif n < 65536:
        head = struct.pack("!BBH", b0, 126, n)
    else:
        head = struct.pack("!BBQ", b0, 127, n)
    return head + payload


async def read_frame(reader):
    """Reads one (masked) client frame: (fin, opcode, payload)."""
    b0, b1 = await reader.readexactly(2)
    n = b1 & 0x7F
    if n == 126:
        (n,) = struct.unpack("!H", await reader.readexactly(2))
    elif n == 127:
        (n,) = struct.unpack("!Q", await reader.readexactly(8))
    if not b1 & 0x80:
        raise ValueError("client frame not masked")
    key = await reader.readexactly(4)
    data = await reader.readexactly(n)
    if n:  # unmask with one big-integer XOR (fast even for megabytes)
        k = (key * (n // 4 + 1))[:n]
        data = (int.from_bytes(data, "big") ^ int.from_bytes(k, "big")).to_bytes(n, "big")
    return bool(b0 & 0x80), b0 & 0x0F, data


async def read_request(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    return lines[0], headers


def accept(key):
    return base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()


def upgrade_response(headers, extra=""):
    return (
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept(headers['sec-websocket-key'])}\r\n{extra}\r\n"
    ).encode()


async def drain_client(reader, writer, echo=False):
    """Reads client frames until close or EOF; answers the close and reports it."""
    msg = []
    try:
        while True:
            fin, op, data = await read_frame(reader)
            if op == 8:
                code = struct.unpack("!H", data[:2])[0] if len(data) >= 2 else 1005
                print(f"CLIENT_CLOSE {code}", flush=True)
                writer.write(frame(8, data[:2]))
                await writer.drain()
                break
            if op == 10:
                print(f"PONG {data.decode(errors='replace')}", flush=True)
            elif op in (1, 2, 0):
                msg.append(data)
                if fin:
                    whole = b"".join(msg)
                    msg = []
                    print(f"CLIENT_MESSAGE {len(whole)}", flush=True)
                    if echo:
                        writer.write(frame(op if op else 1, whole))
                        await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, ValueError):
        pass


CONNECTIONS = 0


def fuzz_bytes(rng):
    """Odd connections: random bytes. Even ones: random but well-formed-looking frames (any opcode,
    fin, rare RSV bits, text that may be invalid UTF-8, close frames with any code, long lengths)."""
    if CONNECTIONS % 2:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 3000)))
    out = b""
    for _ in range(rng.randrange(1, 12)):
        op = rng.choice([0, 1, 1, 2, 2, 8, 9, 10, 3, 11])
        fin = rng.random() < 0.7
        rsv = rng.choice([0] * 12 + [1, 2, 4])
        kind = rng.random()
        if kind < 0.4:
            payload = "héllo ✓".encode() * rng.randrange(0, 30)
        elif kind < 0.7:
            payload = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 300)))
        elif kind < 0.9 and op == 8:
            payload = struct.pack("!H", rng.randrange(65536)) + b"r"
        else:
            payload = bytes(rng.randrange(0, 130))
        out += frame(op, payload, fin=fin, rsv=rsv)
    if rng.random() < 0.2:  # a header that promises more than will come
        out += struct.pack("!BBQ", 0x82, 127, rng.randrange(1, 1 << 40))
    return out


async def raw_handler(mode, args, reader, writer):
    global CONNECTIONS
    CONNECTIONS += 1
    rng = random.Random(CONNECTIONS)
    try:
        if mode == "silent":
            await asyncio.sleep(3600)
            return
        if mode == "garbagehttp":  # random bytes at once, whatever the client says (also breaks TLS)
            writer.write(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 3000))))
            await writer.drain()
            await asyncio.sleep(30)
            return
        _, headers = await read_request(reader)
        if mode == "http401":
            body = b"unauthorized: token expired\n"
            writer.write(
                b"HTTP/1.1 401 Unauthorized\r\nContent-Type: text/plain\r\nWWW-Authenticate: Bearer\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            await writer.drain()
            await asyncio.sleep(0.5)
            return
        if mode == "negativelength":
            writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: -1\r\n\r\nbad")
            await writer.drain()
            await asyncio.sleep(0.5)
            return
        if mode == "http403chunked":
            writer.write(
                b"HTTP/1.1 403 Forbidden\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n"
                b"9\r\nforbidden\r\n0\r\n\r\n")
            await writer.drain()
            await asyncio.sleep(3600)
            return
        if mode == "noproto":
            writer.write(upgrade_response(headers))
        elif mode == "wrongproto":
            writer.write(upgrade_response(headers, "Sec-WebSocket-Protocol: other\r\n"))
        elif mode == "badaccept":
            writer.write(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Accept: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
        elif mode == "pipelined":
            writer.write(upgrade_response(headers) + frame(1, b"early") + frame(1, b"second"))
        else:
            writer.write(upgrade_response(headers))
        await writer.drain()

        if mode in ("noproto", "wrongproto", "badaccept"):
            await drain_client(reader, writer)
        elif mode == "fragments":
            writer.write(frame(1, b"Hel", fin=False) + frame(9, b"p1") + frame(0, "lo, wö".encode(), fin=False))
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.write(frame(0, "rld".encode()) + frame(2, b"\x00\x01", fin=False) + frame(0, b"\x02\x03"))
            await writer.drain()
            await drain_client(reader, writer, echo=False)
        elif mode == "ping":
            writer.write(frame(9, b"abc"))
            await writer.drain()
            await drain_client(reader, writer)
        elif mode == "close":
            code = int(args.arg or "1000")
            writer.write(frame(8, struct.pack("!H", code) + b"bye"))
            await writer.drain()
            await drain_client(reader, writer)
        elif mode == "abrupt":
            writer.write(frame(1, b"hi"))
            await writer.drain()
            await asyncio.sleep(0.05)
        elif mode == "oversize":
            writer.write(frame(2, b"x" * int(args.arg or "2000000")))
            await writer.drain()
            await drain_client(reader, writer)
        elif mode == "badutf8":
            writer.write(frame(1, "héllo".encode(), fin=False))
            writer.write(frame(0, b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80", fin=False))
            await writer.drain()
            await drain_client(reader, writer)
        elif mode == "badframe":
            writer.write(frame(1, b"rsv", rsv=4))
            await writer.drain()
            await drain_client(reader, writer)
        elif mode == "badclosecode":
            writer.write(frame(8, struct.pack("!H", 1005)))
            await writer.drain()
            await drain_client(reader, writer)
        elif mode == "pipelined":
            await drain_client(reader, writer)
        elif mode == "slowread":
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
            writer.write(frame(9, b"p"))
            await writer.drain()
            frames = 0
            while True:
                fin, op, data = await read_frame(reader)
                if op == 10:
                    print(f"PONG_AFTER {frames}", flush=True)
                elif op in (0, 1, 2):
                    frames += 1
                    await asyncio.sleep(0.0005)
                    if fin:
                        print(f"FRAGMENTS {frames} BYTES_LAST {len(data)}", flush=True)
                        break
            await drain_client(reader, writer)
        elif mode == "noread":
            await asyncio.sleep(3600)
        elif mode == "pingflood":
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            burst = frame(9, b"p" * 125) * 512
            sent = 0
            try:
                while sent < 512 << 20:
                    writer.write(burst)
                    await writer.drain()
                    sent += len(burst)
            except ConnectionError:
                pass
            print(f"FLOOD_SENT {sent}", flush=True)
        elif mode == "garbage":
            writer.write(fuzz_bytes(rng))
            await writer.drain()
            await drain_client(reader, writer)
        elif mode == "mute":
            try:
                while await reader.read(65536):
                    pass
            except ConnectionError:
                pass
        else:
            await drain_client(reader, writer, echo=True)
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode")
    ap.add_argument("arg", nargs="?")
    ap.add_argument("--subprotocol")
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--host", default="127.0.0.1")
    args = ap.parse_args()

    ctx = None
    if args.cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.cert, args.key)
        ctx.set_alpn_protocols(["http/1.1"])
        ctx.sni_callback = lambda sslobj, name, c: print(f"SNI {name}", flush=True)

    if args.mode == "echo":
        import websockets.asyncio.server as wss

        async def echo(ws):
            sslobj = ws.transport.get_extra_info("ssl_object")
            if sslobj is not None:
                print(f"ALPN {sslobj.selected_alpn_protocol()} {sslobj.version()}", flush=True)
            try:
                async for msg in ws:
                    await ws.send(msg)
            except Exception:
                pass

        kwargs = dict(max_size=None, ssl=ctx, compression=None, ping_interval=None, backlog=2048)
        if args.subprotocol:
            kwargs["subprotocols"] = [args.subprotocol]
        async with wss.serve(echo, args.host, 0, **kwargs) as server:
            port = server.sockets[0].getsockname()[1]
            print(f"PORT {port}", flush=True)
            await asyncio.Future()
    else:
        server = await asyncio.start_server(
            lambda r, w: raw_handler(args.mode, args, r, w), args.host, 0, ssl=ctx, backlog=1024)
        port = server.sockets[0].getsockname()[1]
        print(f"PORT {port}", flush=True)
        async with server:
            await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
