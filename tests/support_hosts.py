"""Several hosts on this machine, run the way deploy/ says: the operations tests' harness.

Each host is a network namespace (`ip netns`) with one veth into a bridge; only the bridge's private subnet
(10.231.N.0/24) exists, nothing is routed anywhere else. The database host runs Debian's PostgreSQL server;
each app host runs deploy/systemd/chatapp.service the way systemd would (its ExecStartPre and ExecStart lines,
its Environment= and EnvironmentFile=, the working directory and open-files limit) with deploy's env file as
the tests fill it; Debian's nginx in this (the root) namespace serves deploy/nginx's rendered site on
127.0.0.1 over TLS (a certificate made here with openssl). The deploy files are what runs: the only change on
the way is the install location (/opt/chatapp is this checkout, /etc/chatapp the run's folder).

Teardown removes every namespace, process and file of the run, also when a test failed; the processes also
get SIGTERM from the kernel if this one dies (parent-death signal), and a later run sweeps namespaces and
folders left by a run that was killed. Helpers for the failure tests: cut and reconnect a host's link,
restart an app host, restart the database host.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import re
import resource
import secrets
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
INSTALL_PREFIX = "/opt/chatapp"  # where deploy/ expects the checkout
ETC = "/etc/chatapp"  # where deploy/ expects the env file
RUN_PREFIX = "chatapp-ops-"  # run folders in the temp dir and namespace names start with it
SYSTEMD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"  # systemd's PATH for services
APP_PORT = 8000
FIGURES: list[str] = []  # what the operations tests measured; their conftest prints them at the end of the run
# What `make deploy-deps` installs.
DEBIAN_PACKAGES = ("nginx", "postgresql", "iproute2", "openssl", "gettext-base", "systemd", "util-linux")


def missing_requirements() -> str | None:
    """Why this machine cannot run the harness (None: it can). `make test` installs the packages as root."""
    if os.geteuid() != 0:
        return "the multi-host tests create network namespaces: they need root"
    for tool in ("ip", "nginx", "openssl", "envsubst", "setpriv", "prlimit", "systemd-analyze", "pg_dump"):
        if shutil.which(tool, path=SYSTEMD_PATH) is None:
            return f"{tool} is missing: apt-get install {' '.join(DEBIAN_PACKAGES)} (or run make test as root)"
    if postgres_bin() is None:
        return "Debian's PostgreSQL server is missing: apt-get install postgresql"
    return None


def postgres_bin() -> Path | None:
    """The newest installed Debian PostgreSQL server's bin folder."""
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parts[-3]))
    return versions[-1].parent if versions else None


def figure(line: str) -> None:
    """Keep a measured figure for the end-of-run summary (and print it, for `pytest -s`)."""
    FIGURES.append(line)
    print(line)


def run(*args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, check=check, capture_output=True, text=True, timeout=timeout)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ---- systemd's files, read as systemd reads them ----


@dataclass
class Unit:
    """A systemd unit file: every `Key=value` of every section, in order (a key may repeat)."""

    name: str
    sections: dict[str, list[tuple[str, str]]]

    @classmethod
    def read(cls, path: Path) -> Unit:
        sections: dict[str, list[tuple[str, str]]] = {}
        current: list[tuple[str, str]] | None = None
        lines = iter(path.read_text().splitlines())
        for raw in lines:
            line = raw.strip()
            while line.endswith("\\"):  # a continued line
                line = line[:-1] + " " + next(lines, "").strip()
            if not line or line[0] in "#;":
                continue
            if line.startswith("[") and line.endswith("]"):
                current = sections.setdefault(line[1:-1], [])
                continue
            key, sep, value = line.partition("=")
            if current is None or not sep:
                raise ValueError(f"{path}: not a unit file line: {raw!r}")
            current.append((key.strip(), value.strip()))
        return cls(path.name, sections)

    def all(self, key: str, section: str = "Service") -> list[str]:
        return [value for name, value in self.sections.get(section, []) if name == key]

    def get(self, key: str, default: str = "", section: str = "Service") -> str:
        values = self.all(key, section)
        return values[-1] if values else default

    def keys(self, section: str = "Service") -> set[str]:
        return {name for name, _ in self.sections.get(section, [])}


