"""What every store shares: the Store interface, result types, errors, and the tag search's SQL (one
text for both stores, so that they rank alike). Imports neither store: they import it.

The tables are declared in schemas/catalogue_db.py (the project's schemas live in schemas/);
database/duckdb_store.py and database/postgres_store.py implement the Store over them.
"""

from __future__ import annotations

import dataclasses
import difflib
import struct
import urllib.parse
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

from schemas import catalogue_db as db

DUCKDB, POSTGRESQL = "duckdb", "postgresql"
VECTOR_INDEXES = ("hnsw", "none")
MATCHES = ("all", "any")


@dataclasses.dataclass(frozen=True)
class Neighbour:
    track_id: str
    genre: str | None
    confidence: float
    similarity: float


@dataclasses.dataclass(frozen=True)
class Search:
    """What `similar` found, and how: "exact" (every embedding of the model compared) or
    "approximate (HNSW index)" (pgvector's index, or the DuckDB file's: fast, may miss a true neighbour)."""
    method: str
    neighbours: list[Neighbour]


@dataclasses.dataclass(frozen=True)
class TagScore:
    tag: str  # as the model spells it
    score: float


@dataclasses.dataclass(frozen=True)
class TaggedTrack:
    track_id: str
    genre: str | None
    confidence: float | None  # None: found by descriptors alone, with no model's tags asked for
    score: float | None  # the mean score of the matched tags: the ranking (None: no tags asked for)
    tags: list[TagScore]  # the matched tags, best first
    bpm: float | None = None
    key: str | None = None
    loudness_lufs: float | None = None


@dataclasses.dataclass(frozen=True)
class DescriptorFilter:
    """What `search` asks of a track's descriptors: a BPM range, one of some keys, a loudness range.
    Tracks without the descriptor asked about do not match."""

    bpm_min: float | None = None
    bpm_max: float | None = None
    keys: tuple[str, ...] = ()
    loudness_min: float | None = None
    loudness_max: float | None = None
    health: str | None = None  # a health flag the track carries ("clipping")

    def __bool__(self) -> bool:
        return any(v is not None for v in (self.bpm_min, self.bpm_max, self.loudness_min, self.loudness_max,
                                           self.health)) or bool(self.keys)

    def where(self, alias: str, placeholder: str, track_id: str | None = None) -> tuple[str, list]:
        """SQL conditions on the descriptors table under `alias` (joined by AND) and on the recordings
        of the track id column `track_id` (default: alias.track_id), and their parameters."""
        track_id = track_id or f"{alias}.track_id"
        p, conditions, params = placeholder, [], []
        for column, bound, op in (("bpm", self.bpm_min, ">="), ("bpm", self.bpm_max, "<="),
                                  ("loudness_lufs", self.loudness_min, ">="), ("loudness_lufs", self.loudness_max, "<=")):
            if bound is not None:
                conditions.append(f"{alias}.{column} {op} {p}")
                params.append(bound)
        if self.keys:
            conditions.append(f"{alias}.key IN ({', '.join([p] * len(self.keys))})")
            params.extend(self.keys)
        if self.health:
            conditions.append(f"EXISTS (SELECT 1 FROM {db.RECORDINGS} h WHERE h.track_id = {track_id} "
                              f"AND h.health_flags LIKE {p})")
            params.append(db.health_pattern(self.health))
        return " AND ".join(conditions) or "TRUE", params

    def ranking(self, alias: str) -> str:
        """Descriptor-only results, nearest the middle of the BPM range first, then by id."""
        if self.bpm_min is not None and self.bpm_max is not None:
            return f"abs({alias}.bpm - {(self.bpm_min + self.bpm_max) / 2!r}), "
        return ""


