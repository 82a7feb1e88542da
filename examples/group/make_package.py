"""Write the example group's model package: a small MLP (.pyem) and its labels, as .tar.gz.

Usage: python examples/group/make_package.py OUT.tar.gz

The package is only rewritten when its content changes, so deploying again reports the model
unchanged.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import sys
import tarfile
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from quickstart import write_mlp  # noqa: E402


def build(out: str) -> bool:
    """Write ``out``; False when an identical package is already there."""
    with tempfile.TemporaryDirectory() as tmp:
        model = write_mlp(os.path.join(tmp, "digits.pyem"), seed=7)
        buf = io.BytesIO()
        with open(model, "rb") as f:
            weights = f.read()
        labels = b"\n".join(str(i).encode() for i in range(10)) + b"\n"
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
            for name, data in (("digits.pyem", weights), ("labels.txt", labels)):
                ti = tarfile.TarInfo(name)
                ti.size, ti.mode, ti.mtime = len(data), 0o644, 0
                tf.addfile(ti, io.BytesIO(data))
        data = gzip.compress(buf.getvalue(), mtime=0)
    if os.path.exists(out):
        with open(out, "rb") as f:
            if hashlib.sha256(f.read()).digest() == hashlib.sha256(data).digest():
                return False
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out + ".tmp", "wb") as f:
        f.write(data)
    os.replace(out + ".tmp", out)
    return True


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python examples/group/make_package.py OUT.tar.gz")
    changed = build(sys.argv[1])
    print(f"{'wrote' if changed else 'unchanged'} {sys.argv[1]}")
