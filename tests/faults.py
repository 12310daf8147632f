"""Network faults between a process and a real server: a loopback TCP proxy the test (or drill) controls.

``FaultProxy`` forwards bytes both ways until told otherwise:

- ``refuse()``: new connections are refused and open ones reset (a stopped server, a refused route);
- ``blackhole()``: connections stay open and accepted, but nothing is forwarded either way (a
  partition that drops packets: callers hang until their own timeouts fire);
- ``heal()``: forward again (held bytes are delivered then, as a healed partition does).

It runs its own event loop in a thread, so synchronous tests and drills can use it as well.
"""

from __future__ import annotations

import asyncio
import pathlib
import threading
import urllib.parse
from typing import Any

import yaml

from trading_dev.controlplane.server import ControlPlane, free_port

__all__ = ["FaultProxy", "kubeconfig_via", "to_api_server"]


def kubeconfig_via(cp: ControlPlane, proxy_port: int, path: pathlib.Path) -> pathlib.Path:
    """A copy of the control plane's admin kubeconfig whose server is the proxy on ``proxy_port``."""
    cfg = yaml.safe_load(cp.kubeconfig_path.read_text())
    cfg["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{proxy_port}"
    path.write_text(yaml.safe_dump(cfg))
    return path


def to_api_server(cp: ControlPlane) -> FaultProxy:
    """A started proxy in front of the control plane's API server."""
    url = urllib.parse.urlparse(cp.url)
    return FaultProxy(url.hostname or "127.0.0.1", int(url.port or 443)).start()


class FaultProxy:
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = free_port()
        self.mode = "forward"
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"fault-proxy-{self.port}", daemon=True)
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._flowing = asyncio.Event()

    # ------------------------------------------------------------ control (any thread)

    def start(self) -> FaultProxy:
        self._thread.start()
        self._call(self._listen())
        self._call(self._set_flow(True))
        return self

    def refuse(self) -> None:
        self.mode = "refuse"
        self._call(self._refuse())

    def blackhole(self) -> None:
        self.mode = "blackhole"
        self._call(self._set_flow(False))

    def heal(self) -> None:
        self.mode = "forward"
        self._call(self._heal())

    def stop(self) -> None:
        self._call(self._refuse())
        self._call(self._cancel_all())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    # ------------------------------------------------------------ loop side

    async def _set_flow(self, on: bool) -> None:
        if on:
            self._flowing.set()
        else:
            self._flowing.clear()

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def _refuse(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _cancel_all(self) -> None:
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _heal(self) -> None:
        await self._listen()
        self._flowing.set()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    await self._flowing.wait()  # a black hole holds the bytes until it heals
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer), return_exceptions=True)
        self._writers -= {writer, up_writer}