@dataclasses.dataclass(frozen=True)
class NeighbourFilter:
    """What `similar` asks of a neighbour's descriptors against the track's own: the same key, a tempo
    within a share (0.05 for 5%) or a number of BPM of its tempo."""

    same_key: bool = False
    bpm_within: float | None = None
    bpm_within_is_share: bool = True

    def __bool__(self) -> bool:
        return self.same_key or self.bpm_within is not None

    def join_where(self, neighbour: str, track_id: str, placeholder: str) -> tuple[str, str, list]:
        """(JOIN clause, condition, parameters) keeping the rows whose track id column is `neighbour`."""
        p = placeholder
        join = (f"JOIN {db.DESCRIPTORS} nd ON nd.track_id = {neighbour} "
                f"JOIN {db.DESCRIPTORS} qd ON qd.track_id = {p}")
        conditions = []
        if self.same_key:
            conditions.append("nd.key = qd.key")
        if self.bpm_within is not None:
            reach = "qd.bpm * " + repr(float(self.bpm_within)) if self.bpm_within_is_share else repr(float(self.bpm_within))
            conditions.append(f"abs(nd.bpm - qd.bpm) <= {reach}")
        return join, " AND ".join(conditions), [track_id]

    def check(self, track_id: str, descriptors: tuple | None) -> None:
        """ValueError when the track lacks what the filter compares ((bpm, key) of the track, or None)."""
        bpm, key = descriptors if descriptors else (None, None)
        missing = [name for name, wanted, value in (("key", self.same_key, key), ("tempo", self.bpm_within is not None, bpm))
                   if wanted and value is None]
        if missing:
            raise ValueError(f"track {track_id!r} has no {' or '.join(missing)} in the database (silent, too short, "
                             "or tagged with --descriptors off): drop --same-key / --bpm-within for it")


def without_copies(fetch: Callable[[int], Search], recordings: Callable[[list[str]], dict[str, str]],
                   track_id: str, k: int) -> Search:
    """The k nearest neighbours with the track's own copies left out and one copy per recording (the
    nearest): fetches more candidates until k remain or the model has no more."""
    want = 4 * k + 8
    while True:
        found = fetch(want)
        recording = recordings([track_id, *(n.track_id for n in found.neighbours)])
        own, seen, kept = recording.get(track_id), set(), []
        for neighbour in found.neighbours:
            copy_of = recording.get(neighbour.track_id)
            if copy_of is not None and (copy_of == own or copy_of in seen):
                continue
            seen.add(copy_of)
            kept.append(neighbour)
            if len(kept) == k:
                return Search(found.method, kept)
        if len(found.neighbours) < want:
            return Search(found.method, kept)
        want *= 4


def recordings_query(track_ids: Sequence[str], *, placeholder: str) -> tuple[str, list]:
    return (f"SELECT track_id, recording_id FROM {db.RECORDINGS} "
            f"WHERE track_id IN ({', '.join([placeholder] * len(track_ids))})", list(track_ids))


def parse_bpm_range(text: str) -> tuple[float, float]:
    """'118-126' -> (118.0, 126.0); '120' -> (120.0, 120.0)."""
    parts = text.replace(" ", "").split("-")
    try:
        low, high = (float(parts[0]), float(parts[-1])) if len(parts) in (1, 2) else (None, None)
    except ValueError:
        low = high = None
    if low is None or not 0 < low <= high:
        raise ValueError(f"--bpm {text!r}: expected a range of beats per minute such as 118-126")
    return low, high


def parse_bpm_within(text: str) -> tuple[float, bool]:
    """'5%' -> (0.05, True): a share of the track's tempo; '4' -> (4.0, False): BPM."""
    value = text.strip()
    share = value.endswith("%")
    try:
        number = float(value.rstrip("%"))
    except ValueError:
        number = -1.0
    if number < 0:
        raise ValueError(f"--bpm-within {text!r}: expected a percentage such as 5% or a number of BPM such as 4")
    return (number / 100.0, True) if share else (number, False)


