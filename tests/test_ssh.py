"""Jetson boards over SSH, end to end: a real sshd on 127.0.0.1 per board (tests/boards.py),
paramiko, SFTP, the real `farm` command and real Ray. Only the Jetson-only tools are fakes
(tests/fakes: tegrastats, nvpmodel, jetson_clocks), printing what the real ones print.
"""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from boards import keygen
from conftest import QUICK
from farm.errors import DeviceError

FARM = str(Path(sys.executable).parent / "farm")


def _farm(*args, timeout=300):
    return subprocess.run([FARM, *args], capture_output=True, text=True, timeout=timeout)


def _rows(db_url, sql="select * from v_results order by model, variant, batch_size"):
    with sqlite3.connect(db_url.removeprefix("sqlite:///")) as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute(sql)]


def _rows_now(db_url, sql):
    """Rows, or none yet while the submit that creates the database is starting."""
    try:
        return _rows(db_url, sql)
    except sqlite3.OperationalError:
        return []


def _host_fingerprint(board) -> str:
    listed = subprocess.run(["ssh-keygen", "-l", "-f", f"{board.host_key}.pub"],
                            capture_output=True, text=True, check=True).stdout
    return listed.split()[1]


def test_two_boards_untrusted_then_trusted_measure_power_and_reuse_the_agent(
        boards, write_yaml, db_url, tmp_path, jetson_python):
    first, second = boards(2, envs=[{"FAKE_POM_5V_IN": "4000"}, {"FAKE_POM_5V_IN": "6500"}])
    known_hosts = tmp_path / "known_hosts"
    inventory = write_yaml("inventory.yaml", {"devices": [
        dict(first.inventory_entry(known_hosts, sys.executable), tags=["nano"]),
        dict(second.inventory_entry(known_hosts, jetson_python), tags=["nano"])]})
    sweep = {"name": "boards", "devices": ["nano"], "models": ["bert-tiny", "bert-mini"],
             "variants": ["fp32"], "batch_sizes": [1, 2], "seq_lens": [32],
             "measure": dict(QUICK, min_seconds=0.5)}
    sweep_file = write_yaml("sweep.yaml", sweep)

    # Unknown host keys: refused with the fingerprint and the hint; nothing runs or is written.
    refused = _farm("submit", str(sweep_file), "-i", str(inventory), "--db", db_url)
    assert refused.returncode == 3, refused.stdout + refused.stderr
    assert "nothing was run or written" in refused.stderr
    for board in (first, second):  # each board's own line: fingerprint and what to run
        assert f"device {board.name} not used" in refused.stdout
        assert _host_fingerprint(board) in refused.stdout
        assert f"farm devices trust {board.name}" in refused.stdout
    assert _rows(db_url, "select * from jobs") == []
    assert first.agent_pids() == [] and not first.workdir.exists()

    for board in (first, second):
        shown = _farm("devices", "trust", board.name, "--yes", "-i", str(inventory))
        assert shown.returncode == 0, shown.stderr
        assert _host_fingerprint(board) in shown.stdout and "pinned" in shown.stdout
    again = _farm("devices", "trust", first.name, "--yes", "-i", str(inventory))
    assert "already trusted" in again.stdout

    ran = _farm("submit", str(sweep_file), "-i", str(inventory), "--db", db_url)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    rows = _rows(db_url)
    assert len(rows) == 4 and {r["status"] for r in rows} == {"done"}
    assert {r["device"] for r in rows} == {first.name, second.name}
    power = {first.name: 4000, second.name: 6500}
    for row in rows:
        env = json.loads(_rows(db_url, f"select env_json from results r join jobs j on "
                                       f"j.id = r.job_id where j.key = '{row['job_key']}'")[0]
                         ["env_json"])
        board = first if row["device"] == first.name else second
        assert env["kind"] == "jetson" and env["ssh"].endswith(f":{board.port}")
        assert env["agent_dir"].startswith(str(board.workdir))
        assert env["power_mode"] == "MAXN" and env["clocks_locked"] is False
        if board is second:  # the board's own interpreter and libraries, not the controller's
            assert (env["python"], env["torch"].split("+")[0], env["transformers"]) == \
                ("3.6.15", "1.10.2", "4.18.0")
        else:
            assert env["python"] == "%d.%d.%d" % sys.version_info[:3]
        # Energy per sample is the board power tegrastats reported times the time per sample.
        assert row["energy_source"] == "tegrastats:POM_5V_IN"
        assert row["avg_power_mw"] == power[row["device"]]
        samples = row["iters"] * row["batch_size"]
        assert row["energy_mj"] == pytest.approx(row["avg_power_mw"] * row["window_s"] / samples,
                                                 rel=1e-9)
        assert row["board_ram_peak_mb"] == 1200
    uploads = {b.name: sorted(p.name for p in b.workdir.iterdir()) for b in (first, second)}
    stamp = {b.name: (b.workdir / uploads[b.name][0] / "COMPLETE").stat().st_mtime_ns
             for b in (first, second)}

    # A second sweep on the same boards runs new jobs with the agent already there.
    sweep["name"], sweep["batch_sizes"] = "boards-2", [4]
    ran = _farm("submit", str(write_yaml("sweep2.yaml", sweep)), "-i", str(inventory),
                "--db", db_url)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    for board in (first, second):
        assert sorted(p.name for p in board.workdir.iterdir()) == uploads[board.name]
        assert (board.workdir / uploads[board.name][0] / "COMPLETE").stat().st_mtime_ns == \
            stamp[board.name]
    envs = [json.loads(r["env_json"]) for r in _rows(
        db_url, "select env_json from results r join jobs j on j.id = r.job_id "
                "join sweeps s on s.id = j.sweep_id where s.name = 'boards-2'")]
    assert len(envs) == 2 and {e["agent_upload"] for e in envs} == {"reused"}
    for board in (first, second):
        assert board.agent_pids() == []  # agents end with the sweep


