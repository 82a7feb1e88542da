"""Source schemes come from one registry: a scheme written outside pyengine/deploy (here an
``http://`` source over a real loopback HTTP server) is validated by its own ``check(uri)`` and
deployed, with no change to the deploy layer."""

from __future__ import annotations

import hashlib
import http.server
import os
import threading
import urllib.error
import urllib.request
from typing import Iterator, Optional

import pytest
from deploy_fixtures import check_complete, write_package

from pyengine import deploy as dp
from pyengine import sources
from pyengine.deploy import GroupError, validate_group
from pyengine.sources import Scheme, Source, SourceError, SourceInfo


class HttpSource(Source):
    """A package at an http:// URL; change token: its SHA-256 (the file is small)."""

    def __init__(self, uri: str) -> None:
        self.uri = uri

    def _get(self, offset: int = 0) -> bytes:
        req = urllib.request.Request(self.uri, headers={"Range": f"bytes={offset}-"})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return bytes(resp.read())
        except (urllib.error.URLError, OSError) as exc:
            raise SourceError(f"{self.uri}: {exc}") from None

    def resolve(self, previous_token: Optional[str] = None) -> SourceInfo:
        body = self._get()
        digest = hashlib.sha256(body).hexdigest()
        return SourceInfo(self.uri, self.uri, len(body), f"http:{digest}", sha256=digest)

    def stream(self, info: SourceInfo, offset: int = 0, chunk_size: int = 1 << 20
               ) -> Iterator[bytes]:
        body = self._get()  # the test server ignores Range: cut here
        yield body[offset:]


def check(uri: str) -> Optional[str]:
    host = uri[len("http://"):].partition("/")[0]
    return None if host else "must be http://HOST/PATH"


@pytest.fixture
def http_scheme() -> Iterator[None]:
    before = dict(sources.SCHEMES)
    sources.register(Scheme("http://", lambda uri, s3, sagemaker: HttpSource(uri), check))
    yield
    sources.SCHEMES.clear()
    sources.SCHEMES.update(before)


@pytest.fixture
def served(tmp_path) -> Iterator[str]:
    """http://127.0.0.1:PORT/ serving tmp_path/www."""
    www = tmp_path / "www"
    www.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw) -> None:  # noqa: ANN002, ANN003
            super().__init__(*a, directory=str(www), **kw)

        def log_message(self, *args: object) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/"
    srv.shutdown()
    srv.server_close()


def _group(source: str, dest: str) -> dict:
    return {"name": "g", "resources": [{"id": "m", "name": "m",
                                        "model": {"source": source, "destination": dest}}]}


def test_an_unregistered_scheme_is_refused_naming_the_registered_ones(tmp_path) -> None:
    with pytest.raises(GroupError) as exc:
        validate_group(_group("http://127.0.0.1/m.tar.gz", str(tmp_path / "m")))
    text = str(exc.value)
    assert "resources[0].model.source: 'http://127.0.0.1/m.tar.gz': unsupported source" in text
    assert "expected file://, s3:// or sagemaker://" in text


def test_a_registered_scheme_is_validated_by_its_check_and_deploys(
        tmp_path, http_scheme, served) -> None:
    dest = str(tmp_path / "models" / "m")
    # Its own check names what is wrong; the package rules still apply to what it names.
    with pytest.raises(GroupError) as exc:
        validate_group(_group("http:///m.tar.gz", dest))
    assert "'http:///m.tar.gz': must be http://HOST/PATH" in str(exc.value)
    with pytest.raises(GroupError) as exc:
        validate_group(_group(served + "m.rar", dest))
    assert "packages must be .tar.gz, .tgz or .zip" in str(exc.value)
    # A valid URI passes validation and deploys through the source.
    write_package(str(tmp_path / "www" / "m.tar.gz"), {"w.bin": b"\x01" * 1000})
    d = dp.deploy(validate_group(_group(served + "m.tar.gz", dest)), str(tmp_path / "root"))
    assert d.status == "Success", d.items
    assert [(i.key, i.outcome) for i in d.items] == [("m", "installed")]
    assert check_complete(dest)["w.bin"] == hashlib.sha256(b"\x01" * 1000).hexdigest()
    assert os.path.islink(dest)
