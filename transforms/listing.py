"""Listing a catalogue inside the pipeline: the launcher checks the source, the workers list it.

    plan_listing(source)   launcher: the source exists and is not empty; a manifest's header (and,
                           for Parquet, its row count); memory and time independent of the catalogue
    ListCatalogue(plan)    workers: folders and globs through Beam's MatchAll, manifests through
                           ReadFromText / ReadFromParquet; duplicate track ids found by a GroupByKey

It gives the entries and rejections `transforms.catalogue.list_catalogue` gives (tests check it), so
a catalogue of 10^6 entries no longer sits in the launcher's memory nor in the job graph.
"""

from __future__ import annotations

import csv
import dataclasses
import glob
import json
import os
import posixpath
from collections.abc import Iterator

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from schemas.failure import Failure
from transforms import counters
from transforms.catalogue import (
    AUDIO_SUFFIXES,
    MANIFEST_SUFFIXES,
    CatalogueError,
    entry_of,
    is_glob,
    manifest_row,
    pick_duplicate,
    static_prefix,
    track_id_for,
)


@dataclasses.dataclass(frozen=True)
class ListingPlan:
    """What the launcher learnt about a source, without listing it."""

    source: str
    kind: str  # "files" (a folder or a glob), "csv", "tsv", "jsonl" or "parquet"
    root: str  # track ids of listed files are relative to it; a manifest's relative paths resolve against it
    pattern: str = ""  # kind "files": what the workers match
    header: tuple[str, ...] = ()  # kind "csv"/"tsv": the manifest's columns
    total: int | None = None  # inputs, when known cheaply (a Parquet manifest's row count)


def plan_listing(source: str, *, labels: str = "auto") -> ListingPlan:
    """Checks `source` as `list_catalogue` would, reading only its start; raises CatalogueError."""
    if not source:
        raise CatalogueError("--input is empty")
    if is_glob(source):
        if _first_file(source) is None:
            raise CatalogueError(f"--input {source!r}: the pattern matches no file")
        plan = ListingPlan(source, "files", root=static_prefix(source), pattern=source)
    elif source.lower().endswith(MANIFEST_SUFFIXES) and FileSystems.exists(source):
        plan = _plan_manifest(source, labels)
    else:
        root = source.rstrip("/")
        if not FileSystems.exists(source):
            raise CatalogueError(f"--input {source!r}: no such file or directory")
        _check_folder(root)
        plan = ListingPlan(source, "files", root=root, pattern=root + "/**")
    if labels == "manifest" and plan.kind == "files":
        raise CatalogueError("--labels manifest needs a manifest file as --input")
    return plan


class ListCatalogue(beam.PTransform):
    """PBegin -> {"entries": CatalogueEntry, "rejected": Failure (stage "catalogue"), "non_audio": path}."""

    def __init__(self, plan: ListingPlan, *, labels: str = "auto"):
        super().__init__()
        self._plan = plan
        self._labels = labels

    def expand(self, pbegin):
        plan = self._plan
        if plan.kind == "files":
            files = (pbegin
                     | "Pattern" >> beam.Create([plan.pattern])
                     | "Match" >> fileio.MatchAll()
                     | "AudioFiles" >> beam.FlatMap(_audio_row, root=plan.root).with_outputs("non_audio", main="rows"))
            rows, non_audio = files.rows, files.non_audio
        else:
            non_audio = pbegin | "NoOtherFiles" >> beam.Create([]).with_output_types(str)
        if plan.kind == "parquet":
            rows = (pbegin
                    | "ReadManifest" >> beam.io.ReadFromParquet(plan.source)
                    | "Rows" >> beam.Map(_manifest_record, folder=plan.root, source=plan.source))
        elif plan.kind != "files":
            lines = pbegin | "ReadManifest" >> beam.io.ReadFromText(
                plan.source, skip_header_lines=1 if plan.kind in ("csv", "tsv") else 0,
                compression_type=CompressionTypes.UNCOMPRESSED)
            rows = lines | "Rows" >> beam.FlatMap(_text_record, kind=plan.kind, header=plan.header, folder=plan.root,
                                                  source=plan.source)
        # Every rejection comes out of one step: Flink's portable runner fails on a Flatten whose output
        # feeds further Flattens ("consumed but never produced"), so there is none here.
        resolved = (
            rows
            | "ByTrackId" >> beam.Map(_keyed).with_output_types(tuple[str, dict])
            | "OnePerTrackId" >> beam.GroupByKey()
            | "Entries" >> beam.FlatMap(_resolve, labels=self._labels, root=plan.root).with_outputs(
                "rejected", main="entries")
        )
        return {"entries": resolved.entries, "rejected": resolved.rejected, "non_audio": non_audio}


