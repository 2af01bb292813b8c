"""One lifecycle for sia's in-process HTTP servers (the model gateway and the test stubs).

A subclass says how to make its server (:meth:`ThreadedServer._make_server`) and, if it keeps
connections open, how to close them (:meth:`ThreadedServer._close_connections`); this class
serves it in a daemon thread, stops it, and is a context manager::

    with OpenAIStub() as stub:
        ...  # stub.url
"""

from __future__ import annotations

import socketserver
import threading
from types import TracebackType
from typing import Any, Self

__all__ = ["ThreadedServer"]


class ThreadedServer:
    """``start()`` binds and serves in a daemon thread; ``stop()`` (or leaving a ``with``
    block) shuts it down, closes the port and any open connections, and joins the thread."""

    #: what the thread and the error messages call it
    server_label = "server"
    _server: Any = None
    _thread: threading.Thread | None = None

    def _make_server(self) -> socketserver.BaseServer:
        raise NotImplementedError

    def _close_connections(self, server: Any) -> None:
        """Close what the server still has open after shutdown (nothing by default)."""

    def start(self) -> None:
        """Bind the port and serve in a daemon thread."""
        if self._server is not None:
            raise RuntimeError(f"{self.server_label} already started")
        server = self._make_server()
        port = server.server_address[1] if isinstance(server.server_address, tuple) else ""
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"{self.server_label}:{port}",
            daemon=True,
        )
        thread.start()
        self._server, self._thread = server, thread

    def stop(self) -> None:
        """Stop serving: close the port and every open client connection; idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        self._close_connections(server)
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _bound_address(self) -> tuple[str, int]:
        """The bound ``(host, port)``; a clear error before :meth:`start`."""
        if self._server is None:
            raise RuntimeError(f"{self.server_label} not started: call start() first")
        return str(self._server.server_address[0]), int(self._server.server_address[1])

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
