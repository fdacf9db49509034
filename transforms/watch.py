"""A catalogue folder as an unbounded source: each new or changed audio file, once it is complete.

    Impulse -> PollCatalogue (a splittable DoFn: one poll per --poll-interval, until stopped)
        -> CatalogueEntry, timestamped when the poll saw it complete; the watermark follows the clock

A file is *complete* when its modification time is at least `stable_s` old: a file still being
written (copied, downloaded, rendered) keeps touching it, and is read only once it stops. What the
source has emitted, (size, mtime) per path, lives in the restriction, which the runner checkpoints
with every deferred poll, so a file is emitted again only when it changes (a replacement under the
same name), and one deleted and re-created counts as new. After a restart the source starts empty
and emits every complete file once; the tag pipeline then skips those whose content the output
already holds (transforms.fingerprint).

Stopping: when `stop_file` exists, the next poll claims the end of the restriction and returns
without deferring. The source is then done, the watermark moves to the end of time, every open
window fires and the job finishes by itself: a drain, which Beam Python cannot ask of Prism.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import posixpath
import time
from collections.abc import Iterator

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.iobase import RestrictionProgress, RestrictionTracker
from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
from apache_beam.transforms.core import RestrictionProvider
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Duration, Timestamp

from transforms import counters
from transforms.catalogue import AUDIO_SUFFIXES, CatalogueEntry, CatalogueError, is_glob, static_prefix, track_id_for
from transforms.progress import EventLog

_LOG = logging.getLogger(__name__)
STOP = -1  # the position a poll claims to end the watch


@dataclasses.dataclass
class WatchState:
    """The restriction: the next poll's number and what has been emitted, by path."""

    next_poll: int = 0
    seen: dict[str, tuple[int, float]] = dataclasses.field(default_factory=dict)  # path -> (size, mtime)
    done: bool = False


class WatchTracker(RestrictionTracker):
    """Claims polls one at a time; splits only to checkpoint (defer the next poll) or to stop."""

    def __init__(self, state: WatchState):
        self._state = state
        self._claimed: int | None = None
        self._stopped = False

    def current_restriction(self) -> WatchState:
        return self._state

    def try_claim(self, position: int) -> bool:
        if self._state.done or self._stopped:
            return False
        if position == STOP:
            self._stopped = True
        else:
            self._claimed = position
        return True

    def try_split(self, fraction_of_remainder):
        if fraction_of_remainder != 0 or self._stopped or self._state.done:
            return None  # a poll is not divisible, and there is nothing left after a stop
        next_poll = self._state.next_poll if self._claimed is None else self._claimed + 1
        residual = WatchState(next_poll, dict(self._state.seen))
        self._state = WatchState(self._state.next_poll, {}, done=True)
        return self._state, residual

    def check_done(self) -> None:
        if not (self._stopped or self._state.done):
            raise ValueError("the watch returned without a stop or a deferred next poll")

    def current_progress(self) -> RestrictionProgress:
        return RestrictionProgress(completed=0, remaining=1)  # unbounded: always work left

    def is_bounded(self) -> bool:
        return False


class WatchProvider(RestrictionProvider):
    def initial_restriction(self, element) -> WatchState:
        return WatchState()

    def create_tracker(self, restriction: WatchState) -> WatchTracker:
        return WatchTracker(restriction)

    def restriction_size(self, element, restriction: WatchState) -> int:
        return 1

    def truncate(self, element, restriction: WatchState):
        return None  # drained: stop polling


@dataclasses.dataclass(frozen=True)
class Listed:
    path: str
    size: int
    mtime: float


def list_audio(source: str) -> tuple[str, list[Listed], list[str]]:
    """(root for track ids, audio files with size and mtime, other files) of a folder or a glob."""
    if is_glob(source):
        root, pattern = static_prefix(source), source
    else:
        root = source.rstrip("/")
        pattern = root + "/**"
    metadata = FileSystems.match([pattern])[0].metadata_list
    audio, other = [], []
    for m in metadata:
        if posixpath.splitext(m.path)[1].lower() in AUDIO_SUFFIXES:
            audio.append(Listed(m.path, m.size_in_bytes, m.last_updated_in_seconds))
        else:
            other.append(m.path)
    return root, audio, other


