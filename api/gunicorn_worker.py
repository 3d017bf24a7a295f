"""The API's gunicorn worker: gthread, with two changes.

- A stopping worker closes its listening sockets at once. gunicorn's own gthread
  worker stops accepting on SIGTERM but keeps its listening sockets open until the
  last request in hand is answered: the kernel still completes new connections, so a
  client connecting meanwhile waits, unanswered, for up to the graceful timeout
  (40 s) and is then reset. Closed at once, the socket refuses it straight away, and
  the client can try again elsewhere. Requests already accepted are answered as
  before (their result, or 202 with the job id).
- The errors gunicorn answers itself, before the app sees a request (a request line
  or headers too long: 414, 431; a malformed request: 400), are the API's JSON error
  shape, not an HTML page. gunicorn has no setting or hook for their body: its
  ``handle_error`` writes them with ``gunicorn.util.write_error``, which this worker
  process replaces.
"""

from __future__ import annotations

import json
import socket

from gunicorn import util
from gunicorn.workers import gthread


def write_json_error(sock: socket.socket, status_int: int, reason: str, mesg: str) -> None:
    code = reason.lower().replace(" ", "_")
    body = json.dumps({"error": {"code": code, "message": mesg or reason}})
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    util.write_nonblock(sock, (head + body).encode("latin1"))


class ThreadWorker(gthread.ThreadWorker):
    def init_process(self) -> None:
        util.write_error = write_json_error
        super().init_process()

    def set_accept_enabled(self, enabled: bool) -> None:
        super().set_accept_enabled(enabled)
        if not enabled and not self.alive:  # stopping, not merely at its connection limit
            for listener in self.sockets:
                listener.close()
