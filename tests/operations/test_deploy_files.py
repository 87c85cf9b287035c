"""The files in deploy/ on their own: systemd accepts the units, the env file reads the same everywhere, the
nginx site renders and nginx accepts it, and the harness leaves nothing behind."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import pytest
from dotenv import dotenv_values

from chatapp.core.settings import Settings
from tests.support_hosts import (
    CARRIED_OUT,
    DEPLOY,
    ETC,
    INSTALL_PREFIX,
    LEFT_TO_SYSTEMD,
    ROOT,
    RUN_PREFIX,
    SYSTEMD_PATH,
    Network,
    Unit,
    exec_argv,
    installed_service,
    leftovers,
    missing_requirements,
    read_env_file,
    run,
    self_signed_certificate,
    sweep_stale_runs,
    write_env_file,
)

UNITS = sorted((DEPLOY / "systemd").glob("chatapp*.*"))
needs_tools = pytest.mark.skipif(bool(missing_requirements()), reason=str(missing_requirements()))


def installed_units(folder: Path) -> list[Path]:
    """The units as installed on a host whose /opt/chatapp is this checkout and /etc/chatapp holds the env
    file (the only difference from deploy/: where things are)."""
    (folder / "etc").mkdir()
    write_env_file(DEPLOY / "chatapp.env.example", folder / "etc" / "chatapp.env", {})
    copies = []
    for unit in UNITS:
        text = unit.read_text().replace(INSTALL_PREFIX, str(ROOT)).replace(ETC, str(folder / "etc"))
        (folder / unit.name).write_text(text)
        copies.append(folder / unit.name)
    return copies


@needs_tools
def test_systemd_analyze_verify_accepts_every_unit_without_a_warning(tmp_path: Path) -> None:
    """systemd is not PID 1 here, but `systemd-analyze verify` still loads each unit as systemd would: unknown
    keys, bad values and missing executables are reported (an unknown key only as a warning, hence stderr)."""
    copies = installed_units(tmp_path)
    assert {path.name for path in copies} == {
        "chatapp.service",
        "chatapp-agent.service",
        "chatapp-backup.service",
        "chatapp-backup.timer",
    }
    result = run("systemd-analyze", "verify", "--man=no", *map(str, copies), check=False, timeout=60)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


@needs_tools
def test_systemd_analyze_verify_here_reports_what_it_should(tmp_path: Path) -> None:
    """The check above is worth something on this machine: a misspelt key and a missing program are reported."""
    broken = tmp_path / "broken.service"
    broken.write_text("[Service]\nExecStart=/opt/nowhere/chatapp serve\nRestartSecs=5\n")
    result = run("systemd-analyze", "verify", "--man=no", str(broken), check=False, timeout=60)
    assert result.returncode != 0
    assert "Unknown key 'RestartSecs'" in result.stderr
    assert "/opt/nowhere/chatapp is not executable" in result.stderr


def test_the_app_unit_migrates_before_it_serves_with_the_env_file() -> None:
    unit = Unit.read(DEPLOY / "systemd" / "chatapp.service")
    env = {"CHATAPP_PORT": "8000"}
    assert [exec_argv(line, env)[1] for line in unit.all("ExecStartPre")] == [
        [f"{INSTALL_PREFIX}/.venv/bin/chatapp", "migrate"]
    ]
    assert exec_argv(unit.get("ExecStart"), env)[1] == [f"{INSTALL_PREFIX}/.venv/bin/chatapp", "serve"]
    assert unit.all("EnvironmentFile") == [f"{ETC}/chatapp.env"]
    assert unit.get("KillMode") == "mixed"
    agent = Unit.read(DEPLOY / "systemd" / "chatapp-agent.service")
    assert exec_argv(agent.get("ExecStart"), env)[1] == [f"{INSTALL_PREFIX}/.venv/bin/chatapp", "agent"]


def test_each_app_host_keeps_its_data_in_its_own_state_directory(tmp_path: Path) -> None:
    """The env file is the same on every host; the data dir comes from the unit (%S = /var/lib, per host)."""
    etc = tmp_path / "etc"
    etc.mkdir()
    write_env_file(DEPLOY / "chatapp.env.example", etc / "chatapp.env", {})
    network = Network("0000", "10.231.0")
    paths = {INSTALL_PREFIX: str(ROOT), ETC: str(etc)}
    data_dirs = {
        installed_service(network, host, "chatapp.service", paths, tmp_path).environment()["CHATAPP_DATA_DIR"]
        for host in ("app1", "app2")
    }
    assert data_dirs == {str(tmp_path / "app1" / "var-lib" / "chatapp"), str(tmp_path / "app2" / "var-lib" / "chatapp")}


def test_the_harness_knows_every_directive_the_services_use() -> None:
    """Each directive is either carried out by the harness or knowingly left to systemd, so a unit cannot
    change how the app runs without the multi-host tests following."""
    for path in UNITS:
        if path.suffix == ".service":
            assert Unit.read(path).keys() - CARRIED_OUT - LEFT_TO_SYSTEMD == set(), path.name


def test_exec_lines_expand_variables_as_systemd_does() -> None:
    env = {"PORT": "8000", "ARGS": "--a  --b"}
    assert exec_argv("-/bin/x --port=${PORT} $ARGS '${PORT} x' 100%%", env) == (
        "-",
        ["/bin/x", "--port=8000", "--a", "--b", "8000 x", "100%"],
    )


def test_the_env_template_reads_the_same_in_systemd_sh_and_the_app(tmp_path: Path) -> None:
    """One file, three readers: systemd's EnvironmentFile=, `sh` (render-nginx, the backup scripts) and the
    app's own .env reader must all see the same values, and the app must accept them in production."""
    template = DEPLOY / "chatapp.env.example"
    by_systemd = read_env_file(template)
    by_dotenv = {key: value or "" for key, value in dotenv_values(template).items()}
    shell = subprocess.run(
        ["sh", "-c", 'set -a; . "$0"; set +a; env -0', str(template)],
        capture_output=True,
        env={"PATH": SYSTEMD_PATH},
        check=True,
    ).stdout.decode()
    by_sh = dict(entry.split("=", 1) for entry in shell.split("\0") if entry)
    assert by_dotenv == by_systemd
    assert {key: by_sh[key] for key in by_systemd} == by_systemd
    assert by_systemd["NGINX_APP_SERVERS"] == "10.0.0.11:8000 10.0.0.12:8000"
    settings = Settings.from_env(by_systemd)
    assert (settings.production, settings.channels, settings.secure_cookies) == (True, "postgres", True)


