#!/usr/bin/env python3
"""A relay in front of the Docker Engine API socket that holds back events.

Everything passes through unchanged, except that the bytes of a connection
that asked for `/events` reach the client only `--delay` seconds after Docker
sent them. That is Docker's event stream running late (a busy daemon, a
stream being re-established), which is the window in which a stopped
container's address can already belong to a new container while the proxy
still thinks it is the old one's.

Usage: docker_relay.py --listen PATH --upstream /var/run/docker.sock --delay 3
"""

import argparse
import asyncio
import os


async def pump(reader, writer, delay_of):
    """Copies reader to writer; delay_of() says how late each chunk may leave."""
    loop = asyncio.get_running_loop()
    pending = []
    try:
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                break
            delay = delay_of()
            if delay:
                # Keep order: each chunk leaves `delay` after it arrived.
                due = loop.time() + delay
                pending.append(asyncio.ensure_future(_later(writer, chunk, due, pending[-1] if pending else None)))
            else:
                writer.write(chunk)
                await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        for task in pending:
            task.cancel()
        writer.close()


async def _later(writer, chunk, due, previous):
    if previous is not None:
        try:
            await previous
        except asyncio.CancelledError:
            return
    await asyncio.sleep(max(0.0, due - asyncio.get_running_loop().time()))
    writer.write(chunk)
    await writer.drain()


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--listen", required=True)
    parser.add_argument("--upstream", default="/var/run/docker.sock")
    parser.add_argument("--delay", type=float, default=3.0)
    args = parser.parse_args()

    async def handle(client_reader, client_writer):
        try:
            docker_reader, docker_writer = await asyncio.open_unix_connection(args.upstream)
        except OSError:
            client_writer.close()
            return
        events = {"asked": False}

        class Watch:
            """Client to Docker, noting whether an events request went by."""

            async def read(self, n):
                data = await client_reader.read(n)
                if b"GET " in data and b"/events" in data:
                    events["asked"] = True
                return data

        await asyncio.gather(
            pump(Watch(), docker_writer, lambda: 0.0),
            pump(docker_reader, client_writer, lambda: args.delay if events["asked"] else 0.0),
        )

    server = await asyncio.start_unix_server(handle, path=args.listen)
    os.chmod(args.listen, 0o600)
    print("listening", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