def read_env_file(path: Path) -> dict[str, str]:
    """An EnvironmentFile= as systemd reads it: KEY=value lines, `#`/`;` comment lines, quotes around a value."""
    values: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        key, sep, value = line.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key.strip()):
            raise ValueError(f"{path}:{number}: not KEY=value: {raw!r}")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def write_env_file(template: Path, path: Path, values: dict[str, str], added: dict[str, str] | None = None) -> None:
    """The template with `values` filled in (each must be in it: the tests fill the real template), and the
    `added` settings appended, as an operator adds any setting of the README's table."""
    lines = template.read_text().splitlines()
    left = dict(values)
    for index, line in enumerate(lines):
        key = line.partition("=")[0].strip()
        if line and line[0] not in "#;" and key in left:
            lines[index] = env_line(key, left.pop(key))
    assert not left, f"not in {template.name}: {sorted(left)}"
    if added:
        lines += ["", "# ---- added for this deployment ----", *(env_line(k, v) for k, v in added.items())]
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o640)


def env_line(key: str, value: str) -> str:
    return f'{key}="{value}"' if " " in value else f"{key}={value}"


def exec_argv(line: str, env: dict[str, str]) -> tuple[str, list[str]]:
    """An Exec*= line as systemd runs it: its prefix flags, then the words with `${NAME}` replaced inside a
    word and a lone `$NAME` split into words (systemd's rules; `%%` is the only specifier the units use)."""
    match = re.match(r"[-@:+!]*", line)
    prefix = match.group(0) if match else ""
    words: list[str] = []
    for word in shlex.split(line[len(prefix) :].replace("%%", "%")):
        if re.fullmatch(r"\$[A-Za-z_][A-Za-z0-9_]*", word):
            words += env.get(word[1:], "").split()
        else:
            words.append(re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", lambda m: env.get(m.group(1), ""), word))
    return prefix, words


# Directives the harness carries out, and those it knowingly leaves to systemd (user switching: the venv's
# Python lives under root's home on these machines; sandboxing; restart policy). An unknown one fails the test,
# so a unit cannot grow a directive that changes how it runs without the harness following it.
CARRIED_OUT = {
    "Type",
    "WorkingDirectory",
    "EnvironmentFile",
    "Environment",
    "ExecStartPre",
    "ExecStart",
    "KillMode",
    "TimeoutStartSec",
    "TimeoutStopSec",
    "LimitNOFILE",
    "StateDirectory",
    "StateDirectoryMode",
}
LEFT_TO_SYSTEMD = {
    "User",
    "Group",
    "Restart",
    "RestartSec",
    "NoNewPrivileges",
    "PrivateTmp",
    "PrivateDevices",
    "ProtectSystem",
    "ProtectHome",
    "ProtectKernelTunables",
    "ProtectKernelModules",
    "ProtectControlGroups",
    "RestrictAddressFamilies",
    "RestrictNamespaces",
    "LockPersonality",
    "ReadWritePaths",
}


def seconds(value: str, default: float) -> float:
    """A systemd time span as the units write them (`30`, `30s`, `2min`)."""
    if not value:
        return default
    match = re.fullmatch(r"(\d+)\s*(s|sec|min)?", value)
    assert match, f"time span {value!r}"
    return float(match.group(1)) * (60 if match.group(2) == "min" else 1)


# ---- the network ----


@dataclass
class Network:
    """A bridge in this namespace (it gets the subnet's .1, the proxy's address) and one namespace per host."""

    run_id: str
    subnet: str  # "10.231.N"
    hosts: dict[str, str] = field(default_factory=dict)  # host name -> address

    @property
    def bridge(self) -> str:
        return f"co{self.run_id}br"

    @property
    def gateway(self) -> str:
        return f"{self.subnet}.1"

    def namespace(self, host: str) -> str:
        return f"{RUN_PREFIX}{self.run_id}-{host}"

    def veth(self, host: str) -> str:
        return f"co{self.run_id}{host}"[:15]

    @classmethod
    def create(cls, run_id: str) -> Network:
        used = run("ip", "-o", "-4", "addr", "show").stdout
        free = [n for n in range(1, 255) if f" 10.231.{n}." not in used]
        network = cls(run_id, f"10.231.{secrets.choice(free)}")
        run("ip", "link", "add", network.bridge, "type", "bridge")
        run("ip", "addr", "add", f"{network.gateway}/24", "dev", network.bridge)
        run("ip", "link", "set", network.bridge, "up")
        return network

    def add_host(self, host: str, last_octet: int) -> str:
        namespace, veth, address = self.namespace(host), self.veth(host), f"{self.subnet}.{last_octet}"
        run("ip", "netns", "add", namespace)
        run("ip", "link", "add", veth, "type", "veth", "peer", "name", f"{veth}p")
        run("ip", "link", "set", f"{veth}p", "netns", namespace)
        # No IPv6 link-local address on this side: cutting the link would remove it, and Chromium (in this
        # namespace) takes any address change for a network change and drops every connection it has, which
        # a person's browser elsewhere would never see when a server's cable is pulled.
        Path(f"/proc/sys/net/ipv6/conf/{veth}/disable_ipv6").write_text("1\n")
        run("ip", "link", "set", veth, "master", self.bridge, "up")
        inside = ("ip", "netns", "exec", namespace, "ip")
        run(*inside, "link", "set", f"{veth}p", "name", "eth0")
        run(*inside, "addr", "add", f"{address}/24", "dev", "eth0")
        run(*inside, "link", "set", "eth0", "up")
        run(*inside, "link", "set", "lo", "up")
        self.hosts[host] = address
        return address

    def cut(self, host: str) -> None:
        """The host's cable pulled: its processes live on, nothing reaches it or leaves it (no resets)."""
        run("ip", "link", "set", self.veth(host), "down")

    def reconnect(self, host: str) -> None:
        run("ip", "link", "set", self.veth(host), "up")

    def in_host(self, host: str) -> list[str]:
        return ["ip", "netns", "exec", self.namespace(host)]

    def destroy(self) -> None:
        for host in list(self.hosts):
            remove_namespace(self.namespace(host))
        run("ip", "link", "del", self.bridge, check=False)


def remove_namespace(namespace: str) -> None:
    """Kill whatever still runs in the namespace, then delete it (its veth ends go with it)."""
    listed = run("ip", "netns", "pids", namespace, check=False).stdout.split()
    for pid in listed:
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)
    run("ip", "netns", "del", namespace, check=False)


