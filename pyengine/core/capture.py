"""Data capture: the core's on-disk spool of samples and the uploader that ships them to S3.

``pyengine.capture(inputs, outputs, meta)`` in a function sends the sample to the core over
the worker's channel; the core appends it to the spool (``ROOT/capture/spool``, one file per
sample, written, fsynced and renamed into place, then the directory fsynced) and only then
acknowledges it to the function. So a sample the function saw acknowledged survives a crash of
the core or of the machine. Workers never touch the spool (their Landlock rules do not open
it): the core is its only writer, which keeps the cap and the order in one place.

The spool is bounded (``capture.spool_mb``): a new sample that does not fit evicts the oldest
ones first, each counted in ``pyengine_capture_evicted_total``.

The uploader sends the oldest samples in batches of up to ``capture.batch_size`` (or what is
there once the oldest has waited ``capture.batch_s``) as one JSON Lines object
``PREFIX<first seq>.jsonl`` (the sequence number zero-padded to 20 digits, so keys sort in
capture order). After an upload succeeds it records the last uploaded sequence number
(fsynced), then deletes those files. When S3 cannot be reached it retries with exponential
backoff up to ``capture.retry_max_s``; samples wait in the spool meanwhile. A crash between an
upload and that record sends the batch again on the next start, starting with the same sample
and so under the same key: the object is replaced (with the same samples, maybe more), not
duplicated.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from typing import Any

from pyengine.core.config import CaptureSettings
from pyengine.core.metrics import Metrics
from pyengine.core.protocol import _json_default

log = logging.getLogger("pyengine.core.capture")

_UPLOADED = "uploaded"  # the last uploaded sequence number
_SUFFIX = ".json"


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_durably(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(os.path.dirname(path))


class Spool:
    """The bounded, crash-safe queue of captured samples on disk.

    Parameters
    ----------
    directory
        Where the sample files live (created, mode 0700).
    cap_bytes
        Most bytes of samples kept; older ones are evicted to make room.
    metrics
        Where evictions and captures are counted.
    """

    def __init__(self, directory: str, cap_bytes: int, metrics: Metrics) -> None:
        self.directory = directory
        self.cap_bytes = cap_bytes
        self.metrics = metrics
        self._cond = threading.Condition()
        os.makedirs(directory, mode=0o700, exist_ok=True)
        os.chmod(directory, 0o700)
        uploaded = self._read_uploaded()
        self._files: dict[int, int] = {}  # seq -> size, in seq order
        for name in sorted(os.listdir(directory)):
            path = os.path.join(directory, name)
            if name.endswith(".tmp"):
                os.unlink(path)  # never acknowledged: the crash came before the rename
            elif name.endswith(_SUFFIX) and name[:-len(_SUFFIX)].isdigit():
                seq = int(name[:-len(_SUFFIX)])
                if seq <= uploaded:
                    os.unlink(path)  # uploaded; the crash came before the delete
                else:
                    self._files[seq] = os.path.getsize(path)
        self._bytes = sum(self._files.values())
        self._next = max([uploaded, *self._files]) + 1
        self._oldest_at = time.monotonic() if self._files else 0.0

    def _read_uploaded(self) -> int:
        try:
            with open(os.path.join(self.directory, _UPLOADED)) as fh:
                return int(fh.read().strip() or -1)
        except (FileNotFoundError, ValueError):
            return -1

    def _path(self, seq: int) -> str:
        return os.path.join(self.directory, f"{seq:020d}{_SUFFIX}")

    def append(self, sample: dict[str, Any]) -> int:
        """Store ``sample`` durably (fsynced) and return its sequence number.

        Raises
        ------
        ValueError
            The sample is not JSON-serializable or alone is larger than the spool's cap.
        """
        with self._cond:
            seq = self._next
            data = (json.dumps({"seq": seq, **sample}, default=_json_default,
                               separators=(",", ":")) + "\n").encode()
            if len(data) > self.cap_bytes:
                raise ValueError(f"a sample of {len(data)} bytes is larger than the whole capture "
                                 f"spool ({self.cap_bytes} bytes, capture.spool_mb); capture "
                                 "smaller inputs or raise the cap")
            while self._files and self._bytes + len(data) > self.cap_bytes:
                old = next(iter(self._files))
                self._bytes -= self._files.pop(old)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self._path(old))
                self.metrics.inc("pyengine_capture_evicted_total")
            _write_durably(self._path(seq), data)
            self._next = seq + 1
            if not self._files:
                self._oldest_at = time.monotonic()
            self._files[seq] = len(data)
            self._bytes += len(data)
            self.metrics.inc("pyengine_capture_samples_total")
            self._cond.notify_all()
            return seq

    def stats(self) -> tuple[int, int]:
        """(samples, bytes) waiting."""
        with self._cond:
            return len(self._files), self._bytes

    def wait_batch(self, size: int, wait_s: float, stop: threading.Event) -> list[int]:
        """Sequence numbers of the next batch: ``size`` samples, or fewer once the oldest has
        waited ``wait_s``; empty when ``stop`` is set first."""
        with self._cond:
            while not stop.is_set():
                if self._files:
                    due = self._oldest_at + wait_s - time.monotonic()
                    if len(self._files) >= size or due <= 0:
                        return list(self._files)[:size]
                    self._cond.wait(min(due, 0.5))
                else:
                    self._cond.wait(0.5)
            return []

    def read(self, seqs: list[int]) -> tuple[list[int], bytes]:
        """The samples of ``seqs`` still in the spool (some may have been evicted): their
        sequence numbers and their lines."""
        kept, body = [], bytearray()
        for seq in seqs:
            try:
                with open(self._path(seq), "rb") as fh:
                    body += fh.read()
                kept.append(seq)
            except FileNotFoundError:
                continue
        return kept, bytes(body)

    def done(self, last: int) -> int:
        """Mark every sample up to ``last`` uploaded: record it durably, then delete the files.
        Returns how many samples that removed."""
        with self._cond:
            _write_durably(os.path.join(self.directory, _UPLOADED), f"{last}\n".encode())
            gone = [s for s in self._files if s <= last]
            for seq in gone:
                self._bytes -= self._files.pop(seq)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self._path(seq))
            if self._files:
                self._oldest_at = time.monotonic()
            return len(gone)


class Uploader:
    """Ships spooled samples to ``settings.s3`` in batches, in order, retrying while offline."""

    def __init__(self, spool: Spool, settings: CaptureSettings, metrics: Metrics) -> None:
        self.spool = spool
        self.settings = settings
        self.metrics = metrics
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.bucket, self.prefix = settings.bucket_prefix()

    def start(self) -> None:
        """Start the upload thread."""
        self._thread = threading.Thread(target=self._run, name="pyengine-capture-upload",
                                        daemon=True)
        self._thread.start()
        log.info("captured samples go to s3://%s/%s", self.bucket, self.prefix)

    def stop(self) -> None:
        """Stop after the batch in flight (what is left stays spooled for the next start)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _client(self) -> Any:
        from pyengine.sources.aws import AwsSettings, client

        return client("s3", AwsSettings(self.settings.endpoint_url, self.settings.region))

    def _run(self) -> None:
        backoff = 0.0
        failing = False
        while not self._stop.is_set():
            seqs = self.spool.wait_batch(self.settings.batch_size, self.settings.batch_s,
                                         self._stop)
            if not seqs:
                continue
            kept, body = self.spool.read(seqs)
            if not kept:
                continue
            # Named by the first sample only: after a crash between an upload and its record,
            # the same samples (and maybe more) go out again under the same key, replacing the
            # object instead of duplicating them.
            key = f"{self.prefix}{kept[0]:020d}.jsonl"
            try:
                self._client().put_object(Bucket=self.bucket, Key=key, Body=body,
                                          ContentType="application/x-ndjson")
            except Exception as exc:  # noqa: BLE001 - any failure: keep the samples, retry
                self.metrics.inc("pyengine_capture_upload_errors_total")
                backoff = min(self.settings.retry_max_s, max(0.2, backoff * 2))
                if not failing:
                    log.warning("cannot upload captured samples to s3://%s/%s (%s); they stay "
                                "in the spool, retrying", self.bucket, key, exc)
                failing = True
                self._stop.wait(backoff)
                continue
            if failing:
                log.info("uploading captured samples again")
            failing, backoff = False, 0.0
            removed = self.spool.done(kept[-1])
            self.metrics.inc("pyengine_capture_uploaded_total", len(kept))
            log.debug("uploaded %d samples to s3://%s/%s (%d removed from the spool)",
                      len(kept), self.bucket, key, removed)