def descriptor_search_query(found: DescriptorFilter, *, k: int, placeholder: str, by_id: str = "t.track_id"
                            ) -> tuple[str, list]:
    """Tracks whose descriptors (and health) match, with no tags asked for: nearest the BPM range's middle
    first, then by id."""
    where, params = found.where("d", placeholder, track_id="t.track_id")
    by_id = by_id.replace("d.track_id", "t.track_id")
    return (f"SELECT t.track_id, d.bpm, d.key, d.loudness_lufs FROM {db.TRACKS} t "
            f"LEFT JOIN {db.DESCRIPTORS} d ON d.track_id = t.track_id WHERE {where} "
            f"ORDER BY {found.ranking('d')}{by_id} LIMIT {placeholder}", [*params, k])


def descriptors_query(track_ids: Sequence[str], *, placeholder: str) -> tuple[str, list]:
    return (f"SELECT track_id, bpm, key, loudness_lufs FROM {db.DESCRIPTORS} "
            f"WHERE track_id IN ({', '.join([placeholder] * len(track_ids))})", list(track_ids))


@dataclasses.dataclass(frozen=True)
class TagSearch:
    """What `search` found: the tracks carrying all (or any) of the tags, by one model version."""
    model_version: str
    latest: bool  # True: the version was not asked for; it is the latest one with track tags
    match: str  # "all" or "any"
    tags: list[str]  # the tags asked for, as the model spells them (one per asked tag)
    tracks: list[TaggedTrack]


@dataclasses.dataclass(frozen=True)
class LoadResult:
    files: int
    rows: int
    model_versions: list[str]
    counts: dict[str, int]  # rows per table after the load
    notes: list[str] = dataclasses.field(default_factory=list)  # what the user should know (no pgvector, ...)


class Store(Protocol):
    """One open recommender database (database.connect returns one); a context manager that closes it:

        with connect(url) as database:
            database.load(files)
    """

    def __enter__(self) -> Store: ...

    def __exit__(self, *exc: object) -> None: ...

    def load(self, files: list[str]) -> LoadResult:
        """Upserts `cattag tag` Parquet files, keyed by (track_id, model_version)."""

    def latest_model_version(self, track_id: str) -> str:
        """The model version that tagged the track last (ValueError when the track is unknown)."""

    def similar(self, track_id: str, *, k: int, model_version: str, genre: str | None = None,
                exact: bool = False, neighbours: NeighbourFilter | None = None,
                include_duplicates: bool = False) -> Search:
        """The k tracks nearest to the track by the cosine similarity of that model's embeddings (among
        those with its key, or its tempo, when `neighbours` asks); without the track's copies and with one
        copy per recording unless include_duplicates."""

    def search(self, tags: list[str], *, k: int, model_version: str | None = None, match: str = "all",
               descriptors: DescriptorFilter | None = None) -> TagSearch:
        """The k tracks carrying all (or any) of the tags and matching the descriptor filter; with no
        tags, the k tracks matching the filter."""

    def close(self) -> None: ...


class ClosesOnExit:
    """`with store:` closes it, whatever happens inside; the stores inherit this."""

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LeavesOutCopies(ClosesOnExit):
    """Store.similar for both stores: their own `_similar` (every copy) and `_recordings` (track id ->
    recording id), with copies left out unless asked for."""

    def similar(self, track_id: str, *, k: int, model_version: str, genre: str | None = None,
                exact: bool = False, neighbours: NeighbourFilter | None = None,
                include_duplicates: bool = False) -> Search:
        def fetch(n: int) -> Search:
            return self._similar(track_id, k=n, model_version=model_version, genre=genre, exact=exact,
                                 neighbours=neighbours)

        return fetch(k) if include_duplicates else without_copies(fetch, self._recordings, track_id, k)


def unknown_track(track_id: str) -> ValueError:
    return ValueError(f"track {track_id!r} is not in the database")


def no_embedding(track_id: str, model_version: str) -> ValueError:
    return ValueError(f"track {track_id!r} has no embedding from model {model_version!r} (not tagged by it, or silent)")


