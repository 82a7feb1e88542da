"""Data capture: the core's on-disk spool of samples and the uploader that ships them to S3.

``pyengine.capture(inputs, outputs, meta)`` in a function sends the sample to the core over
the worker's channel; the core writes it to the spool (``ROOT/capture/spool``, one sample per
slot file, synced with ``fdatasync``: see :class:`Spool`) and only then acknowledges it to the
function. So a sample the function saw acknowledged survives a crash of
the core or of the machine. Workers never touch the spool (their Landlock rules do not open
it): the core is its only writer, which keeps the cap and the order in one place.

The spool is bounded per function, in bytes on disk (the slot files' allocated blocks, not
their length: ``capture.function_mb``) and in samples (one file each: ``function_files``): a
new sample that does not fit evicts its own function's oldest samples first, each counted in
``pyengine_capture_evicted_total{function}``. The whole spool is bounded too
(``capture.spool_mb``); a sample that does not fit there once its function's own samples are
gone is refused (``pyengine_capture_refused_total{function, reason="spool_full"}``): one
function never evicts another's samples.

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

import collections
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
_SLOT = "slot-"
_SLOT_BATCH = 32  # slot files created at once (one directory fsync)
_FREE_MAX = 2 * _SLOT_BATCH  # empty slot files kept for reuse; more are deleted


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
    sample is uploaded (recorded durably in ``uploaded``) or evicted (truncated and synced);
    beyond :data:`_FREE_MAX` empty slots, freed ones are deleted. At start every slot is read:
    an empty one, one that does not parse (a write cut by a crash: never acknowledged) and one
    whose sample is already uploaded are free.

    A sample's size is what its file takes on disk (``st_blocks``): a 100-byte sample costs a
    whole block, and the quotas count that.

    Parameters
    ----------
    directory
        Where the slot files live (created, mode 0700).
    cap_bytes
        Most bytes on disk of all samples; a sample that does not fit is refused.
    metrics
        Where evictions, refusals and captures are counted.
    function_bytes, function_files
        Each function's quota (bytes on disk, samples); its own oldest samples are evicted to
        make room. Default: ``cap_bytes``, no limit on samples.
    """

    def __init__(self, directory: str, cap_bytes: int, metrics: Metrics,
                 function_bytes: int | None = None, function_files: int | None = None) -> None:
        self.directory = directory
        self.cap_bytes = cap_bytes
        self.function_bytes = min(cap_bytes, function_bytes or cap_bytes)
        self.function_files = function_files or 2**62
        self.metrics = metrics
        self._cond = threading.Condition()
        os.makedirs(directory, mode=0o700, exist_ok=True)
        os.chmod(directory, 0o700)
        self._block = max(512, os.statvfs(directory).f_bsize)
        uploaded = self._read_uploaded()
        found: dict[int, tuple[int, int, str]] = {}  # seq -> (slot, bytes on disk, function)
        free: list[int] = []
        self._slots = 0
        for name in os.listdir(directory):
            if not (name.startswith(_SLOT) and name[len(_SLOT):].isdigit()):
                if name.endswith(".tmp"):
                    os.unlink(os.path.join(directory, name))
                continue
            slot = int(name[len(_SLOT):])
            self._slots = max(self._slots, slot + 1)
            seq, size, function = self._parse(slot)
            if seq is None or seq <= uploaded or seq in found:
                free.append(slot)
            else:
                found[seq] = (slot, size, function)
        self._samples = dict(sorted(found.items()))
        self._usage: dict[str, list[int]] = {}  # function -> [samples, bytes on disk]
        self._order: dict[str, collections.deque[int]] = {}  # function -> its seqs, oldest first
        for seq, (_, size, function) in self._samples.items():
            use = self._usage.setdefault(function, [0, 0])
            use[0] += 1
            use[1] += size
            self._order.setdefault(function, collections.deque()).append(seq)
        self._bytes = sum(size for _, size, _ in self._samples.values())
        self._free: list[int] = []
        for slot in sorted(free, reverse=True):
            self._release(slot)
        self._next = max([uploaded, *self._samples]) + 1
        self._oldest_at = time.monotonic() if self._samples else 0.0

    def _path(self, slot: int) -> str:
        return os.path.join(self.directory, f"{_SLOT}{slot:06d}")

    def _parse(self, slot: int) -> tuple[int | None, int, str]:
        """(seq, bytes on disk, function) of the sample in ``slot``; seq None when empty or
        cut."""
        try:
            with open(self._path(slot), "rb") as fh:
                data = fh.read()
                blocks = os.fstat(fh.fileno()).st_blocks
            record = json.loads(data) if data.endswith(b"\n") else {}
            seq, function = record.get("seq"), str(record.get("function") or "")
        except (OSError, ValueError, AttributeError):
            return None, 0, ""
        if not isinstance(seq, int):
            return None, 0, ""
        return seq, max(blocks * 512, self._round(len(data))), function

    def _round(self, n: int) -> int:
        """``n`` bytes rounded up to whole filesystem blocks (a file's least cost on disk)."""
        return -(-n // self._block) * self._block

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

    def _release(self, slot: int) -> None:
        """``slot`` (empty or uploaded) is free: emptied and kept for reuse, or deleted past
        the spare, so that what is on disk is what the quotas count."""
        with contextlib.suppress(FileNotFoundError):
            if len(self._free) < _FREE_MAX:
                # No sync needed: an uploaded sample that comes back after a crash is free.
                os.truncate(self._path(slot), 0)
                self._free.append(slot)
            else:
                os.unlink(self._path(slot))

    def _write_slot(self, slot: int, data: bytes) -> int:
        """Write ``data`` into ``slot`` durably; the bytes the file takes on disk."""
        fd = os.open(self._path(slot), os.O_WRONLY | os.O_TRUNC)
        try:
            if data:
                os.write(fd, data)
            os.fdatasync(fd)
            return max(os.fstat(fd).st_blocks * 512, self._round(len(data)) if data else 0)
        finally:
            os.close(fd)

    def _evict_oldest(self, function: str) -> bool:
        """Evict ``function``'s oldest sample; False when it has none."""
        order = self._order.get(function)
        if not order:
            return False
        slot, size, _ = self._samples.pop(order.popleft())
        self._bytes -= size
        use = self._usage[function]
        use[0] -= 1
        use[1] -= size
        self._write_slot(slot, b"")  # evicted for good, even across a crash
        self._release(slot)
        self.metrics.inc("pyengine_capture_evicted_total", function=function)
        return True

    def _refuse(self, function: str, reason: str, message: str) -> ValueError:
        self.metrics.inc("pyengine_capture_refused_total", function=function, reason=reason)
        return ValueError(message)

    def append(self, sample: dict[str, Any]) -> int:
        """Store ``sample`` durably (synced to disk) and return its sequence number.

        The sample's ``function`` field (set by the core) names the quota it counts against.

        Raises
        ------
        ValueError
            The sample is not JSON-serializable, alone is larger than its function's quota,
            or does not fit in the spool beside other functions' samples.
        """
        function = str(sample.get("function") or "")
        with self._cond:
            seq = self._next
            record = {"seq": seq, **{k: v for k, v in sample.items() if k != "seq"}}
            data = (json.dumps(record, default=_json_default,
                               separators=(",", ":")) + "\n").encode()
            need = self._round(len(data))
            if need > self.function_bytes:
                raise self._refuse(function, "too_large", (
                    f"a sample of {len(data)} bytes ({need} on disk) is larger than the "
                    f"function's whole capture quota ({self.function_bytes} bytes, "
                    "capture.function_mb); capture smaller inputs or raise the quota"))
            use = self._usage.setdefault(function, [0, 0])
            while use[0] and (use[0] + 1 > self.function_files
                              or use[1] + need > self.function_bytes
                              or self._bytes + need > self.cap_bytes):
                self._evict_oldest(function)
            if self._bytes + need > self.cap_bytes:
                raise self._refuse(function, "spool_full", (
                    f"the capture spool is full ({self._bytes} of {self.cap_bytes} bytes, "
                    "capture.spool_mb) with other functions' samples; this sample is refused "
                    "(raise spool_mb, or lower function_mb so that every function's quota "
                    "fits)"))
            slot = self._take_slot()
            try:
                size = self._write_slot(slot, data)
            except OSError:
                self._free.append(slot)
                raise
            self._next = seq + 1
            if not self._samples:
                self._oldest_at = time.monotonic()
            self._samples[seq] = (slot, size, function)
            self._order.setdefault(function, collections.deque()).append(seq)
            self._bytes += size
            use[0] += 1
            use[1] += size
            self.metrics.inc("pyengine_capture_samples_total")
            self._cond.notify_all()
            return seq

    def stats(self) -> tuple[int, int]:
        """(samples, bytes on disk) waiting."""
        with self._cond:
            return len(self._samples), self._bytes

    def usage(self) -> dict[str, tuple[int, int]]:
        """Function -> (samples, bytes on disk) it has waiting."""
        with self._cond:
            return {f: (u[0], u[1]) for f, u in self._usage.items() if u[0]}

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
                slot, size, function = self._samples.pop(seq)
                self._bytes -= size
                use = self._usage[function]
                use[0] -= 1
                use[1] -= size
                self._order[function].popleft()  # the oldest go first: seqs only grow
                self._release(slot)
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
        from pyengine.common.aws import AwsSettings, client

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