def sweep_stale_runs() -> list[str]:
    """Remove what a killed earlier run left behind (its owner process is gone): namespaces, its bridge, its
    nginx and its folder. Runs of live processes (another suite running now) are left alone."""
    removed: list[str] = []
    namespaces = [line.split()[0] for line in run("ip", "netns", "list").stdout.splitlines() if line.strip()]
    run_ids = {name[len(RUN_PREFIX) :].split("-")[0] for name in namespaces if name.startswith(RUN_PREFIX)}
    run_ids |= {path.name[len(RUN_PREFIX) :] for path in Path(tempfile.gettempdir()).glob(f"{RUN_PREFIX}*")}
    for run_id in sorted(run_ids):
        folder = Path(tempfile.gettempdir()) / f"{RUN_PREFIX}{run_id}"
        owner = (folder / "owner").read_text().strip() if (folder / "owner").exists() else ""
        if owner and Path(f"/proc/{owner}").exists():
            continue
        for name in namespaces:
            if name.startswith(f"{RUN_PREFIX}{run_id}-"):
                remove_namespace(name)
        run("ip", "link", "del", f"co{run_id}br", check=False)
        nginx_pid = folder / "nginx.pid"
        if nginx_pid.exists():
            pid = nginx_pid.read_text().strip()
            cmdline = Path(f"/proc/{pid}/cmdline")
            if pid.isdigit() and cmdline.exists() and str(folder) in cmdline.read_text():
                os.kill(int(pid), signal.SIGKILL)
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(run_id)
    return removed


