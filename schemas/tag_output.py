"""The tag output folder: what `cattag tag` (batch and watch) writes and every later command reads.

    OUT/tags-<run id>-00000-of-00004.parquet    a batch run's rows (schemas/tags.py: tags_schema)
    OUT/tags-watch-<session>-<window>.parquet   one window of a watch's rows
    OUT/_errors/*.parquet                       the latest run's failed inputs (schemas/failure.py)
    OUT/_runs/<run id>.json                     what each batch run did (RunRecord), for `cattag report`

Dataset readers (Arrow, pandas, Polars, DuckDB) skip the `_` folders, so OUT read whole is its tags.
Everything here goes through Beam's FileSystems: OUT may be local, gs:// or s3://, and `load`, `report`,
`--skip-existing` and the watch list it the same way.
"""

from __future__ import annotations

import dataclasses
import json

import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from schemas.failure import ERRORS_DIR

TAGS_PREFIX = "tags"
TAGS_GLOB = f"{TAGS_PREFIX}-*.parquet"  # batch runs and watch windows alike
WATCH_PREFIX = f"{TAGS_PREFIX}-watch"
RUNS_DIR = "_runs"


@dataclasses.dataclass(frozen=True)
class RunRecord:
    """What one batch run did: OUT/_runs/<run id>.json."""

    run_id: str
    model_version: str
    inputs: int
    skipped: int
    tagged: int
    failed: int
    wall_s: float
    output: str = ""
    low_confidence: int = 0
    audio_s: float = 0.0
    files: int = 0  # tag files the run wrote
    reused: int = 0  # rows that took a held copy's tags (--reuse-duplicates)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> RunRecord:
        """Raises ValueError on a record that is not JSON or lacks a field; ignores fields it does not know."""
        data = json.loads(text)
        names = {field.name for field in dataclasses.fields(cls)}
        required = {field.name for field in dataclasses.fields(cls) if field.default is dataclasses.MISSING}
        missing = required - set(data)
        if missing:
            raise ValueError(f"run record without {', '.join(sorted(missing))}")
        return cls(**{name: data[name] for name in names if name in data})


@dataclasses.dataclass(frozen=True)
class TagOutput:
    """One tag output folder, by its path on any Beam filesystem."""

    path: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", self.path.rstrip("/"))

    # ----------------------------------------------------------------------------------- where things go
    @property
    def tags_pattern(self) -> str:
        """Every tag file, batch and watch (a FileSystems / ReadFromParquet pattern)."""
        return FileSystems.join(self.path, TAGS_GLOB)

    def run_prefix(self, run_id: str) -> str:
        """The shard prefix of one batch run's tag files (the writer adds -SSSSS-of-NNNNN.parquet)."""
        return FileSystems.join(self.path, f"{TAGS_PREFIX}-{run_id}")

    def watch_file(self, name: str) -> str:
        return FileSystems.join(self.path, f"{WATCH_PREFIX}-{name}.parquet")

    @property
    def errors_dir(self) -> str:
        return FileSystems.join(self.path, ERRORS_DIR)

    def errors_prefix(self) -> str:
        """The shard prefix of a batch run's failure files."""
        return FileSystems.join(self.errors_dir, "part")

    def watch_errors_file(self, name: str) -> str:
        return FileSystems.join(self.errors_dir, f"watch-{name}.parquet")

    @property
    def runs_dir(self) -> str:
        return FileSystems.join(self.path, RUNS_DIR)

    def run_record_path(self, run_id: str) -> str:
        return FileSystems.join(self.runs_dir, f"{run_id}.json")

    # ----------------------------------------------------------------------------------------- listing
    def tag_files(self) -> list[str]:
        return _match(self.tags_pattern)

    def run_files(self, run_id: str) -> list[str]:
        return _match(f"{self.run_prefix(run_id)}-*.parquet")

    def error_files(self) -> list[str]:
        return _match(FileSystems.join(self.errors_dir, "*.parquet"))

    # ----------------------------------------------------------------------------------------- reading
    def read_tags(self, columns: list[str] | None = None) -> pa.Table | None:
        """Every tag row (every run, every model version) as one table, or None when there is none."""
        return read_tables(self.tag_files(), columns)

    def count_errors(self) -> int:
        table = read_tables(self.error_files(), ["uri"])
        return table.num_rows if table is not None else 0

    def run_records(self) -> list[RunRecord]:
        """The recorded batch runs, oldest first; a record cut short (a full disk) is left out."""
        records = []
        for path in _match(FileSystems.join(self.runs_dir, "*.json")):
            with FileSystems.open(path) as handle:
                try:
                    records.append(RunRecord.from_json(handle.read().decode("utf-8")))
                except (ValueError, TypeError):
                    continue
        return sorted(records, key=lambda record: record.run_id)

    # ------------------------------------------------------------------------------- before a run writes
    def prepare_batch(self, *, skip_existing: bool, overwrite: bool) -> bool:
        """Checks OUT against a batch run's flags and clears what the run replaces.

        Returns whether the run should skip the inputs OUT already holds (--skip-existing on a folder
        with tags); what it holds is read by the workers, not here. _errors/ always describes the latest
        run: the inputs that failed before are retried now.

        Raises:
            ValueError: OUT holds tags and neither flag says what to do with them, or both are given.
        """
        if skip_existing and overwrite:
            raise ValueError("--skip-existing keeps earlier tags and --overwrite deletes them: choose one")
        files = self.tag_files()
        if files and not (skip_existing or overwrite):
            raise ValueError(f"--output {self.path} already holds tags from an earlier run ({len(files)} file(s)); "
                             "pass --skip-existing to add only what is missing, or --overwrite to replace them")
        self._delete_errors()
        if overwrite:
            if files:
                FileSystems.delete(files)
            if FileSystems.exists(self.runs_dir):  # the records of the runs whose files are gone
                FileSystems.delete([self.runs_dir])
            return False
        return bool(skip_existing and files)

    def prepare_watch(self, *, overwrite: bool) -> None:
        """A watch adds to OUT (what it holds is skipped by content); _errors/ describes this session."""
        if overwrite:
            files = self.tag_files()
            if files:
                FileSystems.delete(files)
        self._delete_errors()
        if not FileSystems.exists(self.path):
            FileSystems.mkdirs(self.path)

    def _delete_errors(self) -> None:
        if FileSystems.exists(self.errors_dir):
            FileSystems.delete([self.errors_dir])


def read_tables(paths: list[str], columns: list[str] | None = None) -> pa.Table | None:
    """Parquet files on any Beam filesystem as one table, or None for no files.

    Files written before a column existed (descriptors, genre_source) read it as nulls."""
    if not paths:
        return None
    tables = []
    for path in paths:
        with FileSystems.open(path) as handle:
            parquet = pq.ParquetFile(handle)
            present = None if columns is None else [c for c in columns if c in parquet.schema_arrow.names]
            tables.append(parquet.read(columns=present))
    table = pa.concat_tables(tables, promote_options="default")
    if columns is not None:
        for name in columns:
            if name not in table.column_names:
                table = table.append_column(name, pa.nulls(table.num_rows))
        table = table.select(columns)
    return table


def _match(pattern: str) -> list[str]:
    return sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)
