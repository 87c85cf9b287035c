"""Several uvicorn workers, each with its own listening socket in one SO_REUSEPORT group.

uvicorn's supervisor hands every worker the same socket, and whichever worker wakes first accepts every
connection waiting: a burst of keep-alive connections (8 benchmark clients, or a page's parallel requests)
lands on one worker while the other idles — `make bench` showed one worker at 100% CPU and the machine at
132% of 200%. With one socket per worker the kernel spreads new connections over the workers by their
address hash instead.

A worker that dies leaves its socket in the group (the parent keeps it open, for the replacement), so the
kernel goes on handing it a share of new connections, and they waited for the replacement to start: 2.8-5.1 s
in an audit. Closing the socket instead would reset the connections already queued on it (unless the kernel
migrates them: `net.ipv4.tcp_migrate_req`, root only, per network namespace). So every worker is given every
socket and serves its own; when one dies the parent notices within `CHECK_INTERVAL`, tells the others to serve
the dead one's socket too ("adopt"), starts the replacement on that same socket, and when the replacement says
it is serving ("ready") tells the others to stop ("release"), so each socket again has one worker and the load
stays evenly spread. Nothing is reset, no sysctl is needed, and no connection waits for a process to start.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
from multiprocessing import Pipe
from multiprocessing.connection import Connection
from typing import Literal

from uvicorn.config import STARTUP_FAILURE, Config
from uvicorn.server import Server
from uvicorn.supervisors.multiprocess import Multiprocess, Process

log = logging.getLogger("uvicorn.error")

CHECK_INTERVAL = 0.1  # seconds between the parent's looks for workers that exited (uvicorn's loop waits 0.5 s)
HEALTH_CHECK_EVERY = 5  # ... and every this many looks, uvicorn's ping of each worker (for hung ones)

Command = tuple[Literal["adopt", "release", "ready"], int]


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


class SpreadServer(Server):
    """A worker's uvicorn server: serves socket `index` of the group, and others while the parent says so."""

    def __init__(self, config: Config, index: int, commands: Connection) -> None:
        super().__init__(config)
        self.index = index
        self.commands = commands
        self.group: list[socket.socket] = []
        self.adopted: dict[int, asyncio.Server] = {}
        self._inbox: asyncio.Queue[Command] = asyncio.Queue()
        self._follower: asyncio.Task[None] | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self.group = sockets or []
        await super().startup(sockets=[self.group[self.index]])
        if not self.started:
            return
        asyncio.get_running_loop().add_reader(self.commands.fileno(), self._receive)
        self._follower = asyncio.create_task(self._follow())
        self.commands.send(("ready", self.index))

    def _receive(self) -> None:
        try:
            while self.commands.poll():
                self._inbox.put_nowait(self.commands.recv())
        except (EOFError, OSError):  # the parent is gone: uvicorn's own checks end this process
            asyncio.get_running_loop().remove_reader(self.commands.fileno())

    async def _follow(self) -> None:
        """The parent's commands, one at a time (an adopt is finished before its release is looked at)."""
        while True:
            command, index = await self._inbox.get()
            if command == "adopt" and index not in self.adopted and index != self.index:
                self.adopted[index] = await self._listen_on(self.group[index].dup())
                log.info("Worker [%d] serves worker %d's socket until its replacement is ready", os.getpid(), index)
            elif command == "release" and (server := self.adopted.pop(index, None)) is not None:
                server.close()  # closes this process's copy only; the socket stays open for its own worker
                self.servers.remove(server)
                log.info("Worker [%d] leaves worker %d's socket to its replacement", os.getpid(), index)

    async def _listen_on(self, sock: socket.socket) -> asyncio.Server:
        """What uvicorn's startup does for each socket it is given."""
        protocol = functools.partial(
            self.config.http_protocol_class,
            config=self.config,  # type: ignore[call-arg]
            server_state=self.server_state,
            app_state=self.lifespan.state,
        )
        server = await asyncio.get_running_loop().create_server(protocol, sock=sock, backlog=self.config.backlog)
        self.servers.append(server)
        return server

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self._follower is not None:
            asyncio.get_running_loop().remove_reader(self.commands.fileno())
            self._follower.cancel()
        await super().shutdown(sockets=sockets)