def test_changed_host_key_is_refused(boards, write_yaml, tmp_path):
    from farm.devices import ssh
    from farm.errors import HostKeyRefused
    from farm.inventory import load_inventory

    board, = boards(1)
    known_hosts = tmp_path / "known_hosts"
    inventory = write_yaml("inventory.yaml", {"devices": [
        board.inventory_entry(known_hosts, sys.executable)]})
    assert _farm("devices", "trust", board.name, "-y", "-i", str(inventory)).returncode == 0
    device = load_inventory(inventory).devices[0]
    ssh.connect(device).close()

    board.stop()  # the board comes back reinstalled, with a new host key
    board.host_key.unlink()
    Path(f"{board.host_key}.pub").unlink()
    keygen(board.host_key)
    board.start()
    with pytest.raises(HostKeyRefused, match="HOST KEY CHANGED"):
        ssh.connect(device)
    shown = subprocess.run([FARM, "devices", "trust", board.name, "-i", str(inventory)],
                           input="n\n", capture_output=True, text=True, timeout=60)
    assert shown.returncode == 1 and "CHANGED" in shown.stderr
    assert _host_fingerprint(board) in shown.stdout
    with pytest.raises(HostKeyRefused):
        ssh.connect(device)  # a "no" pinned nothing


def test_board_cgroup_ooms_a_large_model_and_goes_on(boards, cgroups, write_yaml, db_url,
                                                      tmp_path):
    board, = boards(1)
    known_hosts = tmp_path / "known_hosts"
    inventory = write_yaml("inventory.yaml", {"devices": [
        board.inventory_entry(known_hosts, sys.executable, memory="512MiB", cpus=1)]})
    assert _farm("devices", "trust", board.name, "-y", "-i", str(inventory)).returncode == 0
    sweep = write_yaml("sweep.yaml", {
        "name": "oom", "models": ["bert-large", "bert-tiny"], "batch_sizes": [1],
        "seq_lens": [32], "measure": QUICK})
    ran = _farm("submit", str(sweep), "-i", str(inventory), "--db", db_url)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    rows = {r["model"]: r for r in _rows(db_url)}
    assert rows["bert-large"]["status"] == "oom", rows["bert-large"]["error"]
    assert "512 MiB limit" in rows["bert-large"]["error"]
    assert rows["bert-large"]["memory_limit_mb"] == 512 and rows["bert-large"]["failure"] == "job"
    assert rows["bert-tiny"]["status"] == "done" and rows["bert-tiny"]["memory_limit_mb"] == 512
    assert 0 < rows["bert-tiny"]["container_peak_mb"] <= 512
    assert not list(Path("/sys/fs/cgroup/memory").rglob(f"farm/{board.name}"))


