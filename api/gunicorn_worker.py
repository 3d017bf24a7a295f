"""The API's gunicorn worker: gthread, except that a stopping worker closes its
listening sockets at once.

gunicorn's own gthread worker stops accepting on SIGTERM but keeps its listening
sockets open until the last request in hand is answered: the kernel still completes
new connections, so a client connecting meanwhile waits, unanswered, for up to the
graceful timeout (40 s) and is then reset. Closed at once, the socket refuses it
straight away, and the client can try again elsewhere. Requests already accepted are
answered as before (their result, or 202 with the job id).
"""

from __future__ import annotations

from gunicorn.workers import gthread


class ThreadWorker(gthread.ThreadWorker):
    def set_accept_enabled(self, enabled: bool) -> None:
        super().set_accept_enabled(enabled)
        if not enabled and not self.alive:  # stopping, not merely at its connection limit
            for listener in self.sockets:
                listener.close()
