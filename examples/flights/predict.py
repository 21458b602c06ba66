"""Ask `fti serve --model flight_delay` whether a flight about to leave will arrive late.

    python examples/flights/predict.py EWR IAH UA [--target localhost:50051]

Prints the score, the model version that gave it, and each feature the server read for the
route and the airline (with its status and age), as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys

import grpc
from google.protobuf.json_format import MessageToDict

from featurestore.keys import join_key
from fti.v1 import inference_pb2, inference_pb2_grpc


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("origin")
    p.add_argument("dest")
    p.add_argument("carrier")
    p.add_argument("--target", default="localhost:50051")
    a = p.parse_args(argv)
    request = inference_pb2.PredictRequest(
        model="flight_delay",
        # The route is a composite key: its parts joined as the worker joined them.
        entities={"route": join_key([a.origin, a.dest]), "carrier": a.carrier},
    )
    with grpc.insecure_channel(a.target) as channel:
        try:
            reply = inference_pb2_grpc.InferenceServiceStub(channel).Predict(request, timeout=5)
        except grpc.RpcError as exc:
            print(f"error: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
    print(json.dumps(MessageToDict(reply, preserving_proto_field_name=True), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
