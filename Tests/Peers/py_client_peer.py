"""A Python SDK client (azure-messaging-webpubsubclient 1.1.0) for the Swift interop tests.

Usage: py_client_peer.py URL GROUP NAME [--protocol json|json-reliable] [--seconds N]

Opens, joins GROUP, prints `READY <connectionId>`, publishes `hello from NAME` (text) and a JSON
object {"from": NAME, "n": 1}, and answers every text message from another user with
`NAME echo: <text>`. Every group message received is printed as `RECEIVED <dataType> <data>`.
Exits after --seconds (default 20) or on stdin EOF / SIGTERM, closing the client.
"""
import argparse
import json
import signal
import sys
import threading

from azure.messaging.webpubsubclient import WebPubSubClient
from azure.messaging.webpubsubclient.models import CallbackType, WebPubSubDataType, WebPubSubProtocolType


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("group")
    parser.add_argument("name")
    parser.add_argument("--protocol", default="json-reliable")
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()

    protocol = WebPubSubProtocolType.JSON if args.protocol == "json" else WebPubSubProtocolType.JSON_RELIABLE
    # Short start/ack timeouts: Python 1.1.0 can miss the wakeup of open() and of an ack wait (it
    # notifies before the waiter waits: defect P2 in Docs/Protocol.md) and then sleeps the
    # whole timeout before it sees that it is connected / acked. Against a fast local emulator that
    # happens often; 3 s bounds the stall.
    client = WebPubSubClient(args.url, protocol_type=protocol, message_retry_total=1, start_timeout=3, ack_timeout=3)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())

    def on_group_message(e):
        data = e.data
        if e.data_type == WebPubSubDataType.JSON:
            shown = json.dumps(data, sort_keys=True)
        elif e.data_type in (WebPubSubDataType.BINARY, WebPubSubDataType.PROTOBUF):
            shown = bytes(data).hex()
        else:
            shown = data
        print(f"RECEIVED {e.data_type} {shown}", flush=True)
        if e.data_type == WebPubSubDataType.TEXT and e.from_user_id != args.name and "echo:" not in str(data):
            client.send_to_group(args.group, f"{args.name} echo: {data}", WebPubSubDataType.TEXT)

    client.subscribe(CallbackType.GROUP_MESSAGE, on_group_message)
    client.open()
    client.join_group(args.group)
    print(f"READY {client._connection_id}", flush=True)
    client.send_to_group(args.group, f"hello from {args.name}", WebPubSubDataType.TEXT)
    client.send_to_group(args.group, {"from": args.name, "n": 1}, WebPubSubDataType.JSON)
    print("SENT", flush=True)
    done.wait(args.seconds)
    client.close()
    print("CLOSED", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