def leftovers(run_id: str) -> list[str]:
    """What of a run still exists: namespaces, links, processes whose command line names its folder."""
    found = [line.split()[0] for line in run("ip", "netns", "list").stdout.splitlines() if run_id in line]
    found += [line for line in run("ip", "-o", "link", "show").stdout.splitlines() if f"co{run_id}" in line]
    folder = f"{RUN_PREFIX}{run_id}"
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            if folder in cmdline.read_text() and int(cmdline.parent.name) != os.getpid():
                found.append(f"process {cmdline.parent.name}: {cmdline.read_text().replace(chr(0), ' ')[:120]}")
    return found


# ---- processes ----


def spawn(argv: list[str], log: Path, env: dict[str, str], cwd: Path | None = None) -> subprocess.Popen[bytes]:
    """A child that gets SIGTERM if this process dies (so a killed test run leaves no server behind), in its
    own process group (so stopping it reaches its workers too)."""
    with log.open("ab") as out:
        return subprocess.Popen(
            ["setpriv", "--pdeathsig", "TERM", "--", *argv],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )


def stop_process(process: subprocess.Popen[bytes], sig: signal.Signals, timeout: float) -> float:
    """Send `sig`, wait up to `timeout`, then SIGKILL the whole group. Returns the seconds it took."""
    started = time.monotonic()
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(5)
    return time.monotonic() - started


def stop_all(services: list[Service]) -> float:
    """Stop several hosts' services at once (they are separate machines); the longest stop."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(services) or 1) as pool:
        return max(pool.map(lambda service: service.stop(), services), default=0.0)


def wait_until(check: Callable[[], bool], timeout: float, what: str, log: Path | None = None) -> float:
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            tail = log.read_text()[-3000:] if log and log.exists() else ""
            raise RuntimeError(f"{what} not ready within {timeout} s\n{tail}")
        time.sleep(0.05)
    return time.monotonic() - started


# ---- the database host ----


@dataclass
class DatabaseHost:
    """Debian's PostgreSQL server (not the embedded one), run by the `postgres` user in its own namespace."""

    network: Network
    folder: Path
    address: str
    process: subprocess.Popen[bytes] | None = None
    host: str = "db"  # its namespace (another one: a fresh server to restore into)

    @property
    def socket_dir(self) -> Path:
        return self.folder / "socket"

    @property
    def log(self) -> Path:
        return self.folder / "postgres.log"

    @property
    def version(self) -> str:
        return (self.folder / "data" / "PG_VERSION").read_text().strip()

    def as_postgres(self, *argv: str, death_signal: str = "INT") -> list[str]:
        """As the `postgres` user; if this process dies, the server gets a fast shutdown (SIGINT). The
        parent-death signal is set after the user switch, which would clear it."""
        user = ["--reuid=postgres", "--regid=postgres", "--init-groups", f"--pdeathsig={death_signal}"]
        return ["setpriv", *user, "--", *argv]

    def init(self) -> None:
        self.folder.mkdir()
        self.socket_dir.mkdir()
        shutil.chown(self.folder, "postgres", "postgres")
        shutil.chown(self.socket_dir, "postgres", "postgres")
        self.folder.chmod(0o700)
        bin_dir = postgres_bin()
        assert bin_dir is not None
        run(
            *self.as_postgres(str(bin_dir / "initdb"), "-D", str(self.folder / "data"), "-U", "postgres"),
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C.UTF-8",
            timeout=120,
        )
        hba = self.folder / "data" / "pg_hba.conf"
        hba.write_text(
            "local all postgres trust\n"  # the socket is in a folder only postgres (and root) can open
            f"host all chatapp {self.network.subnet}.0/24 scram-sha-256\n"  # chatapp, and a database to restore into
        )

    def start(self) -> float:
        bin_dir = postgres_bin()
        assert bin_dir is not None
        argv = [
            *self.network.in_host(self.host),
            *self.as_postgres(str(bin_dir / "postgres"), "-D", str(self.folder / "data")),
            "-c",
            f"listen_addresses={self.address}",
            "-c",
            f"unix_socket_directories={self.socket_dir}",
            "-c",
            "port=5432",
        ]
        self.process = spawn(argv, self.log, {"PATH": SYSTEMD_PATH, "LANG": "C.UTF-8"})
        return wait_until(self.ready, 60, "PostgreSQL", self.log)

    def ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"PostgreSQL exited:\n{self.log.read_text()[-3000:]}")
        return run("pg_isready", "-q", "-h", str(self.socket_dir), "-p", "5432", check=False).returncode == 0

    def psql(self, *args: str) -> str:
        """psql as the superuser over the local socket."""
        return run(
            *self.as_postgres("psql", "--no-psqlrc", "-h", str(self.socket_dir), "-p", "5432", "-U", "postgres"),
            *args,
            timeout=60,
        ).stdout

    def stop(self) -> float:
        """A fast shutdown (SIGINT): sessions are cut, nothing acknowledged is lost."""
        return stop_process(self.process, signal.SIGINT, 30) if self.process else 0.0

    def restart(self) -> float:
        return self.stop() + self.start()


