"""The generated Python client against the running mesh, held to grpcurl."""

import json
import os
import re
import subprocess

import grpc
import pytest

from horoscoper.v1 import horoscoper_pb2, horoscoper_pb2_grpc

GATEWAY = os.environ.get("HOROSCOPER_ADDR", "127.0.0.1:8080")


def grpcurl_text(prefix: str) -> str:
    output = subprocess.run(
        [os.environ.get("GRPCURL", "grpcurl"), "-plaintext", "-d", json.dumps({"prefix": prefix}),
         GATEWAY, "horoscoper.v1.Horoscoper/Infer"],
        check=True, capture_output=True, text=True,
    ).stdout
    # One pretty-printed JSON object per response.
    return "".join(json.loads(chunk).get("text", "") for chunk in re.split(r"\n(?=\{)", output.strip()))


@pytest.fixture
def client():
    with grpc.insecure_channel(GATEWAY) as channel:
        yield horoscoper_pb2_grpc.HoroscoperStub(channel)


def test_streams_the_same_horoscope_grpcurl_gets(client):
    prompt = "Will the Python client see the stars?"
    responses = list(client.Infer(horoscoper_pb2.InferRequest(prefix=prompt), timeout=30))
    assert "".join(r.text for r in responses) == grpcurl_text(prompt)
    assert len(responses) > 20
    assert all(r.text.endswith(" ") and not r.last for r in responses[:-1])
    assert responses[-1].last and responses[-1].batch.batch_size >= 1 and responses[-1].batch.worker_id


def test_a_prefix_over_1024_characters_is_invalid(client):
    with pytest.raises(grpc.RpcError) as raised:
        list(client.Infer(horoscoper_pb2.InferRequest(prefix="x" * 1025), timeout=30))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "at most 1024 are allowed" in raised.value.details()


def test_the_example_runs():
    output = subprocess.run(
        ["python3", "example.py", "hello", GATEWAY], check=True, capture_output=True, text=True,
        cwd=os.path.dirname(os.path.abspath(__file__)),
    ).stdout
    assert output.startswith(grpcurl_text("hello"))
    assert "(batch " in output
