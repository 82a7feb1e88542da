"""Hostile and damaged packages: each is refused with a clear error, nothing is written outside
staging, and the previously installed version stays in place."""

from __future__ import annotations

import bz2
import io
import os
import struct
import tarfile
import zipfile
import zlib
from typing import Callable

import pytest
from deploy_fixtures import check_complete, write_group, write_package

from pyengine import deploy as dp
from pyengine.deploy.packages import unpack


def _tar(path: str, build: Callable[[tarfile.TarFile], None]) -> str:
    with tarfile.open(path, "w:gz", format=tarfile.GNU_FORMAT) as tf:
        build(tf)
    return path


def _reg(tf: tarfile.TarFile, name: str, data: bytes = b"x") -> None:
    ti = tarfile.TarInfo(name)
    ti.size = len(data)
    tf.addfile(ti, io.BytesIO(data))


def _special(tf: tarfile.TarFile, name: str, kind: bytes, link: str = "") -> None:
    ti = tarfile.TarInfo(name)
    ti.type = kind
    ti.linkname = link
    if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        ti.devmajor, ti.devminor = 1, 3
    tf.addfile(ti)


def _zip(path: str, entries: list[tuple[str, bytes, int]]) -> str:
    """entries: (name, data, unix mode with type bits)."""
    with zipfile.ZipFile(path, "w") as zf:
        for name, data, mode in entries:
            zi = zipfile.ZipInfo(name)
            zi.create_system = 3
            zi.external_attr = mode << 16
            zf.writestr(zi, data)
    return path


def _zeros_deflate(header: bytes, zeros: int) -> tuple[bytes, int]:
    """Raw deflate of ``header`` + ``zeros`` zero bytes built from one repeated 1 MiB block
    (full flushes make blocks independent), and the CRC-32 of the whole input."""
    co = zlib.compressobj(9, zlib.DEFLATED, -15)
    parts = [co.compress(header) + co.flush(zlib.Z_FULL_FLUSH)]
    mib = bytes(1 << 20)
    block = co.compress(mib) + co.flush(zlib.Z_FULL_FLUSH)
    crc = zlib.crc32(header)
    full, rest = divmod(zeros, 1 << 20)
    parts.append(block * full)
    for _ in range(full):
        crc = zlib.crc32(mib, crc)
    parts.append(co.compress(bytes(rest)) + co.flush())
    crc = zlib.crc32(bytes(rest), crc)
    return b"".join(parts), crc


def tar_gz_bomb(path: str, gib: int = 4) -> str:
    """A valid .tar.gz holding one file of ``gib`` GiB of zeros, in a few MB."""
    size = gib << 30
    ti = tarfile.TarInfo("zeros.bin")
    ti.size = size
    header = ti.tobuf(tarfile.GNU_FORMAT)
    data, crc = _zeros_deflate(header, size + 1024)  # the member and the end-of-archive blocks
    total = len(header) + size + 1024
    with open(path, "wb") as f:
        f.write(b"\x1f\x8b\x08\x00" + struct.pack("<I", 0) + b"\x02\xff")
        f.write(data)
        f.write(struct.pack("<II", crc & 0xFFFFFFFF, total & 0xFFFFFFFF))
    return path


def zip_bomb(path: str, entries: int = 10, mib: int = 400) -> str:
    """A valid zip of ``entries`` files of ``mib`` MiB of zeros each (4 GB in about 4 MB)."""
    data, crc = _zeros_deflate(b"", mib << 20)
    usize = mib << 20
    out = io.BytesIO()
    central = []
    for i in range(entries):
        name = f"zeros{i}.bin".encode()
        off = out.tell()
        out.write(
            struct.pack(
                "<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0, crc, len(data), usize, len(name), 0
            )
        )
        out.write(name + data)
        central.append(
            struct.pack(
                "<IHHHHHHIIIHHHHHII",
                0x02014B50,
                20,
                20,
                0,
                8,
                0,
                0,
                crc,
                len(data),
                usize,
                len(name),
                0,
                0,
                0,
                0,
                0,
                off,
            )
            + name
        )
    cd_off = out.tell()
    for c in central:
        out.write(c)
    out.write(
        struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, entries, entries, out.tell() - cd_off, cd_off, 0)
    )
    with open(path, "wb") as f:
        f.write(out.getvalue())
    return path


