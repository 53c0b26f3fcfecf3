"""One wall-clock deadline for a whole HTTP call made with urllib (the webhook's delivery, each of
Prometheus' queries): connecting, sending, and reading the answer to its last byte.

A socket's timeout bounds each read alone: a server trickling a byte every 0.8 s holds a call on a
1 s timeout for as long as it likes (a Prometheus query held a controller's ``decide()`` 45 s, a
webhook receiver a delivery 19 s on a 5 s timeout, and one streaming a chunked answer for ever).
When the deadline passes, a timer shuts the call's sockets down: the read blocked on one wakes, and
whatever it raises (or the short answer it returns) is read as ``expired``::

    with Deadline(seconds) as deadline:
        with deadline.opener().open(url, timeout=seconds) as response:
            body = response.read()
        if deadline.expired:  # the cut ends a read as if the answer ended there
            ...
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import threading
import urllib.request
from types import TracebackType
from typing import Any


class Deadline:
    """Shuts down the sockets of the connections its ``opener`` makes once ``seconds`` have passed."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def opener(self, *handlers: urllib.request.BaseHandler) -> urllib.request.OpenerDirector:
        """urllib's opener (proxies from the environment, redirects followed unless one of
        ``handlers`` says otherwise) whose HTTP and HTTPS connections this deadline cuts."""
        return urllib.request.build_opener(*handlers, _HTTPHandler(self), _HTTPSHandler(self))

    def cancel(self) -> None:
        self._timer.cancel()

    def __enter__(self) -> Deadline:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.cancel()

    def watching(self, kind: type[http.client.HTTPConnection]) -> Any:
        """A factory of ``kind`` connections whose socket this deadline cuts (for ``do_open``).
        The socket is kept from its connecting: urllib drops the connection's once the headers are
        in, while the answer's body is still read through it."""

        def make(host: str, **kwargs: Any) -> http.client.HTTPConnection:
            connection = kind(host, **kwargs)
            connect = connection.connect

            def connect_in_time() -> None:
                connect()
                self._sockets.append(connection.sock)
                if self.expired:  # while connecting, before there was a socket to shut down
                    connection.close()
                    raise TimeoutError("the deadline passed while connecting")

            connection.connect = connect_in_time  # type: ignore[method-assign]
            return connection

        return make

    def _expire(self) -> None:
        self.expired = True
        for sock in list(self._sockets):
            # the plain socket's shutdown, under TLS too: it wakes the read blocked on it (OSError:
            # closed meanwhile)
            with contextlib.suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, deadline: Deadline) -> None:
        super().__init__()
        self.deadline = deadline

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(self.deadline.watching(http.client.HTTPConnection), req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, deadline: Deadline) -> None:
        super().__init__()
        self.deadline = deadline

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(self.deadline.watching(http.client.HTTPSConnection), req)
