"""Several uvicorn workers, each with its own listening socket in one SO_REUSEPORT group.

uvicorn's supervisor hands every worker the same socket, and whichever worker wakes first accepts every
connection waiting: a burst of keep-alive connections (8 benchmark clients, or a page's parallel requests)
lands on one worker while the other idles — `make bench` showed one worker at 100% CPU and the machine at
132% of 200%. With one socket per worker the kernel spreads new connections over the workers by their
address hash instead. A worker that dies is replaced on its own socket, so no socket is ever left without
a process accepting from it.
"""

from __future__ import annotations

import logging
import os
import socket

from uvicorn.config import STARTUP_FAILURE, Config
from uvicorn.supervisors.multiprocess import Multiprocess, Process

log = logging.getLogger("uvicorn.error")


def reuseport_sockets(host: str, port: int, count: int) -> list[socket.socket]:
    """`count` sockets bound to one address; port 0 means the first one's port for all."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sockets: list[socket.socket] = []
    for _ in range(count):
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        port = sock.getsockname()[1]
        sock.set_inheritable(True)
        sockets.append(sock)
    return sockets


class SpreadSupervisor(Multiprocess):
    """uvicorn's Multiprocess with worker `i` always serving socket `i` (also after a restart)."""

    def __init__(self, config: Config, sockets: list[socket.socket]) -> None:
        super().__init__(config, sockets)
        self.worker_sockets = sockets

    def _process(self, index: int) -> Process:
        return Process(self.config, [self.worker_sockets[index]])

    def init_processes(self) -> None:
        for index in range(self.processes_num):
            process = self._process(index)
            process.start()
            self.processes.append(process)

    def restart_all(self) -> None:
        for index, old in enumerate(self.processes):
            if self.should_exit.is_set():
                return
            new = self._process(index)
            new.start()
            if not new.wait_until_ready(self.config.timeout_worker_healthcheck, self.should_exit):
                new.kill()
                new.join()
                if not self.should_exit.is_set():
                    log.error("New child process [%s] was not ready in time; keeping worker [%s].", new.pid, old.pid)
                return
            old.terminate()
            old.join()
            self.processes[index] = new

    def keep_subprocess_alive(self) -> None:
        if self.should_exit.is_set():
            return
        for index, process in enumerate(self.processes):
            if process.is_alive(timeout=self.config.timeout_worker_healthcheck):
                continue
            process.kill()
            process.join()
            if process.exitcode == STARTUP_FAILURE:  # it would fail the same way again
                log.error("Child process [%s] failed to start, stopping the parent process.", process.pid)
                self.should_exit.set()
                return
            if self.should_exit.is_set():
                return
            log.info("Child process [%s] died", process.pid)
            replacement = self._process(index)
            replacement.start()
            self.processes[index] = replacement

    def handle_ttin(self) -> None:
        log.info("Adding workers at run time is not supported (one socket per worker); restart with --workers")

    def handle_ttou(self) -> None:
        log.info("Removing workers at run time is not supported (one socket per worker); restart with --workers")


def run_workers(config: Config) -> None:
    """What `uvicorn.run(..., workers=N)` does, with a socket per worker."""
    sockets = reuseport_sockets(config.host, config.port, config.workers)
    log.info("Uvicorn running on http://%s:%d (Press CTRL+C to quit)", config.host, sockets[0].getsockname()[1])
    log.info("%d workers, one socket each (parent pid %d)", config.workers, os.getpid())
    try:
        SpreadSupervisor(config, sockets).run()
    except KeyboardInterrupt:
        pass
    finally:
        for sock in sockets:
            sock.close()
