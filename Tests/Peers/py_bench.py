"""The Python SDK side of `webpubsub-bench` (azure-messaging-webpubsubclient 1.1.0).

Usage:
  py_bench.py URL acked N SIZE     N sequential acked send_to_group calls; prints one JSON line
  py_bench.py URL receive N        joins group "rx", prints READY, counts N group messages; prints one JSON line
"""
import json
import sys
import threading
import time

from azure.messaging.webpubsubclient import WebPubSubClient
from azure.messaging.webpubsubclient.models import CallbackType, WebPubSubDataType


def main() -> int:
    url, mode, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    # ack_timeout=1: Python 1.1.0 can miss an ack's wakeup and sleep the whole ack timeout (defect P2);
    # such stalls are counted, not hidden.
    client = WebPubSubClient(url, start_timeout=3, ack_timeout=1, message_retry_total=0)
    if mode == "acked":
        size = int(sys.argv[4])
        client.open()
        payload = "x" * size
        latencies = []
        started = time.perf_counter()
        for _ in range(n):
            t0 = time.perf_counter()
            client.send_to_group("bench-nobody", payload, WebPubSubDataType.TEXT)
            latencies.append(time.perf_counter() - t0)
        total = time.perf_counter() - started
        latencies.sort()
        print(json.dumps({
            "p50_ms": latencies[len(latencies) // 2] * 1000,
            "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
            "ops_per_s": n / total,
            "stalls": sum(1 for x in latencies if x > 0.5),
        }), flush=True)
    else:
        done = threading.Event()
        state = {"count": 0, "first": None, "last": None}
        lock = threading.Lock()

        def on_message(_e):
            with lock:
                now = time.perf_counter()
                if state["first"] is None:
                    state["first"] = now
                state["count"] += 1
                state["last"] = now
                if state["count"] % 100 == 0:
                    print(f"GOT {state['count']}", flush=True)
                if state["count"] >= n:
                    done.set()

        client.subscribe(CallbackType.GROUP_MESSAGE, on_message)
        client.open()
        client.join_group("rx")
        print("READY", flush=True)
        done.wait(30)
        with lock:
            seconds = (state["last"] - state["first"]) if state["count"] > 1 else 0.0
            print(json.dumps({"count": state["count"], "seconds": seconds,
                              "msgs_per_s": (state["count"] - 1) / seconds if seconds > 0 else 0.0}), flush=True)
    client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
