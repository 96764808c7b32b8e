"""The Python SDK side of `make bench`.

Measures, with azure-messaging-webpubsubclient (sync API) against a running emulator, the same four figures
as the Swift side (Sources/webpubsub-bench):

  acked      acked sendToGroup round trips per second from one thread, and p50/p99 ack latency
  fire       fire-and-forget sendToGroup messages per second (written, from one thread)
  receive    group messages received per second by one client (published fire-and-forget by another,
             at most --window in flight), on the reliable and on the plain JSON protocol

Prints one JSON object on a line starting with `RESULT `. Bounded in count and time; loopback only.
"""

import argparse
import json
import statistics
import sys
import threading
import time
import urllib.request

from azure.messaging.webpubsubclient import WebPubSubClient
from azure.messaging.webpubsubclient.models import CallbackType, WebPubSubDataType, WebPubSubProtocolType
from azure.messaging.webpubsubservice import WebPubSubServiceClient


def percentile(values, p):
    if not values:
        return 0.0
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, int(round(p / 100.0 * (len(ordered) - 1)))))
    return ordered[k]


def messages_in(endpoint):
    with urllib.request.urlopen(endpoint + "/_emulator/stats", timeout=10) as r:
        return json.loads(r.read()).get("messagesIn", 0)


def make_url(service, user):
    token = service.get_client_access_token(
        user_id=user, roles=["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"]
    )
    return token["url"]


def receive_phase(service, sender, protocol, payload, args):
    receiver = WebPubSubClient(make_url(service, "py-receiver"), protocol_type=protocol)
    cond = threading.Condition()
    state = {"received": 0, "last": 0.0, "stopped": False}

    def on_group_message(_event):
        with cond:
            state["received"] += 1
            state["last"] = time.perf_counter()
            cond.notify_all()

    def on_stopped():
        with cond:
            state["stopped"] = True
            cond.notify_all()

    receiver.subscribe(CallbackType.GROUP_MESSAGE, on_group_message)
    receiver.subscribe(CallbackType.STOPPED, on_stopped)
    receiver.open()
    group = "bench-recv-" + protocol.value
    receiver.join_group(group)
    start = time.perf_counter()
    deadline = start + args.phase_limit
    sent = 0
    while sent < args.receive and time.perf_counter() < deadline:
        with cond:
            while sent - state["received"] >= args.window and time.perf_counter() < deadline:
                cond.wait(0.5)
        sender.send_to_group(group, payload, WebPubSubDataType.TEXT, ack=False, no_echo=True)
        sent += 1
    with cond:
        while state["received"] < sent and time.perf_counter() < deadline:
            cond.wait(0.5)
        received, last = state["received"], state["last"] or time.perf_counter()
    receiver.close()
    return received, received / max(last - start, 1e-9)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--connection-string", required=True)
    parser.add_argument("--endpoint", required=True, help="http://127.0.0.1:PORT of the emulator")
    parser.add_argument("--hub", default="bench_py")
    parser.add_argument("--acked", type=int, default=2000)
    parser.add_argument("--fire", type=int, default=20000)
    parser.add_argument("--receive", type=int, default=20000)
    parser.add_argument("--payload", type=int, default=64)
    parser.add_argument("--window", type=int, default=500)
    parser.add_argument("--phase-limit", type=float, default=30.0, help="seconds each phase may take at most")
    args = parser.parse_args()

    service = WebPubSubServiceClient.from_connection_string(args.connection_string, hub=args.hub)
    payload = "x" * args.payload
    result = {"client": "python azure-messaging-webpubsubclient 1.1.0", "payload": args.payload}

    sender = WebPubSubClient(make_url(service, "py-sender"))
    sender.open()
    sender.join_group("bench-ack")

    # 1. Acked round trips from one thread.
    latencies = []
    start = time.perf_counter()
    for _ in range(args.acked):
        t0 = time.perf_counter()
        sender.send_to_group("bench-ack", payload, WebPubSubDataType.TEXT, no_echo=True)
        latencies.append(time.perf_counter() - t0)
        if time.perf_counter() - start > args.phase_limit:
            break
    elapsed = time.perf_counter() - start
    result["acked_count"] = len(latencies)
    result["acked_per_sec"] = len(latencies) / elapsed
    result["ack_p50_ms"] = percentile(latencies, 50) * 1000
    result["ack_p99_ms"] = percentile(latencies, 99) * 1000

    # 2. Fire-and-forget from one thread: the call rate, and the rate at which the service got them.
    in_before = messages_in(args.endpoint)
    start = time.perf_counter()
    sent = 0
    for _ in range(args.fire):
        sender.send_to_group("bench-fire", payload, WebPubSubDataType.TEXT, ack=False, no_echo=True)
        sent += 1
        if time.perf_counter() - start > args.phase_limit:
            break
    elapsed = time.perf_counter() - start
    result["fire_count"] = sent
    result["fire_per_sec"] = sent / elapsed
    deadline = time.perf_counter() + 60
    while messages_in(args.endpoint) - in_before < sent and time.perf_counter() < deadline:
        time.sleep(0.002)
    result["fire_arrived_per_sec"] = sent / (time.perf_counter() - start)

    # 3. Group messages received by one client, per protocol. The publisher keeps at most
    #    `window` messages in flight (published, not yet received), so a slow receiver is measured
    #    rather than overrun (the service closes a reliable connection with over 1,000 unacked).
    for protocol, key in ((WebPubSubProtocolType.JSON_RELIABLE, "receive_per_sec"),
                          (WebPubSubProtocolType.JSON, "receive_json_per_sec")):
        count, rate = receive_phase(service, sender, protocol, payload, args)
        result[key] = rate
        result[key.replace("_per_sec", "_count")] = count

    sender.close()
    print("RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
