"""Data capture: the core's on-disk spool of samples and the uploader that ships them to S3.

``pyengine.capture(inputs, outputs, meta)`` in a function sends the sample to the core over
the worker's channel; the core writes it to the spool (``ROOT/capture/spool``, one sample per
slot file, synced with ``fdatasync``: see :class:`Spool`) and only then acknowledges it to the
function. So a sample the function saw acknowledged survives a crash of
the core or of the machine. Workers never touch the spool (their Landlock rules do not open
it): the core is its only writer, which keeps the cap and the order in one place.

The spool is bounded (``capture.spool_mb``): a new sample that does not fit evicts the oldest
ones first, each counted in ``pyengine_capture_evicted_total``.

The uploader sends the oldest samples in batches of up to ``capture.batch_size`` (or what is
there once the oldest has waited ``capture.batch_s``) as one JSON Lines object
``PREFIX<first seq>.jsonl`` (the sequence number zero-padded to 20 digits, so keys sort in
capture order). After an upload succeeds it records the last uploaded sequence number
(fsynced), then frees their slots. When S3 cannot be reached it retries with exponential
backoff up to ``capture.retry_max_s``; samples wait in the spool meanwhile. A crash between an
upload and that record sends the batch again on the next start, starting with the same sample
and so under the same key: the object is replaced (with the same samples, maybe more), not
duplicated.
"""

from __future__ import annotations

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
_SLOT = "slot-"
_SLOT_BATCH = 32  # slot files created at once (one directory fsync)


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

    Samples live in *slot* files (``slot-NNNNNN``), one sample (one JSON line with its ``seq``)
    per slot. Slots are created ahead in batches (one directory fsync per batch), so storing a
    sample costs one write and one ``fdatasync`` of an existing file. A slot is reused once its
    sample is uploaded (recorded durably in ``uploaded``) or evicted (truncated and synced). At
    start every slot is read: an empty one, one that does not parse (a write cut by a crash:
    never acknowledged) and one whose sample is already uploaded are free.

    Parameters
    ----------
    directory
        Where the slot files live (created, mode 0700).
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
        found: dict[int, tuple[int, int]] = {}  # seq -> (slot, size)
        self._free: list[int] = []
        self._slots = 0
        for name in os.listdir(directory):
            if not (name.startswith(_SLOT) and name[len(_SLOT):].isdigit()):
                if name.endswith(".tmp"):
                    os.unlink(os.path.join(directory, name))
                continue
            slot = int(name[len(_SLOT):])
            self._slots = max(self._slots, slot + 1)
            seq, size = self._parse(slot)
            if seq is None or seq <= uploaded or seq in found:
                self._free.append(slot)
            else:
                found[seq] = (slot, size)
        self._samples = dict(sorted(found.items()))
        self._free.sort(reverse=True)
        self._bytes = sum(size for _, size in self._samples.values())
        self._next = max([uploaded, *self._samples]) + 1
        self._oldest_at = time.monotonic() if self._samples else 0.0

    def _path(self, slot: int) -> str:
        return os.path.join(self.directory, f"{_SLOT}{slot:06d}")

    def _parse(self, slot: int, expect: int | None = None) -> tuple[int | None, int]:
        """(seq, size) of the sample in ``slot``; seq None when empty, cut or not ``expect``."""
        try:
            with open(self._path(slot), "rb") as fh:
                data = fh.read()
            seq = json.loads(data)["seq"] if data.endswith(b"\n") else None
        except (OSError, ValueError, KeyError, TypeError):
            return None, 0
        if not isinstance(seq, int) or (expect is not None and seq != expect):
            return None, 0
        return seq, len(data)

    def _read_uploaded(self) -> int:
        try:
            with open(os.path.join(self.directory, _UPLOADED)) as fh:
                return int(fh.read().strip() or -1)
        except (FileNotFoundError, ValueError):
            return -1

    def _take_slot(self) -> int:
        if not self._free:
            batch = range(self._slots, self._slots + _SLOT_BATCH)
            for slot in batch:
                os.close(os.open(self._path(slot), os.O_WRONLY | os.O_CREAT, 0o600))
            _fsync_dir(self.directory)  # the new names survive a crash from now on
            self._slots += _SLOT_BATCH
            self._free = sorted(batch, reverse=True)
        return self._free.pop()

    def _write_slot(self, slot: int, data: bytes) -> None:
        fd = os.open(self._path(slot), os.O_WRONLY | os.O_TRUNC)
        try:
            if data:
                os.write(fd, data)
            os.fdatasync(fd)
        finally:
            os.close(fd)

    def append(self, sample: dict[str, Any]) -> int:
        """Store ``sample`` durably (synced to disk) and return its sequence number.

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
            while self._samples and self._bytes + len(data) > self.cap_bytes:
                old = next(iter(self._samples))
                slot, size = self._samples.pop(old)
                self._bytes -= size
                self._write_slot(slot, b"")  # evicted for good, even across a crash
                self._free.append(slot)
                self.metrics.inc("pyengine_capture_evicted_total")
            slot = self._take_slot()
            try:
                self._write_slot(slot, data)
            except OSError:
                self._free.append(slot)
                raise
            self._next = seq + 1
            if not self._samples:
                self._oldest_at = time.monotonic()
            self._samples[seq] = (slot, len(data))
            self._bytes += len(data)
            self.metrics.inc("pyengine_capture_samples_total")
            self._cond.notify_all()
            return seq

    def stats(self) -> tuple[int, int]:
        """(samples, bytes) waiting."""
        with self._cond:
            return len(self._samples), self._bytes

    def wait_batch(self, size: int, wait_s: float, stop: threading.Event) -> list[int]:
        """Sequence numbers of the next batch: ``size`` samples, or fewer once the oldest has
        waited ``wait_s``; empty when ``stop`` is set first."""
        with self._cond:
            while not stop.is_set():
                if self._samples:
                    due = self._oldest_at + wait_s - time.monotonic()
                    if len(self._samples) >= size or due <= 0:
                        return list(self._samples)[:size]
                    self._cond.wait(min(due, 0.5))
                else:
                    self._cond.wait(0.5)
            return []

    def read(self, seqs: list[int]) -> tuple[list[int], bytes]:
        """The samples of ``seqs`` still in the spool (some may have been evicted meanwhile):
        their sequence numbers and their lines, in order."""
        with self._cond:
            where = {seq: self._samples[seq][0] for seq in seqs if seq in self._samples}
        kept, body = [], bytearray()
        for seq, slot in where.items():
            try:
                with open(self._path(slot), "rb") as fh:
                    data = fh.read()
            except OSError:
                continue
            try:
                same = data.endswith(b"\n") and json.loads(data).get("seq") == seq
            except ValueError:
                same = False
            if same:  # not evicted and reused while we read
                kept.append(seq)
                body += data
        return kept, bytes(body)

    def done(self, last: int) -> int:
        """Mark every sample up to ``last`` uploaded: record it durably, then free their slots.
        Returns how many samples that removed."""
        with self._cond:
            _write_durably(os.path.join(self.directory, _UPLOADED), f"{last}\n".encode())
            gone = [s for s in self._samples if s <= last]
            for seq in gone:
                slot, size = self._samples.pop(seq)
                self._bytes -= size
                self._free.append(slot)
            if self._samples:
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
