"""Listing a catalogue: a directory, a glob or a manifest -> CatalogueEntry records.

Paths go through Beam's FileSystems, so gs:// and s3:// catalogues list like local ones.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import posixpath
from collections.abc import Iterable

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

_LOG = logging.getLogger(__name__)

LABEL_MODES = ("auto", "from-dirs", "manifest", "none")
MANIFEST_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json", ".parquet")
AUDIO_SUFFIXES = frozenset(
    ".wav .wave .flac .ogg .oga .opus .mp3 .au .snd .aif .aiff .aifc .caf .w64 .rf64 "
    ".m4a .mp4 .aac .wma .webm .mka".split()
)
_GLOB_CHARS = frozenset("*?[")


class CatalogueError(ValueError):
    """The catalogue itself cannot be listed (as opposed to one bad file in it)."""


@dataclasses.dataclass(frozen=True)
class CatalogueEntry:
    uri: str
    track_id: str
    label: str | None = None
    artist: str | None = None
    fingerprint: str | None = None  # of the file's bytes, once read (transforms.fingerprint)
    # Set by featurize for a track with copies of its recording in the catalogue (found by their audio
    # fingerprints): the split key they share (transforms.splits.copies_key), which outranks the artist.
    copies_key: str | None = None


@dataclasses.dataclass(frozen=True)
class RejectedEntry:
    """An input refused before decoding (duplicate id, empty path): it goes to _errors/."""

    uri: str
    track_id: str
    reason: str


@dataclasses.dataclass(frozen=True)
class Catalogue:
    entries: list[CatalogueEntry]
    rejected: list[RejectedEntry]
    skipped_files: list[str]  # non-audio files seen while scanning a directory (not inputs)

    @property
    def labels(self) -> list[str]:
        """The label vocabulary: sorted, so label ids are the same on every run."""
        return sorted({e.label for e in self.entries if e.label})


def list_catalogue(source: str, *, labels: str = "auto") -> Catalogue:
    """Lists every input of `source` (a directory, a glob or a manifest file) in this process.

    The pipelines list in their workers (transforms/listing.py); this in-memory listing, built from the
    same row functions, is what the tests hold that one to, and suits small catalogues in notebooks."""
    if labels not in LABEL_MODES:
        raise CatalogueError(f"--labels {labels!r}: expected one of {', '.join(LABEL_MODES)}")
    if not source:
        raise CatalogueError("--input is empty")
    if is_glob(source):
        paths = _match(source)
        if not paths:
            raise CatalogueError(f"--input {source!r}: the pattern matches no file")
        root = static_prefix(source)
        rows = [_row_for_path(p, root) for p in paths]
        skipped: list[str] = []
    elif source.lower().endswith(MANIFEST_SUFFIXES) and FileSystems.exists(source):
        rows = read_manifest(source)
        if labels == "manifest" and not any(r.get("label") for r in rows):
            raise CatalogueError(f"--labels manifest: {source} has no label or genre column values")
        return _build(rows, labels=labels, skipped=[], root=FileSystems.split(source)[0])
    else:
        root = source.rstrip("/")
        paths = _match(root + "/**")
        if not paths:
            if not FileSystems.exists(source):
                raise CatalogueError(f"--input {source!r}: no such file or directory")
            raise CatalogueError(f"--input {source!r}: the directory holds no files")
        audio = [p for p in paths if posixpath.splitext(p)[1].lower() in AUDIO_SUFFIXES]
        skipped = sorted(set(paths) - set(audio))
        if skipped:
            _LOG.info(
                "Skipping %d non-audio files under %s (for example %s)",
                len(skipped), source, skipped[0],
            )
        if not audio:
            raise CatalogueError(
                f"--input {source!r}: none of its {len(paths)} files has an audio extension "
                f"({', '.join(sorted(AUDIO_SUFFIXES))})"
            )
        rows = [_row_for_path(p, root) for p in audio]
    if labels == "manifest":
        raise CatalogueError("--labels manifest needs a manifest file as --input")
    return _build(rows, labels=labels, skipped=skipped, root=root)


def read_manifest(path: str) -> list[dict[str, str | None]]:
    """Reads a CSV/TSV, JSON Lines or Parquet manifest into rows with keys uri, track_id, label,
    artist. Relative paths resolve against the manifest's folder."""
    suffix = posixpath.splitext(path.lower())[1]
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        data = handle.read()
    try:
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            raw = pq.read_table(io.BytesIO(data)).to_pylist()
        elif suffix in (".jsonl", ".json"):
            raw = [json.loads(line) for line in data.decode("utf-8").splitlines() if line.strip()]
        else:
            text = data.decode("utf-8-sig")
            raw = list(csv.DictReader(io.StringIO(text), delimiter="\t" if suffix == ".tsv" else ","))
    except (ValueError, UnicodeDecodeError, OSError) as err:
        raise CatalogueError(f"manifest {path}: cannot parse it as {suffix[1:]}: {err}") from err
    if not raw:
        raise CatalogueError(f"manifest {path} has no rows")
    columns = set(raw[0])
    if not columns & {"uri", "path"}:
        raise CatalogueError(
            f"manifest {path} needs a 'uri' or 'path' column; it has {sorted(columns)}"
        )
    folder = FileSystems.split(path)[0]
    return [manifest_row(record, folder=folder, where=f"{path}#row{number}")
            for number, record in enumerate(raw, start=1)]