class SpreadProcess(Process):
    """uvicorn's worker process, given the whole group of sockets and a command pipe; serves socket `index`."""

    def __init__(self, config: Config, sockets: list[socket.socket], index: int) -> None:
        self.index = index
        self.commands, self._worker_end = Pipe()
        super().__init__(config, sockets)

    @property
    def server(self) -> Server:
        if self._server is None:
            self._server = SpreadServer(self.config, self.index, self._worker_end)
        return self._server

    def tell(self, command: Command) -> None:
        with contextlib.suppress(OSError):  # it died meanwhile: the parent's next look replaces it
            self.commands.send(command)

    def reports(self) -> list[Command]:
        found: list[Command] = []
        try:
            while self.commands.poll():
                found.append(self.commands.recv())
        except (EOFError, OSError):
            pass
        return found

    def terminate(self) -> None:
        super().terminate()
        self._close_commands()

    def kill(self) -> None:
        super().kill()
        self._close_commands()

    def _close_commands(self) -> None:
        self.commands.close()
        self._worker_end.close()


class SpreadSupervisor(Multiprocess):
    """uvicorn's Multiprocess with worker `i` always serving socket `i` (also after a restart), and the others
    serving a dead worker's socket until its replacement is ready."""

    def __init__(self, config: Config, sockets: list[socket.socket]) -> None:
        super().__init__(config, sockets)
        self.worker_sockets = sockets
        self.processes: list[SpreadProcess] = []  # type: ignore[assignment]
        self.adopters: dict[int, list[SpreadProcess]] = {}

    def _process(self, index: int) -> SpreadProcess:
        return SpreadProcess(self.config, self.worker_sockets, index)

    def init_processes(self) -> None:
        for index in range(self.processes_num):
            process = self._process(index)
            process.start()
            self.processes.append(process)

    def run(self) -> None:
        """uvicorn's loop, looking for dead workers every `CHECK_INTERVAL` instead of every 0.5 s."""
        log.info("Started parent process [%d]", os.getpid())
        self.init_processes()
        looks = 0
        while not self.should_exit.wait(CHECK_INTERVAL):
            self.handle_signals()
            self.replace_exited()
            looks += 1
            if looks % HEALTH_CHECK_EVERY == 0:
                self.keep_subprocess_alive()
            self.follow_reports()
        self.terminate_all()
        self.join_all()
        log.info("Stopping parent process [%d]", os.getpid())

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

    def replace_exited(self) -> None:
        """Workers that exited (a crash, `kill -9`): seen without a ping, so within `CHECK_INTERVAL`."""
        for index, process in enumerate(self.processes):
            if not self.should_exit.is_set() and not process.process.is_alive():
                self._replace(index, process)

    def keep_subprocess_alive(self) -> None:
        """uvicorn's health check: a worker that does not answer its ping is killed and replaced."""
        for index, process in enumerate(self.processes):
            if self.should_exit.is_set():
                return
            if not process.is_alive(timeout=self.config.timeout_worker_healthcheck):
                self._replace(index, process)

    def _replace(self, index: int, process: SpreadProcess) -> None:
        process.kill()  # it may only be hung
        process.join()
        if process.exitcode == STARTUP_FAILURE:  # it would fail the same way again
            log.error("Child process [%s] failed to start, stopping the parent process.", process.pid)
            self.should_exit.set()
            return
        if self.should_exit.is_set():
            return
        log.info("Child process [%s] died", process.pid)
        others = [p for p in self.processes if p is not process and p.process.is_alive()]
        for other in others:
            other.tell(("adopt", index))
        self.adopters[index] = others
        replacement = self._process(index)
        replacement.start()
        self.processes[index] = replacement

    def follow_reports(self) -> None:
        """A replacement that serves its socket ends its adopters' stand-in."""
        for process in self.processes:
            for command, index in process.reports():
                if command == "ready":
                    for adopter in self.adopters.pop(index, []):
                        adopter.tell(("release", index))

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
