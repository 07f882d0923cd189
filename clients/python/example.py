"""Streams a horoscope from a running mesh, word by word.

    python3 example.py [PROMPT] [GATEWAY_ADDR]
"""

import sys

import grpc

from horoscoper.v1 import horoscoper_pb2, horoscoper_pb2_grpc


def main() -> None:
    prompt = sys.argv[1] if len(sys.argv) > 1 else "What does my week look like?"
    gateway = sys.argv[2] if len(sys.argv) > 2 else "127.0.0.1:8080"
    with grpc.insecure_channel(gateway) as channel:
        client = horoscoper_pb2_grpc.HoroscoperStub(channel)
        for response in client.Infer(horoscoper_pb2.InferRequest(prefix=prompt)):
            print(response.text, end="", flush=True)
            if response.last:
                batch = response.batch
                print(f"\n(batch {batch.batch_id} of {batch.batch_size} on {batch.worker_id})")


if __name__ == "__main__":
    main()
