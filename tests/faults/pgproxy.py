"""A TCP proxy between gateway processes and PostgreSQL that a test can cut and restore: a
database outage without stopping the shared server (BRIEF: never stop it).

    proxy = PgProxy("127.0.0.1", 5432)
    proxy.start()            # its own thread and event loop; proxy.port is where to connect
    url = proxy.url("postgresql://postgres@127.0.0.1:5432/mydb")  # same URL through the proxy
    proxy.cut()              # open connections dropped, new ones refused (RST)
    proxy.restore()          # new connections accepted again
    proxy.freeze()           # connections stay open but nothing passes (a hung server, a
    proxy.thaw()             # network black hole); thaw: what waited goes through
    proxy.stop()

Cut means what a stopped server means to a client: every open connection is reset at once on
both sides (PostgreSQL ends the backends and rolls their transactions back, as a stop does) and
a new one is refused (the listening socket is closed, so connect() gets ECONNREFUSED; one
accepted in the meantime is reset). A connection that one side ends is ended whole: the proxy
never leaves a half-closed connection. Usable
from synchronous tests (it runs its own loop in a thread) and as a context manager.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import Any

from sqlalchemy.engine import make_url


class PgProxy:
    def __init__(self, upstream_host: str = "127.0.0.1", upstream_port: int = 5432) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = _free_port()
        self.connections = 0  # accepted since start
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.base_events.Server | None = None
        self._pipes: set[asyncio.StreamWriter] = set()  # both sides of every connection
        self._down = False
        self._ready = threading.Event()
        self._flow = asyncio.Event()  # cleared while frozen
        self._flow.set()

    def url(self, database_url: str) -> str:
        """`database_url` with its host and port replaced by the proxy's."""
        return make_url(database_url).set(host="127.0.0.1", port=self.port) \
            .render_as_string(hide_password=False)

    # --- control (from any thread) --------------------------------------------------------

    def start(self) -> PgProxy:
        self._thread = threading.Thread(target=self._run, name="pgproxy", daemon=True)
        self._thread.start()
        self._ready.wait(5)
        self.restore()
        return self

    def cut(self) -> None:
        self._call(self._cut())

    def restore(self) -> None:
        self._call(self._listen())

    def freeze(self) -> None:
        self._call(self._set_flow(False))

    def thaw(self) -> None:
        self._call(self._set_flow(True))

    async def _set_flow(self, on: bool) -> None:
        if on:
            self._flow.set()
        else:
            self._flow.clear()

    def stop(self) -> None:
        if self._loop is None:
            return
        self._call(self._cut())
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(5)
        self._loop = None

    def __enter__(self) -> PgProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- the proxy's own loop ---------------------------------------------------------------

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._ready.set()
        self._loop.run_forever()
        self._loop.close()

    def _call(self, coro: Any) -> Any:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    async def _listen(self) -> None:
        self._down = False
        if self._server is None:
            self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port,
                                                      reuse_address=True)

    async def _cut(self) -> None:
        self._down = True
        if self._server is not None:
            self._server.close()  # new connections: ECONNREFUSED
            self._server = None
        # both sides of every connection, including one still connecting upstream: the
        # gateway sees its connections reset, and PostgreSQL sees its clients go, so it ends
        # their backends and rolls their transactions back (nothing left "idle in
        # transaction" holding row locks, as a one-sided close left before)
        for writer in list(self._pipes):
            _reset(writer)
        self._pipes.clear()

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter
                      ) -> None:
        if self._down:
            _reset(client_w)
            return
        self.connections += 1
        self._pipes.add(client_w)
        try:
            server_r, server_w = await asyncio.open_connection(*self.upstream)
        except OSError:
            self._pipes.discard(client_w)
            _reset(client_w)
            return
        if self._down or client_w not in self._pipes:  # cut while connecting upstream
            _reset(client_w)
            _reset(server_w)
            return
        self._pipes.add(server_w)
        pipes = [asyncio.ensure_future(_pipe(client_r, server_w, self._flow)),
                 asyncio.ensure_future(_pipe(server_r, client_w, self._flow))]
        await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        for w in (client_w, server_w):  # one direction ended: end the whole connection
            self._pipes.discard(w)
            w.transport.abort()
        for pipe in pipes:
            pipe.cancel()
        await asyncio.gather(*pipes, return_exceptions=True)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                flow: asyncio.Event) -> None:
    """One direction; when it ends (EOF, reset) the caller closes both sockets whole: never a
    half-closed connection, which PostgreSQL would keep as a live session. Data waits while
    `flow` is cleared (frozen)."""
    while data := await reader.read(65536):
        await flow.wait()
        writer.write(data)
        await writer.drain()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST (SO_LINGER 0), as a server that went away does."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            linger_zero = b"\x01\x00\x00\x00\x00\x00\x00\x00"
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger_zero)
        except OSError:
            pass
    writer.transport.abort()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
