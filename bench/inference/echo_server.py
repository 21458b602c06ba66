"""A bare grpc.aio server: one unary method answering every request with a fixed payload.

The baseline for `bench.py`: same transport, same message sizes as Predict, same server options
(message size limits) and the same event loop as `fti serve` (uvloop when installed), so the
comparison measures the inference work and nothing else; no work at all.
Usage: python bench/inference/echo_server.py PORT RESPONSE_BYTES
"""

from __future__ import annotations

import asyncio
import signal
import sys

import grpc
from grpc import aio

from inference_grpc.cli import run_event_loop
from inference_grpc.settings import InferenceSettings

METHOD = "/bench.Echo/Echo"


async def main(port: int, response_bytes: int) -> None:
    payload = b"x" * response_bytes

    async def echo(request: bytes, context: aio.ServicerContext) -> bytes:
        return payload

    size = InferenceSettings.model_fields["max_message_bytes"].default
    server = aio.server(options=[("grpc.max_receive_message_length", size), ("grpc.max_send_message_length", size)])
    handler = grpc.unary_unary_rpc_method_handler(echo)  # identity (de)serialisers: raw bytes
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("bench.Echo", {"Echo": handler})])
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    await stop.wait()
    await server.stop(1)


if __name__ == "__main__":
    run_event_loop(main(int(sys.argv[1]), int(sys.argv[2])), InferenceSettings().event_loop)
