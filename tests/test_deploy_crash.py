"""kill -9 at random instants during deploys (real subprocesses): every destination always holds
one complete version, leftovers are cleaned by the next deploy or by core start (current()), and a
final redeploy succeeds."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time

from deploy_fixtures import check_complete, write_group, write_package

from pyengine import deploy as dp

KEYS = ("a", "b", "c")


def _status(root: str) -> tuple[int, str]:
    """(id, status) of the newest deployment, read without taking the deploy lock."""
    try:
        db = sqlite3.connect(f"file:{os.path.join(root, 'state.db')}?mode=ro", uri=True, timeout=1)
        try:
            row = db.execute(
                "SELECT id, status FROM deployments ORDER BY id DESC LIMIT 1"
            ).fetchone()
        finally:
            db.close()
    except sqlite3.Error:
        return (0, "")
    return (int(row[0]), str(row[1])) if row else (0, "")


def test_kill_9_during_deploys(tmp_path):
    rng = random.Random(int(os.environ.get("PYENGINE_CRASH_SEED", "5")))
    root = str(tmp_path / "root")
    dests = {k: str(tmp_path / "models" / k) for k in KEYS}
    pkgs = {k: str(tmp_path / f"{k}.tar.gz") for k in KEYS}
    code = tmp_path / "fn"
    code.mkdir()

    def publish(tag: int) -> None:
        for k in KEYS:
            write_package(
                pkgs[k],
                {
                    "tag": str(tag).encode(),
                    "w.bin": rng.randbytes(400_000),
                    **{f"f{i}": rng.randbytes(2000) for i in range(20)},
                },
            )
        (code / "handler.py").write_text(
            f"TAG = {tag}\n\ndef handle(event, context):\n    return TAG\n"
        )

    group = write_group(
        str(tmp_path / "group.json"),
        {
            "name": "crash",
            "resources": [
                {"id": k, "model": {"source": pkgs[k], "destination": dests[k]}} for k in KEYS
            ],
            "functions": [{"name": "fn", "handler": "handler.handle", "code": str(code)}],
        },
    )
    cmd = [sys.executable, "-m", "pyengine", "deploy", group, "--root", root, "-q", "--wait", "30"]

    def tags() -> dict[str, int]:
        out = {}
        for k in KEYS:
            check_complete(dests[k])
            with open(os.path.join(dests[k], "tag")) as f:
                out[k] = int(f.read())
        with open(os.path.join(root, "functions", "fn", "current", "handler.py")) as f:
            out["fn"] = int(f.read().split("\n")[0].split("=")[1])
        return out

    publish(0)
    t0 = time.monotonic()
    subprocess.run(cmd, check=True, capture_output=True, timeout=60)
    wall = time.monotonic() - t0
    assert tags() == {"a": 0, "b": 0, "c": 0, "fn": 0}

    kills = 0
    for i in range(1, 25):
        publish(i)
        before = _status(root)[0]
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if i % 2:
            time.sleep(rng.uniform(0.15 * wall, 1.1 * wall))  # any instant, startup included
        else:
            # Aim at the work itself: wait until this deployment is InProgress (fetching,
            # unpacking, switching), then kill within the next moments.
            deadline = time.monotonic() + 30
            while p.poll() is None and time.monotonic() < deadline:
                dep, status = _status(root)
                if dep > before and status == "InProgress":
                    break
                time.sleep(0.002)
            time.sleep(rng.uniform(0.0, 0.3 * wall))
        if p.poll() is None:
            os.kill(p.pid, signal.SIGKILL)
            kills += 1
        p.wait(30)
        # Every destination names one complete version: the old one or the new one.
        now = tags()
        assert all(0 <= v <= i for v in now.values()), now
        if i % 2:
            # A core starting now cleans up: no staging directory or unregistered version is left.
            cur = dp.current(root)
            assert cur is not None
            # the interrupted deployment was rolled back: one group, all old or all new
            assert len(set(tags().values())) == 1, tags()
            assert all(os.path.realpath(dests[k]) == cur.resources[k].version_path for k in KEYS)
            for k in KEYS:
                store = os.path.join(str(tmp_path / "models"), f".{k}.pyengine")
                assert not [n for n in os.listdir(store) if n.startswith(("staging-", ".link-"))]
    assert kills >= 12, f"only {kills} of 24 deploys were killed; the kill window is too late"

    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert tags() == {"a": 24, "b": 24, "c": 24, "fn": 24}
    deps = dp.list_deployments(root)
    assert deps[0].status == "Success"
    assert all(d.status in ("Success", "Failure") for d in deps)
    interrupted = [d for d in deps if d.message and "interrupted" in d.message]
    assert len(interrupted) >= 3, f"only {len(interrupted)} deployments were interrupted mid-way"
    print(f"{kills} kills, {len(interrupted)} interrupted deployments, {len(deps)} in all")
    # At most the installed and the previous version are kept per resource; nothing else is left.
    for k in KEYS:
        store = os.path.join(str(tmp_path / "models"), f".{k}.pyengine")
        left = os.listdir(store)
        assert all(n.startswith("v") for n in left) and 1 <= len(left) <= 2, left
    assert os.listdir(os.path.join(root, "downloads")) == []