# ---- an app host: deploy/systemd/chatapp.service, run as systemd would ----


@dataclass
class Service:
    """One systemd service of one host (deploy/systemd/<unit>), started and stopped as systemd would."""

    network: Network
    host: str
    unit: Unit
    paths: dict[str, str]  # install location in deploy/ -> where it is in this run
    state_root: Path  # the host's /var/lib
    log: Path
    process: subprocess.Popen[bytes] | None = None

    def installed(self, value: str) -> str:
        for expected, actual in self.paths.items():
            value = value.replace(expected, actual)
        return value

    def check_directives(self) -> None:
        unknown = self.unit.keys() - CARRIED_OUT - LEFT_TO_SYSTEMD
        assert not unknown, f"{self.unit.name}: the harness does not know {sorted(unknown)}"

    def environment(self) -> dict[str, str]:
        """systemd's: its PATH, then Environment=, then EnvironmentFile= (files win), plus STATE_DIRECTORY."""
        env = {"PATH": SYSTEMD_PATH, "LANG": "C.UTF-8"}
        for line in self.unit.all("Environment"):
            for assignment in shlex.split(line.replace("%S", str(self.state_root))):
                key, _, value = assignment.partition("=")
                env[key] = value
        for path in self.unit.all("EnvironmentFile"):
            env.update(read_env_file(Path(self.installed(path.lstrip("-")))))
        if state := self.unit.get("StateDirectory"):
            env["STATE_DIRECTORY"] = str(self.state_root / state)
        return env

    def command(self, argv: list[str]) -> list[str]:
        wrapped = [*self.network.in_host(self.host)]
        if limit := self.unit.get("LimitNOFILE"):
            # systemd raises the hard limit too; without CAP_SYS_RESOURCE (this sandbox) only up to ours.
            allowed = min(int(limit), resource.getrlimit(resource.RLIMIT_NOFILE)[1])
            wrapped += ["prlimit", f"--nofile={allowed}:{allowed}", "--"]
        return [*wrapped, *argv]

    def start(self) -> float:
        """ExecStartPre lines in order (each must succeed unless marked `-`), then ExecStart. Returns seconds."""
        self.check_directives()
        started = time.monotonic()
        env = self.environment()
        if state := self.unit.get("StateDirectory"):
            folder = self.state_root / state
            folder.mkdir(parents=True, exist_ok=True)
            folder.chmod(int(self.unit.get("StateDirectoryMode", "0755"), 8))
        cwd = Path(self.installed(self.unit.get("WorkingDirectory", "/")))
        budget = seconds(self.unit.get("TimeoutStartSec"), 90)
        for line in self.unit.all("ExecStartPre"):
            prefix, argv = exec_argv(self.installed(line), env)
            with self.log.open("ab") as out:
                result = subprocess.run(
                    self.command(argv), env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, timeout=budget
                )
            if result.returncode != 0 and "-" not in prefix:
                raise RuntimeError(f"{self.unit.name} on {self.host}: {argv} failed:\n{self.log.read_text()[-3000:]}")
        (exec_start,) = self.unit.all("ExecStart")
        _, argv = exec_argv(self.installed(exec_start), env)
        self.process = spawn(self.command(argv), self.log, env, cwd)
        return time.monotonic() - started

    def run_once(self) -> str:
        """A Type=oneshot service (a backup): its ExecStart lines in order, each to completion; their output."""
        self.check_directives()
        assert self.unit.get("Type") == "oneshot", self.unit.name
        env = self.environment()
        cwd = Path(self.installed(self.unit.get("WorkingDirectory", "/")))
        output = ""
        for line in self.unit.all("ExecStart"):
            _, argv = exec_argv(self.installed(line), env)
            result = subprocess.run(self.command(argv), env=env, cwd=cwd, capture_output=True, text=True, timeout=120)
            with self.log.open("a") as log:
                log.write(result.stdout + result.stderr)
            if result.returncode != 0:
                raise RuntimeError(f"{self.unit.name} on {self.host}: {argv} failed:\n{result.stderr[-3000:]}")
            output += result.stdout
        return output

    def stop(self) -> float:
        """SIGTERM to the main process (KillMode=mixed), SIGKILL to all after TimeoutStopSec."""
        if self.process is None:
            return 0.0
        return stop_process(self.process, signal.SIGTERM, seconds(self.unit.get("TimeoutStopSec"), 90))

    def kill(self) -> None:
        """A crash: SIGKILL, no shutdown."""
        if self.process is not None:
            stop_process(self.process, signal.SIGKILL, 5)


