#!/usr/bin/env python3
"""Attacking clients for tests/starvation.rs (issue 9): one process of the flood.

Keeps CONNECTIONS stalled connections open against 127.0.0.1:PORT for SECONDS,
reconnecting as soon as the server closes one, every connection bound to SOURCE (a
loopback address, 127.0.0.x, so several processes do not share one address's
ephemeral ports). Kinds:

* ``http1``: half of an HTTP/1 request head, then silence;
* ``h2``: the HTTP/2 preface and an empty SETTINGS frame, then silence;
* ``grpc``: an HTTP/2 connection that opens a gRPC call (HEADERS without
  END_STREAM) whose request message never comes, then never reads its stream.

Standard library only. Ends after SECONDS, or sooner when sent SIGTERM (the test
ends an attack once it has proved what it must, so SECONDS is only a bound), and
then prints one JSON line: how many connections it made, how many attempts failed,
and the most open at once.
"""

import argparse
import asyncio
import json
import resource
import signal
import socket
import struct
import sys


def frame(kind, flags, stream, payload=b""):
    """An HTTP/2 frame: 24-bit length, type, flags, stream id, payload."""
    header = struct.pack(">I", len(payload))[1:] + bytes([kind, flags])
    return header + struct.pack(">I", stream) + payload


def literal(name_index, value):
    """HPACK literal header field without indexing, indexed name, no Huffman."""
    value = value.encode()
    assert len(value) < 127
    if name_index < 15:
        prefix = bytes([name_index])
    else:
        prefix = bytes([0x0F, name_index - 15])
    return prefix + bytes([len(value)]) + value


def literal_new(name, value):
    name, value = name.encode(), value.encode()
    return b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value


# SO_LINGER on, 0 s: close() sends a reset.
LINGER_RESET = struct.pack("ii", 1, 0)
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0)
HALF_REQUEST = b"POST /v1/models/iris_lr:predict HTTP/1.1\r\nHost: x\r\nContent-Le"


def grpc_headers(authority):
    block = (
        b"\x83"  # :method POST
        + b"\x86"  # :scheme http
        + literal(4, "/inference.GRPCInferenceService/ModelInfer")  # :path
        + literal(1, authority)  # :authority
        + literal(31, "application/grpc")  # content-type
        + literal_new("te", "trailers")
    )
    # SETTINGS ACK for the server's settings, then HEADERS (END_HEADERS only).
    return frame(4, 1, 0) + frame(1, 4, 1, block)


class Stats:
    def __init__(self):
        self.connected = 0
        self.failed = 0
        self.open = 0
        self.most_open = 0


async def until_closed(reader):
    while await reader.read(4096):
        pass


async def attacker(args, stats, stop):
    host, port = args.target.rsplit(":", 1)
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        # Closed with a reset, not a FIN, whenever the attacker closes first (when it
        # stops, gives up waiting, or its connect times out): no TIME_WAIT socket then
        # holds its port for a minute, which would keep later tests from binding that
        # port on 0.0.0.0.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
        sock.setblocking(False)
        try:
            sock.bind((args.source, 0))
            await asyncio.wait_for(loop.sock_connect(sock, (host, int(port))), 2)
            reader, writer = await asyncio.open_connection(sock=sock)
        except (OSError, asyncio.TimeoutError):
            sock.close()
            stats.failed += 1
            await asyncio.sleep(0.1)
            continue
        stats.connected += 1
        stats.open += 1
        stats.most_open = max(stats.most_open, stats.open)
        try:
            if args.kind == "http1":
                writer.write(HALF_REQUEST)
            else:
                writer.write(PREFACE)
                if args.kind == "grpc":
                    # The server's SETTINGS first, then the call that never finishes.
                    await asyncio.wait_for(reader.read(4096), 5)
                    writer.write(grpc_headers(args.target))
            await asyncio.wait_for(until_closed(reader), args.hold)
        except (OSError, asyncio.TimeoutError):
            pass
        finally:
            stats.open -= 1
            writer.close()


async def main(args):
    stats, stop = Stats(), asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    tasks = [asyncio.create_task(attacker(args, stats, stop)) for _ in range(args.connections)]
    try:
        await asyncio.wait_for(stop.wait(), args.seconds)
    except asyncio.TimeoutError:
        pass
    stop.set()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    print(json.dumps({"connected": stats.connected, "failed": stats.failed, "most_open": stats.most_open}))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True, help="127.0.0.1:PORT")
    parser.add_argument("--kind", choices=["http1", "h2", "grpc"], required=True)
    parser.add_argument("--connections", type=int, required=True)
    parser.add_argument("--source", default="127.0.0.1")
    parser.add_argument(
        "--seconds", type=float, required=True, help="the longest the attack lasts; SIGTERM ends it sooner"
    )
    parser.add_argument(
        "--hold",
        type=float,
        default=5.0,
        help="seconds to wait for the server to close a connection before opening a new "
        "one (a connection the kernel completed while the server's accept queue was full "
        "is never closed)",
    )
    args = parser.parse_args()
    if not args.target.startswith("127.0.0.1:") or not args.source.startswith("127."):
        sys.exit("flood_clients.py talks only to 127.0.0.1 from loopback addresses")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < args.connections + 64:
        sys.exit(f"an open-files hard limit of {hard} is too low for {args.connections} connections")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    asyncio.run(main(args))