@needs_tools
def test_render_nginx_fills_every_placeholder_and_nginx_accepts_the_site(tmp_path: Path) -> None:
    cert, key = self_signed_certificate(tmp_path)
    env = tmp_path / "chatapp.env"
    values = {"NGINX_CERTIFICATE": str(cert), "NGINX_CERTIFICATE_KEY": str(key)}
    write_env_file(DEPLOY / "chatapp.env.example", env, values)
    site = run(str(DEPLOY / "bin" / "render-nginx"), str(env)).stdout
    assert "${" not in site.split("\n", 8)[-1]  # past the header comment, nothing left unfilled
    assert "server 10.0.0.12:8000 max_fails=2 fail_timeout=10s;" in site
    assert "listen 443 ssl http2;" in site
    assert "return 301 https://chat.example.com$request_uri;" in site  # nginx's own variables are kept
    (tmp_path / "site.conf").write_text(site)
    main = tmp_path / "nginx.conf"
    main.write_text(f"pid {tmp_path}/nginx.pid;\nevents {{}}\nhttp {{ include {tmp_path}/site.conf; }}\n")
    result = run("nginx", "-t", "-c", str(main), "-e", str(tmp_path / "error.log"), check=False)
    assert result.returncode == 0, result.stderr
    assert "syntax is ok" in result.stderr


@needs_tools
def test_render_nginx_refuses_an_env_file_missing_a_setting(tmp_path: Path) -> None:
    env = tmp_path / "chatapp.env"
    env.write_text((DEPLOY / "chatapp.env.example").read_text().replace("NGINX_CERTIFICATE_KEY=", "#"))
    result = run(str(DEPLOY / "bin" / "render-nginx"), str(env), check=False)
    assert result.returncode == 2
    assert result.stdout == ""
    assert f"NGINX_CERTIFICATE_KEY is not set in {env}" in result.stderr


@needs_tools
def test_a_killed_run_is_swept_away_by_the_next_one() -> None:
    """A test run killed outright (no teardown) leaves namespaces, a bridge, processes and a folder; the next
    run removes them all, and leaves alone a run whose owner is still alive."""
    gone_owner = str(_finished_pid())
    networks = []
    for owner in (gone_owner, str(os.getpid())):
        network = Network.create(os.urandom(2).hex())
        network.add_host("app1", 11)
        folder = Path(tempfile.gettempdir()) / f"{RUN_PREFIX}{network.run_id}"
        folder.mkdir()
        (folder / "owner").write_text(owner)
        sleeper = subprocess.Popen([*network.in_host("app1"), "sleep", "300", folder.name])
        networks.append((network, folder, sleeper))
    try:
        (stale, stale_folder, stale_sleeper), (live, live_folder, _) = networks
        assert stale.run_id in sweep_stale_runs()
        assert stale_sleeper.wait(10) != 0
        assert leftovers(stale.run_id) == []
        assert not stale_folder.exists()
        assert live_folder.exists()
        assert live.namespace("app1") in leftovers(live.run_id)  # untouched, with its process
    finally:
        for network, folder, sleeper in networks:
            network.destroy()
            sleeper.wait(10)
            subprocess.run(["rm", "-rf", str(folder)], check=True)
    assert leftovers(networks[1][0].run_id) == []


def _finished_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid
