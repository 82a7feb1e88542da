"""A tenant's attacks on deploy (issue 16): a function's code is copied, never followed (links,
FIFOs, devices), destinations are checked by their real path at validation and again at
install, and the root's state keeps its secrets (state.db 0600, environments out of it).

Every test here failed on the main before this change (links were followed and copied 0644, a
FIFO hung the deploy with the lock held, destinations were checked lexically)."""

from __future__ import annotations

import os
import stat
import threading

import pytest
from deploy_fixtures import run_cli, write_group, write_package

from pyengine import deploy as dp
from pyengine.deploy.tree import copy_tree, tree_digest
from pyengine.fleet.publish import code_package

HANDLER = "def function_handler(event, context):\n    return 'ok'\n"


class Tenant:
    """A group with one model and one function whose code directory the tenant controls."""

    def __init__(self, tmp_path) -> None:
        self.tmp = tmp_path
        self.root = str(tmp_path / "root")
        self.code = tmp_path / "code"
        self.code.mkdir()
        (self.code / "fn.py").write_text(HANDLER)
        self.secret = tmp_path / "secret.txt"  # stands in for /etc/shadow
        self.secret.write_bytes(b"root:$6$not-for-tenants\n")
        os.chmod(self.secret, 0o600)
        self.pkg = write_package(str(tmp_path / "m.tar.gz"), {"w.bin": b"weights"})
        self.models = tmp_path / "models"

    def group(self, dest: str = "", **fn_extra: object) -> str:
        return write_group(
            str(self.tmp / "group.json"),
            {
                "name": "tenant",
                "resources": [
                    {
                        "id": "m",
                        "model": {
                            "source": self.pkg,
                            "destination": dest or str(self.models / "m"),
                        },
                    }
                ],
                "functions": [
                    {
                        "name": "fn",
                        "handler": "fn.function_handler",
                        "code": str(self.code),
                        "resources": [{"id": "m"}],
                        **fn_extra,
                    }
                ],
            },
        )

    def fn_item(self, d: dp.Deployment) -> dp.ItemResult:
        return next(i for i in d.items if i.kind == "function")

    def versions(self) -> list[str]:
        store = os.path.join(self.root, "functions", "fn")
        return sorted(os.listdir(store)) if os.path.isdir(store) else []

    def files_holding(self, needle: bytes) -> list[str]:
        """Every regular file under the root whose bytes contain ``needle``."""
        found = []
        for dirpath, _, names in os.walk(self.root):
            for n in names:
                p = os.path.join(dirpath, n)
                if os.path.isfile(p) and not os.path.islink(p):
                    with open(p, "rb") as f:
                        if needle in f.read():
                            found.append(p)
        return found


@pytest.fixture
def tenant(tmp_path) -> Tenant:
    return Tenant(tmp_path)


# ----------------------------------------------------------------------------------- code


@pytest.mark.parametrize(
    "plant",
    ["file-link", "etc-shadow-link", "dev-zero-link", "dir-link-to-dev", "dir-link-outside"],
)
def test_links_in_code_are_refused_and_nothing_is_copied(tenant, plant):
    first = dp.deploy(tenant.group(), tenant.root)
    assert first.status == "Success"
    before = tenant.versions()
    sub = tenant.code / "lib"
    sub.mkdir()
    target, name = {
        "file-link": (str(tenant.secret), "lib/stolen.txt"),
        "etc-shadow-link": ("/etc/shadow", "lib/shadow"),
        "dev-zero-link": ("/dev/zero", "lib/zero"),
        "dir-link-to-dev": ("/dev", "lib/devdir"),
        "dir-link-outside": (str(tenant.tmp), "lib/up"),
    }[plant]
    os.symlink(target, tenant.code / name)
    d = dp.deploy(tenant.group(), tenant.root)
    it = tenant.fn_item(d)
    assert d.status == "Failure" and it.outcome == "failed"
    assert it.message.startswith(f"functions[0].code ({tenant.code}): ")
    assert f"{name!r} is a symbolic link (to {target!r})" in it.message
    # nothing new was copied, the secret is nowhere under the root, the old version serves
    assert tenant.versions() == before
    assert tenant.files_holding(b"not-for-tenants") == []
    cur = dp.current(tenant.root)
    assert cur is not None and cur.deployment_id == first.id
    os.unlink(tenant.code / name)
    assert dp.deploy(tenant.group(), tenant.root).status == "Success"


@pytest.mark.parametrize("special", ["fifo", "socket"])
def test_special_files_are_refused_at_once_and_the_lock_is_released(tenant, special):
    import socket

    path = tenant.code / "pipe"
    sock = None
    if special == "fifo":
        os.mkfifo(path)
        kind = "a FIFO (named pipe)"
    else:
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(path))
        kind = "a socket"
    try:
        # In its own process: a deploy that opened the FIFO would wait forever (with the lock).
        r = run_cli("deploy", tenant.group(), "--root", tenant.root, timeout=60)
    finally:
        if sock is not None:
            sock.close()
    assert r.returncode != 0
    assert f"functions[0].code ({tenant.code}): 'pipe' is {kind}" in r.stdout + r.stderr
    os.unlink(path)
    d = dp.deploy(tenant.group(), tenant.root)  # the lock was released
    assert d.status == "Success"


def test_device_node_is_refused(tenant):
    if os.geteuid() != 0:
        pytest.skip("making a device node needs root (mknod)")
    os.mknod(tenant.code / "zero", 0o666 | stat.S_IFCHR, os.makedev(1, 5))
    d = dp.deploy(tenant.group(), tenant.root)
    assert d.status == "Failure"
    assert "'zero' is a character device" in tenant.fn_item(d).message


def test_modes_are_kept_but_never_widened(tenant):
    modes = {"run.sh": 0o4775, "private.txt": 0o600, "shared.txt": 0o666, "tool": 0o2751}
    for n, mode in modes.items():
        (tenant.code / n).write_text(n)
        os.chmod(tenant.code / n, mode)
    sub = tenant.code / "sub"
    sub.mkdir()
    (sub / "x.py").write_text("X = 1\n")
    os.chmod(sub, 0o1777)
    d = dp.deploy(tenant.group(), tenant.root)
    assert d.status == "Success", [i.message for i in d.items]
    code = dp.current(tenant.root).functions["fn"].code_dir
    got = {n: stat.S_IMODE(os.stat(os.path.join(code, n)).st_mode) for n in modes}
    assert got == {"run.sh": 0o755, "private.txt": 0o600, "shared.txt": 0o644, "tool": 0o751}
    assert stat.S_IMODE(os.stat(os.path.join(code, "sub")).st_mode) == 0o755
    # a change of mode alone is a new version
    os.chmod(tenant.code / "private.txt", 0o640)
    d2 = dp.deploy(tenant.group(), tenant.root)
    assert tenant.fn_item(d2).outcome == "installed"


def test_code_caps(tenant):
    big = tenant.code / "big.bin"
    with open(big, "wb") as f:
        f.truncate(3 << 20)  # sparse: the size is refused before a byte is read
    d = dp.deploy(tenant.group(max_code_mb=2), tenant.root)
    msg = tenant.fn_item(d).message
    assert d.status == "Failure" and "'big.bin' (3145728 bytes)" in msg and "max_code_mb" in msg
    os.unlink(big)
    for i in range(10):
        (tenant.code / f"f{i}.py").write_text("")
    d = dp.deploy(tenant.group(max_code_files=5), tenant.root)
    msg = tenant.fn_item(d).message
    assert d.status == "Failure" and "more than 5 entries" in msg and "max_code_files" in msg
    assert tenant.versions() == []
    assert dp.deploy(tenant.group(), tenant.root).status == "Success"


def test_swapping_in_a_link_or_fifo_while_copying_never_copies_outside(tmp_path):
    """A thread keeps swapping 'x' between a plain file, a link to the secret and a FIFO while
    the tree is copied: each copy is refused or holds the plain file, never the secret, and
    never waits on the FIFO."""
    src = tmp_path / "src"
    src.mkdir()
    secret = tmp_path / "secret"
    secret.write_bytes(b"SECRET")
    plain, link, fifo = tmp_path / "plain", tmp_path / "link", tmp_path / "fifo"
    stop = threading.Event()

    def swapper() -> None:
        while not stop.is_set():
            for make in ("plain", "link", "fifo"):
                for p in (plain, link, fifo):
                    if os.path.lexists(p):
                        os.unlink(p)
                if make == "plain":
                    plain.write_bytes(b"plain")
                    os.rename(plain, src / "x")
                elif make == "link":
                    os.symlink(secret, link)
                    os.rename(link, src / "x")
                else:
                    os.mkfifo(fifo)
                    os.rename(fifo, src / "x")

    (src / "x").write_bytes(b"plain")
    t = threading.Thread(target=swapper, daemon=True)
    t.start()
    outcomes = {"copied": 0, "refused": 0}
    try:
        for i in range(200):
            dest = tmp_path / f"d{i}"
            dest.mkdir()
            try:
                copy_tree(str(src), str(dest), do_fsync=False)
            except dp.UnpackError as exc:
                assert "'x'" in str(exc), exc
                outcomes["refused"] += 1
                continue
            except FileNotFoundError:
                continue  # 'x' was between unlink and rename
            assert (dest / "x").read_bytes() == b"plain"
            assert not (dest / "x").is_symlink()
            outcomes["copied"] += 1
    finally:
        stop.set()
        t.join(10)
    assert outcomes["refused"] > 0, outcomes


def test_copy_digest_matches_the_planning_digest(tmp_path):
    src = tmp_path / "src"
    (src / "pkg").mkdir(parents=True)
    (src / "pkg" / "__init__.py").write_text("")
    (src / "pkg" / "__pycache__").mkdir()
    (src / "pkg" / "__pycache__" / "x.pyc").write_bytes(b"cache")
    (src / "main.py").write_text(HANDLER)
    dest = tmp_path / "dest"
    dest.mkdir()
    stats, digest = copy_tree(str(src), str(dest), do_fsync=False)
    assert digest == tree_digest(str(src))
    assert stats.files == 2 and not (dest / "pkg" / "__pycache__").exists()


def test_fleet_code_package_refuses_links_and_special_files(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "fn.py").write_text(HANDLER)
    os.chmod(src / "fn.py", 0o4777)
    out = str(tmp_path / "code.tar.gz")
    code_package(str(src), out)
    import tarfile

    with tarfile.open(out) as tf:
        assert [(m.name, m.mode) for m in tf.getmembers()] == [("fn.py", 0o755)]
    os.symlink("/etc/passwd", src / "passwd")
    with pytest.raises(dp.UnpackError, match="'passwd' is a symbolic link"):
        code_package(str(src), out)
    os.unlink(src / "passwd")
    os.mkfifo(src / "pipe")
    with pytest.raises(dp.UnpackError, match="'pipe' is a FIFO"):
        code_package(str(src), out)


# ----------------------------------------------------------------------------------- destinations


class Places:
    """Two models: 'a' installed at models/a, and 'b' whose destination's parent (``parent``)
    the tenant controls and may turn into a symbolic link."""

    def __init__(self, tmp_path) -> None:
        self.tmp = tmp_path
        self.root = str(tmp_path / "root")
        self.pkg = {
            k: write_package(str(tmp_path / f"{k}.tar.gz"), {"tag": f"{k}1".encode()})
            for k in ("a", "b")
        }
        self.dest_a = str(tmp_path / "models" / "a")
        self.parent = tmp_path / "tenant"
        self.dest_b = str(self.parent / "b")

    def group(self, dest_b: str = "") -> str:
        return write_group(
            str(self.tmp / "group.json"),
            {
                "name": "places",
                "resources": [
                    {"id": "a", "model": {"source": self.pkg["a"], "destination": self.dest_a}},
                    {
                        "id": "b",
                        "model": {"source": self.pkg["b"], "destination": dest_b or self.dest_b},
                    },
                ],
            },
        )

    def snapshot(self, top: str) -> list[tuple[str, str]]:
        out = []
        for dirpath, dirnames, names in os.walk(top):
            for n in sorted(dirnames + names):
                p = os.path.join(dirpath, n)
                out.append((os.path.relpath(p, top), os.readlink(p) if os.path.islink(p) else ""))
        return sorted(out)


@pytest.fixture
def places(tmp_path) -> Places:
    return Places(tmp_path)


def test_destination_through_a_link_into_etc_is_refused_at_validation(places):
    os.symlink("/etc", places.parent)
    with pytest.raises(dp.GroupError) as e:
        dp.load_group(places.group())
    assert (
        f"resources[1].model.destination: '{places.dest_b}' is, through symbolic links, "
        "/etc/b, which is inside /etc, a system directory" in str(e.value)
    )


@pytest.mark.parametrize("into", ["root", "version-of-a", "store-of-a"])
def test_destination_through_a_link_into_ours_is_refused(places, into):
    first = dp.deploy(places.group(), places.root)
    assert first.status == "Success"
    dp.reset(places.root)  # 'b' goes; 'a' is deployed alone, then 'b' comes back via a link
    os.makedirs(places.root, exist_ok=True)
    solo = write_group(
        str(places.tmp / "solo.json"),
        {
            "name": "solo",
            "resources": [
                {"id": "a", "model": {"source": places.pkg["a"], "destination": places.dest_a}}
            ],
        },
    )
    assert dp.deploy(solo, places.root).status == "Success"
    target = {
        "root": places.root,
        "version-of-a": os.path.realpath(places.dest_a),
        "store-of-a": os.path.join(os.path.dirname(places.dest_a), ".a.pyengine"),
    }[into]
    os.rmdir(places.parent)
    os.symlink(target, places.parent)
    before = places.snapshot(target)
    d = dp.deploy(places.group(), places.root)
    b = next(i for i in d.items if i.key == "b")
    assert d.status == "Failure" and b.outcome == "failed"
    assert f"resources[1].model.destination {places.dest_b} (through symbolic links: " in b.message
    assert {"root": "pyengine's root", "version-of-a": "the installed version of resource 'a'",
            "store-of-a": "the version store of resource 'a'"}[into] in b.message, b.message
    assert places.snapshot(target) == before  # nothing was made there


@pytest.mark.parametrize("when", ["InProgress", "done"])
@pytest.mark.parametrize("into", ["root", "version-of-a"])
def test_link_swapped_in_after_validation_is_refused_at_install(places, when, into):
    """The destination's parent becomes a link after the plan was checked: before the packages
    are unpacked (InProgress) or right before the switch (done). The install is refused the same
    way, nothing lands in the link's target, and the previous version keeps serving."""
    assert dp.deploy(places.group(), places.root).status == "Success"
    write_package(places.pkg["b"], {"tag": b"b2"})
    write_package(places.pkg["a"], {"tag": b"a2"})
    moved = places.tmp / "tenant-real"
    target = {"root": places.root, "version-of-a": os.path.realpath(places.dest_a)}[into]
    before: list = []

    def swap(e: dp.ProgressEvent) -> None:
        hit = (e.event == "status" and e.message == "InProgress" and when == "InProgress") or (
            e.event == "done" and e.key == "b" and when == "done"
        )
        if hit and not os.path.islink(places.parent):
            before.extend(places.snapshot(target))
            os.rename(places.parent, moved)
            os.symlink(target, places.parent)

    d = dp.deploy(places.group(), places.root, progress=swap)
    assert os.path.islink(places.parent), "the swap did not happen"
    b = next(i for i in d.items if i.key == "b")
    assert d.status == "Failure", [(i.key, i.outcome, i.message) for i in d.items]
    assert "(through symbolic links: " in b.message and "refused" in b.message, b.message
    assert not {"b", ".b.pyengine"} & {os.path.basename(n) for n, _ in places.snapshot(target)}
    if into != "root":  # the root's own files (state.db-wal, downloads) come and go
        assert places.snapshot(target) == before
    # the previous versions still serve: b at its real place, a unchanged at v1
    with open(moved / "b" / "tag") as f:
        assert f.read() == "b1"
    with open(os.path.join(places.dest_a, "tag")) as f:
        assert f.read() == "a1"
    os.unlink(places.parent)
    os.rename(moved, places.parent)
    d2 = dp.deploy(places.group(), places.root)
    assert d2.status == "Success"
    with open(os.path.join(places.dest_b, "tag")) as f:
        assert f.read() == "b2"


# ----------------------------------------------------------------------------------- state


def _mode(path: str) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_state_db_and_its_side_files_are_0600_whatever_the_umask(tenant):
    old = os.umask(0)
    try:
        d = dp.deploy(tenant.group(), tenant.root)
        assert d.status == "Success"
        from pyengine.deploy.state import State

        st = State(tenant.root)  # an open connection keeps -wal and -shm in place
        try:
            st.q("SELECT 1 FROM deployments")
            names = [n for n in os.listdir(tenant.root) if n.startswith("state.db")]
            assert {"state.db", "state.db-wal", "state.db-shm"} <= set(names)
            assert {n: _mode(os.path.join(tenant.root, n)) for n in names} == {
                n: 0o600 for n in names
            }
        finally:
            st.close()
    finally:
        os.umask(old)


def test_an_existing_install_is_tightened_at_open(tenant):
    assert dp.deploy(tenant.group(), tenant.root).status == "Success"
    for n in ("state.db", "state.db-wal", "state.db-shm"):
        p = os.path.join(tenant.root, n)
        if os.path.exists(p):
            os.chmod(p, 0o644)
    assert dp.list_deployments(tenant.root)  # any open tightens
    assert _mode(os.path.join(tenant.root, "state.db")) == 0o600
    for n in ("state.db-wal", "state.db-shm"):
        p = os.path.join(tenant.root, n)
        assert not os.path.exists(p) or _mode(p) == 0o600


SECRET = "sk-live-7f3a9c0e41d2b8"


def test_environment_secrets_are_not_in_the_state(tenant):
    from pyengine.core.group import read_deployed_group

    d = dp.deploy(tenant.group(environment={"API_KEY": SECRET, "MODE": "x"}), tenant.root)
    assert d.status == "Success"
    # the core still gets it
    assert dp.current(tenant.root).functions["fn"].environment == {"API_KEY": SECRET, "MODE": "x"}
    core = read_deployed_group(tenant.root)
    assert core is not None and core.functions[0].environment["API_KEY"] == SECRET
    # the only file holding it is the function's environment file: 0600 in a 0700 directory
    env_dir = os.path.join(tenant.root, "environments")
    holding = tenant.files_holding(SECRET.encode())
    assert len(holding) == 1 and os.path.dirname(holding[0]) == env_dir, holding
    assert _mode(holding[0]) == 0o600 and _mode(env_dir) == 0o700
    # nor in what `deployments show` prints
    r = run_cli("deployments", "show", "--json", "--root", tenant.root)
    assert r.returncode == 0 and SECRET not in r.stdout + r.stderr

    # a new environment, then rollback: the old one comes back; unreferenced files go
    d2 = dp.deploy(tenant.group(environment={"API_KEY": "second"}), tenant.root)
    assert d2.status == "Success"
    assert dp.current(tenant.root).functions["fn"].environment == {"API_KEY": "second"}
    dp.rollback(tenant.root)
    assert dp.current(tenant.root).functions["fn"].environment["API_KEY"] == SECRET
    for _ in range(3):
        dp.deploy(tenant.group(environment={"API_KEY": "third"}), tenant.root)
    assert tenant.files_holding(SECRET.encode()) == []
    assert len(os.listdir(env_dir)) <= 3


def test_environments_recorded_by_an_older_version_are_moved_out(tenant):
    import json

    from pyengine.deploy.state import State

    assert dp.deploy(tenant.group(), tenant.root).status == "Success"
    st = State(tenant.root)
    try:  # as the main before this change recorded it: inline
        row = st.one("SELECT id, group_json FROM deployments ORDER BY id DESC")
        g = json.loads(row["group_json"])
        g.pop("environments", None)
        g["functions"][0]["environment"] = {"API_KEY": SECRET}
        st.x("UPDATE deployments SET group_json=? WHERE id=?", json.dumps(g), row["id"])
        st.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        st.close()
    assert any("state.db" in p for p in tenant.files_holding(SECRET.encode()))
    dp.recover(tenant.root)  # what the core runs at start (or any deploy)
    holding = tenant.files_holding(SECRET.encode())
    assert len(holding) == 1 and "/environments/" in holding[0], holding
    assert dp.current(tenant.root).functions["fn"].environment == {"API_KEY": SECRET}


def test_a_root_deploy_leaves_the_state_to_the_roots_owner(tenant):
    """Deployed as root into a root directory owned by the core's user: that user, and only
    it, can read the state and the environments (the core reads them at start)."""
    import shutil
    import subprocess
    import sys
    import tempfile

    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to deploy as root for another user")
    # pytest's own temp directories are 0700 root; the core's user must reach this one.
    with tempfile.TemporaryDirectory(prefix="pyengine-owner-") as top:
        os.chmod(top, 0o755)
        root = os.path.join(top, "root")
        os.mkdir(root)
        os.chown(root, 65534, 65534)
        g = write_group(
            os.path.join(top, "group.json"),
            {
                "name": "owned",
                "functions": [
                    {
                        "name": "fn",
                        "handler": "fn.function_handler",
                        "code": str(tenant.code),
                        "environment": {"API_KEY": SECRET},
                    }
                ],
            },
        )
        d = dp.deploy(g, root)
        assert d.status == "Success"
        env_dir = os.path.join(root, "environments")
        names = ["state.db", "deploy.lock", "environments"]
        names += [os.path.join("environments", n) for n in os.listdir(env_dir)]
        for p in names:
            st = os.stat(os.path.join(root, p))
            assert (st.st_uid, stat.S_IMODE(st.st_mode) & 0o077) == (65534, 0), p
        code = (
            "import sys; from pyengine import deploy as dp; "
            "print(dp.current(sys.argv[1]).functions['fn'].environment['API_KEY'])"
        )
        r = subprocess.run(
            ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups",
             sys.executable, "-c", code, root],
            capture_output=True, text=True, timeout=60,
        )
        assert r.returncode == 0 and r.stdout.strip() == SECRET, r.stderr
