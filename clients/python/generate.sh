#!/usr/bin/env bash
# Generates the Python client of the public API from proto/ with grpcio-tools
# (which bundles protoc): horoscoper/v1/horoscoper_pb2{,_grpc}.py and .pyi.
set -euo pipefail
cd "$(dirname "$0")"
python3 -m grpc_tools.protoc -I ../../proto \
  --python_out=. --pyi_out=. --grpc_python_out=. \
  horoscoper/v1/horoscoper.proto