def no_track_tags(model_version: str | None, versions: Sequence[str] = ()) -> ValueError:
    if model_version is None:
        return ValueError("the database has no track tags (tag files written before the `tags` column have none: "
                          "re-tag with a current `cattag tag` and load again)")
    known = f"; versions with tags: {', '.join(versions)}" if versions else ""
    return ValueError(f"model version {model_version!r} has no track tags{known}")


def pick_model_version(versions: Sequence[str], vocabulary_of: Callable[[str], Iterable[str]],
                       tags: Sequence[str], match: str) -> str:
    """The newest of `versions` (newest first) whose track tags include every asked tag (with
    match="any", one of them), case-insensitively: a database holds a multi-label tagger's tags
    ("female vocalists") beside a genre model's, and a search means the model that has those tags.
    The newest version when none has them (resolve_tags then names what is close)."""
    wanted = {tag.strip().casefold() for tag in tags}
    for version in versions:
        known = {tag.casefold() for tag in vocabulary_of(version)}
        if (wanted <= known) if match == "all" else (wanted & known):
            return version
    return versions[0]


def resolve_tags(requested: Sequence[str], vocabulary: Iterable[str], model_version: str) -> list[list[str]]:
    """The model's spellings of each asked tag, matched case-insensitively ("hip-hop" -> ["Hip-Hop"]),
    one group per distinct asked tag. An empty, unknown or misspelt tag is a ValueError that names
    the close known tags."""
    by_key: dict[str, list[str]] = {}
    for spelling in sorted(vocabulary, key=lambda s: (s.casefold(), s)):
        by_key.setdefault(spelling.casefold(), []).append(spelling)
    groups: dict[str, list[str]] = {}
    unknown = []
    for tag in requested:
        key = tag.strip().casefold()
        if not key:
            raise ValueError("a tag is empty")
        if key in by_key:
            groups.setdefault(key, by_key[key])
        elif tag not in unknown:
            unknown.append(tag)
    if unknown:
        raise ValueError("; ".join(_unknown_tag(tag, by_key, model_version) for tag in unknown))
    return list(groups.values())


def _unknown_tag(tag: str, by_key: dict[str, list[str]], model_version: str) -> str:
    close = difflib.get_close_matches(tag.strip().casefold(), list(by_key), n=5, cutoff=0.6)
    if close:
        hint = "close: " + ", ".join(repr(by_key[key][0]) for key in close)
    else:
        names = [spellings[0] for spellings in by_key.values()]
        hint = f"its {len(names)} tags include " + ", ".join(repr(n) for n in names[:8])
    return f"tag {tag!r} is not a tag of model {model_version!r} ({hint})"


def search_query(groups: Sequence[Sequence[str]], *, match: str, k: int, model_version: str, placeholder: str,
                 by_id: str = "m.track_id", descriptors: DescriptorFilter | None = None) -> tuple[str, list]:
    """The SQL (and its parameters) ranking the tracks of a model version that carry all (or any) of
    the tag groups by the mean score of their matched tags, ties by track id, k of them with their
    genre and confidence. The same text runs on DuckDB and PostgreSQL (placeholder "?" or "%s";
    by_id orders the ids bytewise: PostgreSQL needs COLLATE "C" for that).

    The mean is of the REAL scores as float8: a sum of a few float32 values in float64 is exact
    (float32 has 24 significant bits, float64 53), so it does not depend on the order each engine
    adds them in, and the two rank alike, ties included."""
    if match not in MATCHES:
        raise ValueError(f"match {match!r}: expected one of {', '.join(MATCHES)}")
    if k < 1:
        raise ValueError(f"k {k}: expected at least 1")
    spellings = [s for group in groups for s in group]
    p = placeholder
    in_list = ", ".join([p] * len(spellings))
    having, having_params = "", []
    if match == "all":  # every group matched: count the groups, not the spellings
        case = " ".join(f"WHEN {p} THEN {i}" for i, group in enumerate(groups) for _ in group)
        having = f"HAVING count(DISTINCT CASE tag {case} END) = {p}"
        having_params = [*spellings, len(groups)]
    join, where, where_params = "", "", []
    if descriptors:
        condition, where_params = descriptors.where("d", p, track_id="m.track_id")
        join, where = f"LEFT JOIN {db.DESCRIPTORS} d ON d.track_id = m.track_id", f"WHERE {condition}"
    query = f"""SELECT m.track_id, t.genre, t.confidence, m.score FROM (
                    SELECT track_id, avg(CAST(score AS float8)) AS score FROM {db.TRACK_TAGS}
                    WHERE model_version = {p} AND tag IN ({in_list})
                    GROUP BY track_id {having}) m
                JOIN {db.TAGS} t ON t.track_id = m.track_id AND t.model_version = {p}
                {join} {where}
                ORDER BY m.score DESC, {by_id} LIMIT {p}"""
    return query, [model_version, *spellings, *having_params, model_version, *where_params, k]