def test_killing_the_remote_agent_is_an_infrastructure_failure(boards, write_yaml, db_url,
                                                               tmp_path):
    board, = boards(1)
    known_hosts = tmp_path / "known_hosts"
    inventory = write_yaml("inventory.yaml", {"devices": [
        board.inventory_entry(known_hosts, sys.executable)]})
    assert _farm("devices", "trust", board.name, "-y", "-i", str(inventory)).returncode == 0
    sweep = write_yaml("sweep.yaml", {
        "name": "killed", "models": ["bert-tiny"], "retries": 0,  # the attempt is the job's end
        "batch_sizes": [1, 2], "seq_lens": [32], "measure": dict(QUICK, min_seconds=60)})
    submit = subprocess.Popen([FARM, "submit", str(sweep), "-i", str(inventory), "--db", db_url],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            timing = [r for r in _rows_now(db_url, "select phase from jobs")
                      if r["phase"] == "timing"]
            if timing and board.agent_pids():
                break
            time.sleep(0.2)
        else:
            pytest.fail("no job reached its timed window on the board")
        busy = _farm("devices", "-i", str(inventory), "--db", db_url)
        assert "busy" in busy.stdout and "bert-tiny" in busy.stdout
        pid, = board.agent_pids()
        os.kill(pid, signal.SIGKILL)
        killed_at = time.time()
        while time.monotonic() < deadline:
            failed = _rows_now(db_url, "select * from jobs where status = 'failed'")
            if failed:
                break
            time.sleep(0.1)
        noticed = time.time() - killed_at
    finally:
        submit.send_signal(signal.SIGINT)
        out, err = submit.communicate(timeout=60)
    job, = failed
    assert noticed < 10, f"took {noticed:.1f} s to notice"
    assert job["failure"] == "infra" and "SIGKILL" in job["error"], job["error"]
    assert "from outside farm" in job["error"]
    table = _farm("devices", "-i", str(inventory), "--db", db_url)
    assert board.name in table.stdout and "SIGKILL" in table.stdout


def test_locked_clocks_required_and_devices_check(boards, write_yaml, db_url, tmp_path):
    locked, scaling = boards(2, envs=[{"FAKE_JETSON_CLOCKS": "locked"}, {}])
    known_hosts = tmp_path / "known_hosts"
    inventory = write_yaml("inventory.yaml", {"devices": [
        dict(b.inventory_entry(known_hosts, sys.executable), tags=["nano"])
        for b in (locked, scaling)]})
    for board in (locked, scaling):
        assert _farm("devices", "trust", board.name, "-y", "-i", str(inventory)).returncode == 0

    check = _farm("devices", "check", "-i", str(inventory))
    assert check.returncode == 0, check.stdout + check.stderr
    for text in ("MAXN (nvpmodel mode 0)", "locked (jetson_clocks)", "not locked",
                 "tegrastats", "transformers", _host_fingerprint(locked)):
        assert text in check.stdout, text

    sweep = write_yaml("sweep.yaml", {
        "name": "locked", "devices": ["nano"], "models": ["bert-tiny"], "batch_sizes": [1, 2],
        "seq_lens": [16], "measure": QUICK, "require_locked_clocks": True})
    ran = _farm("submit", str(sweep), "-i", str(inventory), "--db", db_url)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert f"device {scaling.name} not used" in ran.stdout and "are not locked" in ran.stdout
    rows = _rows(db_url)
    assert {r["device"] for r in rows} == {locked.name} and {r["status"] for r in rows} == {"done"}
    table = _farm("devices", "-i", str(inventory), "--db", db_url)
    assert "error" in table.stdout and "require_locked_clocks" in table.stdout


def test_pinning_replaces_only_that_boards_entries(tmp_path):
    import paramiko

    from farm.devices import ssh

    old, new, other = (paramiko.Ed25519Key.from_private_key_file(str(keygen(tmp_path / name)))
                       for name in ("old", "new", "other"))
    known = tmp_path / "known_hosts"
    hashed = paramiko.HostKeys.hash_host("[10.0.0.5]:2222")
    known.write_text(f"# lab boards\n{hashed} {old.get_name()} {old.get_base64()}\n"
                     f"10.0.0.6 {other.get_name()} {other.get_base64()}\n")
    target = ssh.Target("nano-01", "10.0.0.5", 2222, "farm", (), known, 5)
    assert ssh.fingerprint(ssh.pinned_key(target)) == ssh.fingerprint(old)
    ssh.pin(target, new)
    assert ssh.fingerprint(ssh.pinned_key(target)) == ssh.fingerprint(new)
    text = known.read_text()
    assert "# lab boards" in text and hashed not in text and other.get_base64() in text
    assert oct(known.stat().st_mode & 0o777) == "0o600"
    listed = subprocess.run(["ssh-keygen", "-l", "-f", str(tmp_path / "new.pub")],
                            capture_output=True, text=True, check=True).stdout
    assert listed.split()[1] == ssh.fingerprint(new)  # OpenSSH's own fingerprint


def test_ssh_config_alias_and_the_ssh_agent_are_used(boards, write_yaml, tmp_path, monkeypatch):
    """A board named by its ~/.ssh/config alias, logged into with a key held only by a real
    ssh-agent (the inventory names no key)."""
    from farm.devices import ssh
    from farm.inventory import load_inventory

    board, = boards(1)
    config = tmp_path / "ssh_config"
    config.write_text(f"Host lab-nano\n  HostName 127.0.0.1\n  Port {board.port}\n"
                      f"  User {os.environ.get('USER') or 'root'}\n")
    monkeypatch.setattr(ssh, "SSH_CONFIG", config)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ssh/id_* to fall back on
    agent = subprocess.run(["ssh-agent", "-s", "-a", str(tmp_path / "agent.sock")],
                           capture_output=True, text=True, check=True).stdout
    agent_pid = int(agent.split("SSH_AGENT_PID=")[1].split(";")[0])
    try:
        monkeypatch.setenv("SSH_AUTH_SOCK", str(tmp_path / "agent.sock"))
        subprocess.run(["ssh-add", "-q", str(board.client_key)], check=True,
                       env=dict(os.environ, SSH_AUTH_SOCK=str(tmp_path / "agent.sock")))
        known_hosts = tmp_path / "known_hosts"
        inventory = write_yaml("inventory.yaml", {"devices": [{
            "name": board.name, "kind": "jetson", "host": "lab-nano",
            "known_hosts": str(known_hosts), "workdir": str(board.workdir)}]})
        device = load_inventory(inventory).devices[0]
        target = ssh.resolve(device)
        assert (target.hostname, target.port, target.key_files) == ("127.0.0.1", board.port, ())
        ssh.pin(target, ssh.fetch_host_key(target))
        connected = ssh.connect(device)
        try:
            assert connected.run("echo $FAKE_POM_5V_IN; command -v tegrastats")[0] == 0
        finally:
            connected.close()
        subprocess.run(["ssh-add", "-D", "-q"], check=True,
                       env=dict(os.environ, SSH_AUTH_SOCK=str(tmp_path / "agent.sock")))
        with pytest.raises(DeviceError, match="authentication"):
            ssh.connect(device)  # the agent holds no key any more: refused, clearly
    finally:
        os.kill(agent_pid, signal.SIGTERM)