@dataclass
class AppHost:
    name: str
    address: str
    service: Service

    @property
    def url(self) -> str:
        return f"http://{self.address}:{APP_PORT}"

    def healthy(self) -> bool:
        process = self.service.process
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{self.name} exited:\n{self.service.log.read_text()[-3000:]}")
        try:
            return httpx.get(f"{self.url}/readyz", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_ready(self, timeout: float = 90) -> float:
        return wait_until(self.healthy, timeout, f"app host {self.name}", self.service.log)

    def restart(self) -> float:
        """`systemctl restart chatapp` on this host: stop, migrations, serve, until it answers /readyz."""
        return self.service.stop() + self.service.start() + self.wait_ready()


def installed_service(network: Network, host: str, unit: str, paths: dict[str, str], folder: Path) -> Service:
    """deploy/systemd/<unit> as installed on `host` (its /var/lib and its log in the run's folder)."""
    state = folder / host / "var-lib"
    state.mkdir(parents=True, exist_ok=True)
    log = folder / host / f"{unit.rsplit('.', 1)[0]}.log"
    return Service(network, host, Unit.read(DEPLOY / "systemd" / unit), paths, state, log)


# ---- the proxy ----


@dataclass
class Proxy:
    """Debian's nginx in this namespace with deploy/nginx's site, rendered by deploy/bin/render-nginx."""

    folder: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.folder / "nginx-error.log"

    @property
    def access_log(self) -> Path:
        return self.folder / "nginx-access.log"

    def configure(self, env_file: Path) -> Path:
        site = self.folder / "chatapp.conf"
        rendered = run(str(DEPLOY / "bin" / "render-nginx"), str(env_file))
        site.write_text(rendered.stdout)
        temp = self.folder / "nginx-temp"
        temp.mkdir()
        shutil.chown(temp, "www-data", "www-data")
        # Debian's nginx.conf, cut down to what the site needs and with this run's files: the site is included
        # into the http block exactly as sites-enabled/ would include it.
        main = self.folder / "nginx.conf"
        main.write_text(
            f"""user www-data;
worker_processes 1;
pid {self.folder}/nginx.pid;
error_log {self.log} info;
events {{ worker_connections 1024; }}
http {{
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    log_format upstreams '$remote_addr "$request" $status $upstream_addr $request_time';
    access_log {self.access_log} upstreams;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    include {site};
}}
"""
        )
        return main

    def check(self, main: Path) -> None:
        run("nginx", "-t", "-q", "-c", str(main), "-e", str(self.log))

    def start(self, main: Path, port: int) -> float:
        self.check(main)
        self.process = spawn(
            ["nginx", "-c", str(main), "-e", str(self.log), "-g", "daemon off;"],
            self.folder / "nginx-stdout.log",
            {"PATH": SYSTEMD_PATH},
        )

        def listening() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"nginx exited:\n{self.log.read_text()[-3000:]}")
            with socket.socket() as sock:
                return sock.connect_ex(("127.0.0.1", port)) == 0

        return wait_until(listening, 20, "nginx", self.log)

    def stop(self) -> float:
        return stop_process(self.process, signal.SIGTERM, 10) if self.process else 0.0

    def upstreams_used(self) -> dict[str, int]:
        """How many requests each app host answered (from the access log's $upstream_addr)."""
        counts: dict[str, int] = {}
        for line in self.access_log.read_text().splitlines():
            for upstream in re.findall(r"\b(\d+\.\d+\.\d+\.\d+:\d+)\b", line.split('"')[-1]):
                counts[upstream] = counts.get(upstream, 0) + 1
        return counts