def _truncated(path: str) -> str:
    write_package(path + ".full.tar.gz", {"w.bin": os.urandom(200_000)})
    with open(path + ".full.tar.gz", "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
    return path


def _html(path: str) -> str:
    with open(path, "w") as f:
        f.write(
            "<!DOCTYPE html>\n<html><head><title>403 Forbidden</title></head>"
            "<body><h1>Forbidden</h1></body></html>\n"
        )
    return path


def _bz2_tar(path: str) -> str:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        _reg(tf, "a.txt", b"hello")
    with open(path, "wb") as f:
        f.write(bz2.compress(buf.getvalue()))
    return path


HOSTILE: dict[str, tuple[str, Callable[[str, str], str], str]] = {
    # name: (package file name, builder(path, outside_dir), expected message fragment)
    "traversal": (
        "p.tar.gz",
        lambda p, out: _tar(p, lambda tf: (_reg(tf, "ok.txt"), _reg(tf, "../../escaped.txt"))),
        "contains '..'",
    ),
    "traversal-nested": (
        "p.tar.gz",
        lambda p, out: _tar(p, lambda tf: _reg(tf, "a/b/../../../escaped.txt")),
        "contains '..'",
    ),
    "absolute": (
        "p.tar.gz",
        lambda p, out: _tar(p, lambda tf: _reg(tf, os.path.join(out, "abs.txt"))),
        "absolute path",
    ),
    "symlink-absolute": (
        "p.tar.gz",
        lambda p, out: _tar(p, lambda tf: _special(tf, "l", tarfile.SYMTYPE, out)),
        "points to an absolute path",
    ),
    "symlink-up": (
        "p.tar.gz",
        lambda p, out: _tar(p, lambda tf: _special(tf, "d/l", tarfile.SYMTYPE, "../../outside")),
        "points outside the package",
    ),
    "symlink-chain": (
        "p.tar.gz",
        lambda p, out: _tar(
            p,
            lambda tf: (
                _special(tf, "s", tarfile.SYMTYPE, "."),
                _special(tf, "t", tarfile.SYMTYPE, "s/s/s/../../x"),
            ),
        ),
        "resolves outside the package",
    ),
    "write-through-link": (
        "p.tar.gz",
        lambda p, out: _tar(
            p, lambda tf: (_special(tf, "l", tarfile.SYMTYPE, "."), _reg(tf, "l/escaped.txt"))
        ),
        "written through 'l'",
    ),
    "hardlink": (
        "p.tar.gz",
        lambda p, out: _tar(p, lambda tf: _special(tf, "h", tarfile.LNKTYPE, "/etc/passwd")),
        "hard links are refused",
    ),
    "hardlink-inside": (
        "p.tar.gz",
        lambda p, out: _tar(p, lambda tf: (_reg(tf, "a"), _special(tf, "h", tarfile.LNKTYPE, "a"))),
        "hard links are refused",
    ),
    "chr-device": (
        "p.tar.gz",
        lambda p, out: _tar(p, lambda tf: _special(tf, "null", tarfile.CHRTYPE)),
        "device node",
    ),
    "blk-device": (
        "p.tar.gz",
        lambda p, out: _tar(p, lambda tf: _special(tf, "sda", tarfile.BLKTYPE)),
        "device node",
    ),
    "fifo": (
        "p.tar.gz",
        lambda p, out: _tar(p, lambda tf: _special(tf, "pipe", tarfile.FIFOTYPE)),
        "FIFO",
    ),
    "duplicate": (
        "p.tar.gz",
        lambda p, out: _tar(p, lambda tf: (_reg(tf, "a", b"1"), _reg(tf, "a", b"2"))),
        "appears twice",
    ),
    "tar-gz-bomb": ("p.tar.gz", lambda p, out: tar_gz_bomb(p), "decompression bomb"),
    "zip-bomb": ("p.zip", lambda p, out: zip_bomb(p), "decompression bomb"),
    "truncated": ("p.tar.gz", lambda p, out: _truncated(p), "damaged or truncated"),
    "html-page": ("p.tar.gz", lambda p, out: _html(p), "HTML/XML page"),
    "empty-zip": ("p.zip", lambda p, out: _zip(p, []), "empty zip"),
    "empty-tar": ("p.tgz", lambda p, out: _tar(p, lambda tf: None), "contains no files"),
    "bzip2-as-tar-gz": (
        "p.tar.gz",
        lambda p, out: _bz2_tar(p),
        "bzip2 file, which is not supported",
    ),
    "zip-as-tar-gz": ("p.tar.gz", lambda p, out: _zip(p, [("a", b"a", 0o100644)]), "a zip file"),
    "zip-slip": (
        "p.zip",
        lambda p, out: _zip(p, [("../../escaped.txt", b"x", 0o100644)]),
        "contains '..'",
    ),
    "zip-absolute": (
        "p.zip",
        lambda p, out: _zip(p, [(os.path.join(out, "abs.txt"), b"x", 0o100644)]),
        "absolute path",
    ),
    "zip-symlink": (
        "p.zip",
        lambda p, out: _zip(p, [("l", b"../../outside", 0o120777)]),
        "points outside the package",
    ),
    "zip-fifo": ("p.zip", lambda p, out: _zip(p, [("f", b"", 0o010644)]), "FIFO"),
    "zip-device": ("p.zip", lambda p, out: _zip(p, [("d", b"", 0o020644)]), "device node"),
}


@pytest.fixture
def installed(tmp_path):
    """A root with a good version installed from file:// sources; returns a redeploy helper."""
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = str(tmp_path / "models" / "m")
    root = str(tmp_path / "root")
    good = write_package(str(tmp_path / "good.tar.gz"), {"weights.bin": b"w" * 1000, "v": b"good"})

    def group_for(pkg: str) -> str:
        return write_group(
            str(tmp_path / "group.json"),
            {
                "name": "g",
                "resources": [{"id": "m", "model": {"source": pkg, "destination": dest}}],
            },
        )

    d = dp.deploy(group_for(good), root)
    assert d.status == "Success"
    return {
        "dest": dest,
        "root": root,
        "outside": str(outside),
        "group_for": group_for,
        "before": check_complete(dest),
        "tmp": tmp_path,
    }


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_package_refused(installed, case):
    fname, build, expected = HOSTILE[case]
    tmp = installed["tmp"]
    pkg_dir = tmp / "pkgs"
    pkg_dir.mkdir()
    pkg = build(str(pkg_dir / fname), installed["outside"])
    if case.endswith("bomb"):
        assert os.path.getsize(pkg) < 8 << 20  # gigabytes of zeros in a few megabytes
    d = dp.deploy(installed["group_for"](pkg), installed["root"])
    assert d.status == "Failure"
    item = d.items[0]
    assert item.outcome == "failed"
    assert expected in item.message, item.message
    # nothing written outside staging
    assert os.listdir(installed["outside"]) == []
    for p in (tmp / "escaped.txt", tmp / "models" / "escaped.txt", tmp / "outside" / "abs.txt"):
        assert not p.exists(), p
    # the previous version is still in place, and no staging or partial download is left
    assert check_complete(installed["dest"]) == installed["before"]
    store = os.path.join(os.path.dirname(installed["dest"]), ".m.pyengine")
    assert [n for n in os.listdir(store) if not n.startswith("v")] == []
    assert len(os.listdir(store)) == 1
    assert os.listdir(os.path.join(installed["root"], "downloads")) == []
    cur = dp.current(installed["root"])
    assert (
        cur is not None
        and cur.resources["m"].version == dp.list_deployments(installed["root"])[1].items[0].version
    )


def test_caps_configurable(tmp_path):
    pkg = write_package(str(tmp_path / "p.tar.gz"), {f"f{i}": b"x" * 1000 for i in range(20)})
    st = tmp_path / "s1"
    st.mkdir()
    with pytest.raises(dp.UnpackError, match="more than 5 entries"):
        unpack(pkg, str(st), max_files=5)
    st2 = tmp_path / "s2"
    st2.mkdir()
    with pytest.raises(dp.UnpackError, match="limit of 10000 bytes"):
        unpack(pkg, str(st2), max_bytes=10_000)
    st3 = tmp_path / "s3"
    st3.mkdir()
    stats = unpack(pkg, str(st3))
    assert stats.files == 21 and stats.bytes >= 20_000


def test_internal_links_and_modes_allowed(tmp_path):
    def build(tf: tarfile.TarFile) -> None:
        _reg(tf, "sub/model.bin", b"m" * 10)
        ti = tarfile.TarInfo("run.sh")
        ti.size, ti.mode = 3, 0o4755  # setuid is dropped
        tf.addfile(ti, io.BytesIO(b"#!\n"))
        _special(tf, "latest", tarfile.SYMTYPE, "sub/model.bin")
        _special(tf, "sub/up", tarfile.SYMTYPE, "../run.sh")

    pkg = _tar(str(tmp_path / "p.tar.gz"), build)
    st = tmp_path / "s"
    st.mkdir()
    stats = unpack(pkg, str(st))
    assert (stats.files, stats.links) == (2, 2)
    with open(st / "latest", "rb") as f:
        assert f.read() == b"m" * 10
    assert os.stat(st / "run.sh").st_mode & 0o7777 == 0o755
    assert os.stat(st / "sub" / "model.bin").st_mode & 0o7777 == 0o644