def manifest_row(record: dict, *, folder: str, where: str) -> dict[str, str | None]:
    """One manifest record -> a row (uri, track_id, label, artist); relative paths resolve against the
    manifest's folder; `where` names the row when it has neither a path nor a track id."""
    location = _text(record.get("uri")) or _text(record.get("path")) or ""
    if location and not _is_absolute(location):
        location = FileSystems.join(folder, location)
    return {
        "uri": location,
        "track_id": _text(record.get("track_id")) or location or where,
        "label": _text(record.get("label")) or _text(record.get("genre")),
        "artist": _text(record.get("artist")),
    }


def entry_of(row: dict[str, str | None], *, labels: str, root: str) -> CatalogueEntry:
    """A listed row -> its entry, with the label the label mode gives it."""
    if labels == "from-dirs":
        parent = FileSystems.split(row["uri"])[0]
        # GTZAN layout: ROOT/blues/blues.00000.wav. A file directly in ROOT has no label.
        label = posixpath.basename(parent) if parent.rstrip("/") != root.rstrip("/") else None
    elif labels == "none":
        label = None
    else:
        label = row.get("label")
    return CatalogueEntry(uri=row["uri"], track_id=row["track_id"], label=label, artist=row.get("artist"))


def pick_duplicate(track_id: str, rows: list[dict]) -> tuple[dict, list[RejectedEntry]]:
    """Rows sharing a track id: the one with the smallest (path, label, artist) is kept (the same
    whatever order a parallel reader delivers them in), the others are rejected naming it."""
    kept, *others = sorted(rows, key=lambda row: (row["uri"], row.get("label") or "", row.get("artist") or ""))
    return kept, [RejectedEntry(row["uri"], track_id, f"duplicate track_id {track_id!r}, also {kept['uri']}")
                  for row in others]


def _build(
    rows: Iterable[dict[str, str | None]], *, labels: str, skipped: list[str], root: str
) -> Catalogue:
    rejected: list[RejectedEntry] = []
    by_id: dict[str, list[dict]] = {}
    for row in rows:
        if not row["uri"]:
            rejected.append(RejectedEntry("", row["track_id"] or "", "the manifest row has an empty path"))
            continue
        by_id.setdefault(row["track_id"] or "", []).append(row)
    entries: list[CatalogueEntry] = []
    for track_id, same in by_id.items():  # first-seen order of the ids
        kept, duplicates = pick_duplicate(track_id, same) if len(same) > 1 else (same[0], [])
        rejected.extend(duplicates)
        entries.append(entry_of(kept, labels=labels, root=root))
    return Catalogue(entries=entries, rejected=rejected, skipped_files=skipped)


def _match(pattern: str) -> list[str]:
    try:
        results = FileSystems.match([pattern])
    except Exception as err:  # Beam raises BeamIOError with per-pattern causes
        raise CatalogueError(f"cannot list {pattern!r}: {err}") from err
    return sorted(m.path for r in results for m in r.metadata_list)


def static_prefix(pattern: str) -> str:
    """The folder part of a glob before its first wildcard: track ids are relative to it."""
    cut = min(i for i, ch in enumerate(pattern) if ch in _GLOB_CHARS)
    return pattern[:cut].rsplit("/", 1)[0] if "/" in pattern[:cut] else ""


def is_glob(source: str) -> bool:
    return bool(_GLOB_CHARS & set(source))


def track_id_for(path: str, root: str) -> str:
    """A listed file's track id: its path relative to the listed folder (or the glob's fixed part)."""
    return path[len(root):].lstrip("/") if root and path.startswith(root) else path


def _row_for_path(path: str, root: str) -> dict[str, str | None]:
    return {"uri": path, "track_id": track_id_for(path, root), "label": None, "artist": None}


def _text(value: object) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _is_absolute(location: str) -> bool:
    return location.startswith("/") or "://" in location