# ---- TLS ----


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and chatapp.test, made now (nothing secret is committed)."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    run(
        "openssl",
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=chatapp.test",
        "-addext",
        "subjectAltName=DNS:chatapp.test,IP:127.0.0.1",
        "-keyout",
        str(key),
        "-out",
        str(cert),
    )
    key.chmod(0o600)
    return cert, key


# ---- the whole deployment ----


def keep_logs(folder: Path, destination: Path) -> None:
    """Every host's log, kept after the run's folder is gone (what to read when a test failed)."""
    for log in folder.rglob("*.log"):
        target = destination / log.relative_to(folder)
        target.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):
            shutil.copyfile(log, target)


@dataclass
class Deployment:
    """Two app hosts and a database host behind nginx, with the figures of bringing it up and down."""

    run_id: str
    folder: Path
    network: Network
    database: DatabaseHost
    apps: dict[str, AppHost]
    proxy: Proxy
    env_file: Path
    settings: dict[str, str]
    url: str
    http_url: str
    certificate: Path
    paths: dict[str, str]
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def database_url(self) -> str:
        return self.settings["DATABASE_URL"]

    @property
    def secret_key(self) -> str:
        return self.settings["CHATAPP_SECRET_KEY"]

    def tls(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.certificate))

    def client(self, address: str = "127.0.0.1", **kwargs: object) -> httpx.AsyncClient:
        """A person's browser: HTTPS to the proxy, HTTP/2, from `address` (any 127.x.y.z: each is a client
        address of its own, as the proxy and the app see it)."""
        transport = httpx.AsyncHTTPTransport(verify=self.tls(), http2=True, local_address=address)
        return httpx.AsyncClient(base_url=self.url, transport=transport, timeout=15.0, **kwargs)  # type: ignore[arg-type]

    async def fetch(self, query: str, *args: object) -> list[asyncpg.Record]:
        """Read what the database host stored (as the app's role, over the private network)."""
        conn = await asyncpg.connect(self.database_url, timeout=10)
        try:
            return list(await conn.fetch(query, *args))
        finally:
            await conn.close()

    def service(self, host: str, unit: str) -> Service:
        """Another of deploy/systemd's units on one of the hosts (e.g. chatapp-backup.service)."""
        return installed_service(self.network, host, unit, self.paths, self.folder)

    def cut(self, host: str) -> None:
        self.network.cut(host)

    def reconnect(self, host: str) -> None:
        self.network.reconnect(host)

    @classmethod
    @contextlib.contextmanager
    def up(cls, app_hosts: int = 2, **settings: str) -> Iterator[Deployment]:
        """Bring everything up; tear everything down on the way out, whatever happened."""
        sweep_stale_runs()
        run_id = secrets.token_hex(2)
        folder = Path(tempfile.gettempdir()) / f"{RUN_PREFIX}{run_id}"
        folder.mkdir(mode=0o755)
        (folder / "owner").write_text(str(os.getpid()))
        timings: dict[str, float] = {}
        started = time.monotonic()
        network: Network | None = None
        parts: list[tuple[str, Callable[[], float]]] = []  # what to stop, named: the last started goes first
        try:
            network = Network.create(run_id)
            db_address = network.add_host("db", 30)
            addresses = {f"app{n}": network.add_host(f"app{n}", 10 + n) for n in range(1, app_hosts + 1)}
            timings["network"] = time.monotonic() - started

            mark = time.monotonic()
            database = DatabaseHost(network, folder / "db", db_address)
            database.init()
            timings["initdb"] = time.monotonic() - mark
            timings["postgres start"] = database.start()
            parts.append(("postgres", database.stop))
            password = secrets.token_urlsafe(24)
            database.psql("-v", f"password={password}", "-f", str(DEPLOY / "postgresql" / "setup.sql"))

            cert, key = self_signed_certificate(folder)
            https_port, http_port = free_port(), free_port()
            url = f"https://127.0.0.1:{https_port}"
            values = {
                "CHATAPP_SECRET_KEY": secrets.token_urlsafe(48),
                "DATABASE_URL": f"postgresql://chatapp:{password}@{db_address}:5432/chatapp",
                "CHATAPP_HOST": "0.0.0.0",
                "CHATAPP_PORT": str(APP_PORT),
                "CHATAPP_WORKERS": "1",
                "CHATAPP_PUBLIC_URL": url,
                "CHATAPP_FORWARDED_ALLOW_IPS": network.gateway,
                "CHATAPP_INGEST_URL": url,
                "NGINX_SERVER_NAME": "chatapp.test",
                "NGINX_LISTEN_HTTPS": f"127.0.0.1:{https_port}",
                "NGINX_LISTEN_HTTP": f"127.0.0.1:{http_port}",
                "NGINX_CERTIFICATE": str(cert),
                "NGINX_CERTIFICATE_KEY": str(key),
                "NGINX_APP_SERVERS": " ".join(f"{address}:{APP_PORT}" for address in addresses.values()),
                "CHATAPP_BACKUP_DIR": str(folder / "backups"),
            }
            env_file = folder / "etc" / "chatapp.env"
            env_file.parent.mkdir()
            write_env_file(DEPLOY / "chatapp.env.example", env_file, values, settings)
            paths = {INSTALL_PREFIX: str(ROOT), ETC: str(env_file.parent)}

            apps = {
                name: AppHost(name, address, installed_service(network, name, "chatapp.service", paths, folder))
                for name, address in addresses.items()
            }
            # The first host migrates the empty database alone (two hosts migrating at once race: a later
            # phase gives `chatapp migrate` a lock); then every host starts, each running its own
            # ExecStartPre migration as systemd would (already up to date).
            mark = time.monotonic()
            first, *others = apps.values()
            parts.append(("app hosts", lambda: stop_all([app.service for app in apps.values()])))
            timings["app1 migrate+start"] = first.service.start()
            for app in others:
                app.service.start()
            for app in apps.values():
                app.wait_ready()
            timings["app hosts ready"] = time.monotonic() - mark

            proxy = Proxy(folder)
            main = proxy.configure(env_file)
            timings["nginx start"] = proxy.start(main, https_port)
            parts.append(("nginx", proxy.stop))
            timings["up"] = time.monotonic() - started
            yield cls(
                run_id=run_id,
                folder=folder,
                network=network,
                database=database,
                apps=apps,
                proxy=proxy,
                env_file=env_file,
                settings=read_env_file(env_file),
                url=url,
                http_url=f"http://127.0.0.1:{http_port}",
                certificate=cert,
                paths=paths,
                timings=timings,
            )
        finally:
            mark = time.monotonic()
            for name, stop in reversed(parts):
                with contextlib.suppress(Exception):
                    timings[f"stop {name}"] = stop()
            if network is not None:
                network.destroy()
            keep_logs(folder, ROOT / "test-artifacts" / "operations" / run_id)
            shutil.rmtree(folder, ignore_errors=True)
            timings["down"] = time.monotonic() - mark