def _audio_row(metadata, root: str) -> Iterator[dict]:
    if posixpath.splitext(metadata.path)[1].lower() not in AUDIO_SUFFIXES:
        counters.NON_AUDIO_LISTED.inc()
        yield beam.pvalue.TaggedOutput("non_audio", metadata.path)
        return
    yield {"uri": metadata.path, "track_id": track_id_for(metadata.path, root), "label": None, "artist": None}


def _manifest_record(record: dict, folder: str, source: str) -> dict:
    return manifest_row(record, folder=folder, where=f"{source}#row")


def _text_record(line: str, kind: str, header: tuple[str, ...], folder: str, source: str) -> Iterator[dict]:
    if not line.strip():
        return
    if kind == "jsonl":
        try:
            record = json.loads(line)
        except ValueError:
            yield {"uri": "", "track_id": f"{source}: {line[:80]}", "label": None, "artist": None,
                   "_reason": "the manifest line is not JSON"}
            return
    else:
        values = next(csv.reader([line], delimiter="\t" if kind == "tsv" else ","))
        record = dict(zip(header, values, strict=False))
    yield manifest_row(record, folder=folder, where=f"{source}#{line[:80]}")


def _keyed(row: dict) -> tuple[str, dict]:
    counters.INPUTS_LISTED.inc()
    return row["track_id"] or "", row


def _resolve(keyed: tuple[str, list[dict]], labels: str, root: str) -> Iterator:
    track_id, rows = keyed
    usable = []
    for row in rows:
        if row["uri"]:
            usable.append(row)
        else:
            yield beam.pvalue.TaggedOutput("rejected", Failure(
                "", track_id, "catalogue", row.get("_reason", "the manifest row has an empty path")))
    if not usable:
        return
    kept, duplicates = pick_duplicate(track_id, usable) if len(usable) > 1 else (usable[0], [])
    for duplicate in duplicates:
        yield beam.pvalue.TaggedOutput("rejected", Failure(duplicate.uri, duplicate.track_id, "catalogue",
                                                           duplicate.reason))
    yield entry_of(kept, labels=labels, root=root)


def _first_file(pattern: str) -> str | None:
    """The first file a pattern matches, stopping there (a local glob is walked lazily)."""
    if "://" not in pattern:
        return next((p for p in glob.iglob(pattern, recursive=True) if os.path.isfile(p)), None)
    matched = FileSystems.match([pattern], limits=[1])[0].metadata_list
    return matched[0].path if matched else None


def _check_folder(root: str) -> None:
    """Not empty, and holding an audio file: a local folder is walked until the first one."""
    if "://" in root:
        if _first_file(root + "/**") is None:
            raise CatalogueError(f"--input {root!r}: the directory holds no files")
        return
    seen = 0
    for _, _, names in os.walk(root):
        for name in names:
            if posixpath.splitext(name)[1].lower() in AUDIO_SUFFIXES:
                return
            seen += 1
    if not seen:
        raise CatalogueError(f"--input {root!r}: the directory holds no files")
    raise CatalogueError(f"--input {root!r}: none of its {seen} files has an audio extension "
                         f"({', '.join(sorted(AUDIO_SUFFIXES))})")