def matched_tags_query(track_ids: Sequence[str], spellings: Sequence[str], *, model_version: str,
                       placeholder: str) -> tuple[str, list]:
    p = placeholder
    return (f"SELECT track_id, tag, score FROM {db.TRACK_TAGS} WHERE model_version = {p} "
            f"AND track_id IN ({', '.join([p] * len(track_ids))}) AND tag IN ({', '.join([p] * len(spellings))})",
            [model_version, *track_ids, *spellings])


def tag_search(rows, matched, *, groups: Sequence[Sequence[str]], model_version: str, latest: bool,
               match: str, described=()) -> TagSearch:
    """A TagSearch from search_query's rows, matched_tags_query's (track_id, tag, score) rows and
    descriptors_query's (track_id, bpm, key, loudness) rows."""
    by_track: dict[str, list[TagScore]] = {}
    for track_id, tag, score in matched:
        by_track.setdefault(track_id, []).append(TagScore(tag, real(score)))
    descriptors = {r[0]: _descriptor_values(r) for r in described}
    tracks = [TaggedTrack(r[0], r[1], real(r[2]), float(r[3]),
                          sorted(by_track.get(r[0], []), key=lambda t: (-t.score, t.tag)),
                          *descriptors.get(r[0], (None, None, None))) for r in rows]
    return TagSearch(model_version, latest, match, [group[0] for group in groups], tracks)


def descriptor_search(rows) -> TagSearch:
    """A TagSearch of descriptor_search_query's rows (no tags, no model)."""
    return TagSearch("", False, "all", [], [TaggedTrack(r[0], None, None, None, [], *_descriptor_values(r))
                                             for r in rows])


def _descriptor_values(r) -> tuple:
    return (None if r[1] is None else real(r[1]), r[2], None if r[3] is None else real(r[3]))


def real(value) -> float:
    """A REAL column's value as the float32 it is: DuckDB hands over its exact value (0.8999999761581421),
    psycopg parses PostgreSQL's shortest text for it ("0.9") as a float64 (0.9)."""
    return struct.unpack("f", struct.pack("f", value))[0]


def parse_url(url: str) -> tuple[str, str]:
    """(backend, target): ("duckdb", path) or ("postgresql", the URL as libpq takes it)."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme == DUCKDB:
        path = url[len("duckdb:///"):] if url.startswith("duckdb:///") else ""
        if not path:
            raise ValueError(f"--db {url!r}: expected duckdb:///relative/path.duckdb or duckdb:////absolute/path.duckdb")
        return DUCKDB, path
    if parsed.scheme in ("postgresql", "postgres"):
        if not parsed.path.strip("/"):
            raise ValueError(f"--db {redact(url)!r}: name the database, as in postgresql://user@host:5432/catalogue")
        return POSTGRESQL, url
    raise ValueError(f"--db {redact(url)!r}: expected duckdb:///FILE or postgresql://user@host:port/database")


def redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parsed = urllib.parse.urlparse(url)
    if parsed.password is None:
        return url
    netloc = parsed.netloc.replace(f":{parsed.password}@", ":***@", 1)
    return urllib.parse.urlunparse(parsed._replace(netloc=netloc))
