"""State you can trust: a damaged state.db gives a clear error from every command and is
repaired from its backup (or rebuilt from what is installed); an installed version changed in
place is found and installed again."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys

import pytest
from deploy_fixtures import World, free_port, run_cli

from pyengine import deploy as dp
from pyengine.deploy import doctor
from pyengine.deploy.state import BACKUP_FILE


@pytest.fixture
def world(tmp_path) -> World:
    w = World(tmp_path)
    d = dp.deploy(w.group(), w.root)
    assert d.status == "Success"
    return w


def _truncate_to_zero(path: str) -> None:
    with open(path, "r+b") as f:
        f.truncate(0)


def _truncate_half(path: str) -> None:
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size // 2)


def _garbage(path: str) -> None:
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.write(os.urandom(size))


DAMAGE = {"empty": _truncate_to_zero, "half": _truncate_half, "garbage": _garbage}


def _damage(world: World, how: str) -> None:
    db = os.path.join(world.root, "state.db")
    # Everything in the database file itself (the WAL checkpointed and removed, as after a
    # clean close), so the damage hits the data.
    con = sqlite3.connect(db)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    for side in ("state.db-wal", "state.db-shm"):
        if os.path.exists(os.path.join(world.root, side)):
            os.unlink(os.path.join(world.root, side))
    DAMAGE[how](db)


def test_a_backup_is_taken_after_each_deployment(world):
    backup = os.path.join(world.root, BACKUP_FILE)
    assert stat.S_IMODE(os.stat(backup).st_mode) == 0o600
    con = sqlite3.connect(f"file:{backup}?mode=ro", uri=True)
    ids = [r[0] for r in con.execute("SELECT id FROM deployments WHERE status='Success'")]
    con.close()
    assert ids == [1]
    world.set_pkg("alpha", "v2")
    assert dp.deploy(world.group(), world.root).status == "Success"
    con = sqlite3.connect(f"file:{backup}?mode=ro", uri=True)
    assert [r[0] for r in con.execute("SELECT id FROM deployments")] == [1, 2]
    con.close()


@pytest.mark.parametrize("how", sorted(DAMAGE))
def test_every_command_names_the_repair_for_a_damaged_state(world, how):
    _damage(world, how)
    commands = [("deployments", "list"), ("deploy", world.group())]
    if how == "half":  # every command once (each is a process start: a second apiece)
        commands += [("deployments", "show"), ("resources", "list"), ("reset",), ("rollback",)]
    for args in commands:
        r = run_cli(*args, "--root", world.root)
        assert r.returncode != 0, (args, r.stdout)
        assert "Traceback" not in r.stderr, (args, r.stderr)
        assert "pyengine doctor --repair" in r.stderr, (args, r.stderr)
    r = run_cli("doctor", "--root", world.root)
    assert r.returncode == 1 and "NOT healthy" in r.stdout and "Traceback" not in r.stderr
    # The library says the same (the core reads the deployed group through it).
    with pytest.raises(dp.DeployError, match="doctor --repair"):
        dp.current(world.root)


def test_core_start_on_a_damaged_state_exits_with_the_repair(world):
    _damage(world, "garbage")
    proc = subprocess.run(
        [sys.executable, "-m", "pyengine", "core", "start", "--root", world.root,
         "--port", str(free_port())],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr and "doctor --repair" in proc.stderr, proc.stderr


@pytest.mark.parametrize("how", sorted(DAMAGE))
def test_repair_restores_the_backup(world, how):
    before = dp.current(world.root)
    _damage(world, how)
    r = run_cli("doctor", "--repair", "--root", world.root)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "restored" in r.stdout and "healthy" in r.stdout
    after = dp.current(world.root)
    assert after is not None and after.group == before.group
    assert after.functions["classify"].environment == {"MODE": "test"}
    d = dp.deploy(world.group(), world.root)
    assert d.status == "Success"
    assert {i.key: i.outcome for i in d.items} == {
        "alpha": "unchanged", "beta": "unchanged", "null": "verified", "classify": "unchanged"}
    damaged = [n for n in os.listdir(world.root) if n.startswith("state.db.damaged-")]
    assert damaged, "the damaged database is kept aside"


def test_repair_points_destinations_back_after_a_later_killed_deploy(world):
    backup = os.path.join(world.root, BACKUP_FILE)
    with open(backup, "rb") as f:
        kept = f.read()
    world.set_pkg("alpha", "v2")
    assert dp.deploy(world.group(), world.root).status == "Success"
    with open(backup, "wb") as f:  # as if the copy after deployment 2 had not been made
        f.write(kept)
    assert world.tag("alpha") == "v2"
    _damage(world, "garbage")
    report = doctor.repair(world.root)
    assert report.healthy, report.findings
    # The backup records version 1 as installed; it is kept (the previous group's) and
    # the destination points at it again, as the restored state says.
    assert world.tag("alpha") == "v1"
    assert any("pointed" in line for line in report.repaired)
    assert dp.deploy(world.group(), world.root).status == "Success"
    assert world.tag("alpha") == "v2"


def test_repair_without_a_backup_rebuilds_what_is_installed(tmp_path):
    w = World(tmp_path)
    group = w.group(keys=("alpha",))
    assert dp.deploy(group, w.root).status == "Success"
    os.unlink(os.path.join(w.root, BACKUP_FILE))
    _damage(w, "half")
    report = doctor.repair(w.root)
    text = "\n".join(report.repaired)
    assert "rebuilt the state" in text and report.healthy, (text, report.findings)
    d = dp.deploy(group, w.root)
    assert d.status == "Success", d
    outcomes = {i.key: i.outcome for i in d.items}
    assert outcomes["classify"] == "unchanged"
    assert w.tag("alpha") == "v1"


def test_repair_of_garbage_without_a_backup_says_what_is_lost(tmp_path):
    w = World(tmp_path)
    assert dp.deploy(w.group(keys=("alpha",)), w.root).status == "Success"
    os.unlink(os.path.join(w.root, BACKUP_FILE))
    _damage(w, "garbage")
    report = doctor.repair(w.root)
    text = "\n".join(report.repaired)
    assert "no row of the damaged database was readable" in text
    assert "recorded function 'classify'" in text and "not recoverable" in text
    assert dp.current(w.root) is None  # no group to serve until it is deployed again
    assert run_cli("deployments", "list", "--root", w.root).returncode == 0


def test_a_sound_state_is_left_alone(world):
    report = doctor.repair(world.root)
    assert report.healthy and report.repaired == []
    r = run_cli("doctor", "--root", world.root)
    assert r.returncode == 0 and "as installed (content digest matches)" in r.stdout


def test_a_destination_moved_by_hand_is_reported_and_pointed_back(world):
    installed = dp.current(world.root).resources["alpha"].version_path
    dest = world.dest["alpha"]
    os.unlink(dest)
    os.symlink(os.path.realpath(world.dest["beta"]), dest)
    report = doctor.check(world.root)
    assert not report.healthy
    assert any("does not point to it" in f.what for f in report.findings)
    report = doctor.repair(world.root)
    assert report.healthy and report.repaired == [f"pointed {dest} back at {installed}"]
    assert world.tag("alpha") == "v1"


def test_a_model_changed_in_place_is_found_and_installed_again(world):
    version_path = os.path.realpath(world.dest["alpha"])
    with open(os.path.join(version_path, "w.bin"), "r+b") as f:
        f.write(b"\0corrupt")
    r = run_cli("doctor", "--root", world.root)
    assert r.returncode == 1 and "model 'alpha'" in r.stdout and "changed in place" in r.stdout
    # What the core logs at start.
    changed = dp.changed_versions(world.root)
    assert len(changed) == 1 and changed[0].startswith("model 'alpha' version v1-")
    d = dp.deploy(world.group(), world.root)
    alpha = next(i for i in d.items if i.key == "alpha")
    assert alpha.outcome == "installed" and "content digest" in alpha.message
    assert os.path.realpath(world.dest["alpha"]) != version_path
    world.tag("alpha")  # every file complete again
    assert run_cli("doctor", "--root", world.root).returncode == 0
    assert dp.changed_versions(world.root) == []


def test_function_code_changed_in_place_is_installed_again(world):
    current = dp.current(world.root)
    code = current.functions["classify"].code_dir
    with open(os.path.join(code, "classify.py"), "a") as f:
        f.write("\nimport os\n")
    # Python's own bytecode cache beside the code is not a change.
    os.makedirs(os.path.join(code, "__pycache__"), exist_ok=True)
    d = dp.deploy(world.group(), world.root)
    fn = next(i for i in d.items if i.key == "classify")
    assert fn.outcome == "installed" and "changed after it was installed" in fn.message
    again = dp.deploy(world.group(), world.root)
    assert next(i for i in again.items if i.key == "classify").outcome == "unchanged"


def test_a_chmod_back_and_forth_is_not_a_change(world):
    version_path = os.path.realpath(world.dest["beta"])
    p = os.path.join(version_path, "tag")
    mode = os.stat(p).st_mode
    os.chmod(p, 0o600)
    os.chmod(p, stat.S_IMODE(mode))
    d = dp.deploy(world.group(), world.root)
    assert next(i for i in d.items if i.key == "beta").outcome == "unchanged"