def _plan_manifest(path: str, labels: str) -> ListingPlan:
    suffix = posixpath.splitext(path.lower())[1]
    folder = FileSystems.split(path)[0]
    total = None
    try:
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
                parquet = pq.ParquetFile(handle)
                columns, total = tuple(parquet.schema_arrow.names), parquet.metadata.num_rows
            kind = "parquet"
        else:
            with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
                first = b""
                while not first.strip():
                    line = handle.readline()
                    if not line:
                        break
                    first = line
            text = first.decode("utf-8-sig").strip()
            if suffix in (".jsonl", ".json"):
                kind, columns = "jsonl", tuple(json.loads(text)) if text else ()
            else:
                kind = "tsv" if suffix == ".tsv" else "csv"
                columns = tuple(next(csv.reader([text], delimiter="\t" if kind == "tsv" else ","))) if text else ()
    except (ValueError, UnicodeDecodeError, OSError) as err:
        raise CatalogueError(f"manifest {path}: cannot parse it as {suffix[1:]}: {err}") from err
    if not columns or total == 0:
        raise CatalogueError(f"manifest {path} has no rows")
    if not set(columns) & {"uri", "path"}:
        raise CatalogueError(f"manifest {path} needs a 'uri' or 'path' column; it has {sorted(columns)}")
    if labels == "manifest" and not set(columns) & {"label", "genre"}:
        raise CatalogueError(f"--labels manifest: {path} has no label or genre column")
    header = columns if kind in ("csv", "tsv") else ()
    return ListingPlan(path, kind, root=folder, header=header, total=total)


@dataclasses.dataclass(frozen=True)
class CatalogueFacts:
    """What featurize must know before its workers list the catalogue: the label vocabulary (label ids
    are written into every Example) and whether tracks carry artists (the split key)."""

    labels: tuple[str, ...]
    has_artists: bool


def catalogue_facts(plan: ListingPlan, *, labels: str) -> CatalogueFacts:
    """Streams the source once for its labels and artists, holding only their distinct values: a manifest's
    label column, or the folder names a from-dirs catalogue takes its labels from (a local folder is
    walked lazily; an object store is listed, which holds its paths for the while)."""
    if labels == "none":
        return CatalogueFacts((), False)
    found: set[str] = set()
    artists = False
    if plan.kind == "files":
        if labels != "from-dirs":
            return CatalogueFacts((), False)  # files have no labels of their own
        for path in _iter_files(plan.pattern):
            if posixpath.splitext(path)[1].lower() in AUDIO_SUFFIXES:
                row = {"uri": path, "track_id": path, "label": None, "artist": None}
                label = entry_of(row, labels="from-dirs", root=plan.root).label
                if label:
                    found.add(label)
        return CatalogueFacts(tuple(sorted(found)), False)
    for record in _iter_manifest_records(plan):
        row = manifest_row(record, folder=plan.root, where="")
        if row["uri"] and row["label"]:
            found.add(row["label"])
        artists = artists or bool(row["artist"])
    if labels == "manifest" and not found:
        raise CatalogueError(f"--labels manifest: {plan.source} has no label or genre column values")
    return CatalogueFacts(tuple(sorted(found)), artists)


def _iter_files(pattern: str) -> Iterator[str]:
    if "://" not in pattern:
        yield from (p for p in glob.iglob(pattern, recursive=True) if os.path.isfile(p))
    else:
        yield from (m.path for m in FileSystems.match([pattern])[0].metadata_list)


def _iter_manifest_records(plan: ListingPlan) -> Iterator[dict]:
    if plan.kind == "parquet":
        import pyarrow.parquet as pq

        with FileSystems.open(plan.source, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
            parquet = pq.ParquetFile(handle)
            wanted = [c for c in ("uri", "path", "label", "genre", "artist") if c in parquet.schema_arrow.names]
            for batch in parquet.iter_batches(columns=wanted, batch_size=65536):
                yield from batch.to_pylist()
        return
    with FileSystems.open(plan.source, compression_type=CompressionTypes.UNCOMPRESSED) as raw:
        lines = (line.decode("utf-8-sig") for line in raw)
        if plan.kind == "jsonl":
            for line in lines:
                if line.strip():
                    try:
                        yield json.loads(line)
                    except ValueError:
                        continue  # rejected by the workers, with its reason
            return
        rows = csv.reader(lines, delimiter="\t" if plan.kind == "tsv" else ",")
        next(rows, None)  # the header
        for values in rows:
            yield dict(zip(plan.header, values, strict=False))