def check_watchable(source: str) -> None:
    """A watch needs a folder (or a glob under one) that exists; its files may come later."""
    if not source:
        raise CatalogueError("--input is empty")
    folder = static_prefix(source) if is_glob(source) else source
    if not folder or not FileSystems.exists(folder):
        raise CatalogueError(f"--input {source!r}: no such folder to watch")
    if not is_glob(source) and os.path.isfile(source):
        raise CatalogueError(f"--input {source!r}: --watch needs a folder or a glob, not a file")


class PollCatalogue(beam.DoFn):
    """A splittable DoFn over `source`: emits each complete new or changed audio file as a CatalogueEntry."""

    def __init__(self, source: str, *, poll_interval_s: float, stable_s: float, stop_file: str,
                 events_dir: str | None = None, max_per_poll: int = 64):
        self._source = source
        self._max_per_poll = max_per_poll
        self._poll_s = poll_interval_s
        self._stable_s = stable_s
        self._stop_file = stop_file
        self._events_dir = events_dir

    def setup(self) -> None:
        self._events = EventLog(self._events_dir) if self._events_dir else None
        self._reported_other: set[str] = set()

    @beam.DoFn.unbounded_per_element()
    def process(self, _, tracker=beam.DoFn.RestrictionParam(WatchProvider()),
                watermark=beam.DoFn.WatermarkEstimatorParam(ManualWatermarkEstimator.default_provider()),
                ) -> Iterator[TimestampedValue]:
        state: WatchState = tracker.current_restriction()
        if FileSystems.exists(self._stop_file):
            tracker.try_claim(STOP)
            _LOG.info("watch: stopped after %d polls", state.next_poll)
            if self._events:
                self._events.write({"stopped": state.next_poll})
            return
        if not tracker.try_claim(state.next_poll):
            return
        now = time.time()
        root, audio, other = list_audio(self._source)
        for path in sorted(set(other) - self._reported_other):
            _LOG.info("watch: not an audio file, not tagged: %s", path)  # said once per path, like batch
            self._reported_other.add(path)
        present = {listed.path for listed in audio}
        waiting = 0
        emitted = []
        ready = []
        for listed in audio:
            if now - listed.mtime < self._stable_s:
                waiting += 1  # still being written, or just finished: look again next poll
            elif state.seen.get(listed.path) != (listed.size, listed.mtime):
                ready.append(listed)
        # A backlog (a folder moved in, a restart) goes out a slice per poll, oldest first: each slice is
        # its own window, so rows reach OUT and the database as they are tagged, not all at the end.
        ready.sort(key=lambda listed: (listed.mtime, listed.path))
        for listed in ready[: self._max_per_poll]:
            state.seen[listed.path] = (listed.size, listed.mtime)
            entry = CatalogueEntry(uri=listed.path, track_id=track_id_for(listed.path, root))
            # Waiting since its last write, or since the poll before this one if it arrived complete (moved in).
            emitted.append((entry.track_id, max(listed.mtime, now - self._poll_s)))
            counters.WATCH_FILES_SEEN.inc()
            yield TimestampedValue(entry, Timestamp.of(now))
        for gone in set(state.seen) - present:
            del state.seen[gone]  # deleted: if it comes back, it is new
        counters.WATCH_FILES_WAITING.set(waiting)
        if self._events:
            self._events.write({"poll": state.next_poll, "files": len(audio), "waiting": waiting,
                                "queued": max(0, len(ready) - self._max_per_poll), "emitted": emitted})
        current = watermark.current_watermark()
        if current is None or Timestamp.of(now) > current:
            watermark.set_watermark(Timestamp.of(now))
        tracker.defer_remainder(Duration.of(self._poll_s))
