"""The recommender database's schema: what `cattag load` writes and `cattag similar` and
`cattag search` read.

    tracks      one row per track id: where it is and how long it lasts (the latest load wins)
    tags        one row per (track_id, model_version): genre, confidence, top-k, review flag
    embeddings  one row per (track_id, model_version): the unit-length track embedding
    reviews     one row per track a person labelled (`cattag review`, then `cattag train --add-labels`): the
                label (null: not music), the genre the model had given, and the model version whose tags
                carried it. A reviewed label outranks any model's: every load gives the track's tags rows
                that genre, with genre_source "review", whichever model's tags are loaded, now or later.
    track_tags  one row per (track_id, model_version, tag): each label the track carries (the tag
                file's `tags` column: every tag over its threshold for a multi-label tagger, the
                genre for a genre classifier) with its score; indexed by (tag, model_version) for
                `cattag search`
    descriptors one row per track id: its tempo, key and loudness (schemas/descriptors.py), from the
                latest loaded row that carries them (a row tagged with --descriptors off, or a silent
                track's, leaves what is there); indexed by bpm and by key for `search` and `similar`
    recordings  one row per track id: the recording it is a copy of (recording_id, duplicate_of: the
                preferred copy) and its health flags, from the latest loaded row that has them; `similar`
                leaves out a track's copies and returns one copy per recording, `search --health` filters

Keyed by (track_id, model_version), so loading the same tags twice changes nothing and a newer
model's tags sit beside the older ones, each queryable by its version. A silent track (no genre,
zero embedding) has a tags row but no embeddings row: it has nothing to be similar by. A track's
track_tags rows are replaced whole by each load of its (track_id, model_version): a re-tagging with
fewer tags drops the others; a silent track, or a tag file written before the `tags` column, has none.
Tags are stored as the model spells them ("Hip-Hop"); `cattag search` matches them case-insensitively.

The same tables exist in DuckDB (the embedded default) and PostgreSQL (production). In PostgreSQL
with pgvector the embedding is a `vector`; each model version gets its own partial HNSW index over
`embedding::vector(D)` (D: that model's embedding size), so models of different sizes share the table
and every index has the fixed dimension pgvector needs. Without pgvector it is a `real[]`.
"""

from __future__ import annotations

import hashlib

TRACKS, TAGS, EMBEDDINGS, TRACK_TAGS, REVIEWS = "tracks", "tags", "embeddings", "track_tags", "reviews"
DESCRIPTORS, RECORDINGS = "descriptors", "recordings"
TABLES = (TRACKS, TAGS, EMBEDDINGS, TRACK_TAGS, REVIEWS, DESCRIPTORS, RECORDINGS)
TRACK_TAGS_INDEX = f"{TRACK_TAGS}_tag"  # (tag, model_version): the tracks carrying a tag, a model's vocabulary


# column -> (DuckDB type, PostgreSQL type, constraint). DuckDB's embedding is a FLOAT list, not a
# fixed-size array, so that models with different embedding sizes share the table; PostgreSQL's is
# filled in by postgres_ddl(): `vector` with pgvector, REAL[] without.
_COLUMNS = {
    TRACKS: {
        "track_id": ("VARCHAR", "TEXT", "PRIMARY KEY"),
        "uri": ("VARCHAR", "TEXT", "NOT NULL"),
        "duration_s": ("DOUBLE", "DOUBLE PRECISION", "NOT NULL"),
    },
    TAGS: {
        "track_id": ("VARCHAR", "TEXT", "NOT NULL"),
        "model_version": ("VARCHAR", "TEXT", "NOT NULL"),
        "genre": ("VARCHAR", "TEXT", ""),
        "confidence": ("REAL", "REAL", "NOT NULL"),
        "top_k": ("JSON", "JSONB", ""),
        "low_confidence": ("BOOLEAN", "BOOLEAN", "NOT NULL"),
        "review_reason": ("VARCHAR", "TEXT", ""),
        "typicality": ("REAL", "REAL", ""),
        "feature_version": ("VARCHAR", "TEXT", "NOT NULL"),
        "tagged_at": ("TIMESTAMPTZ", "TIMESTAMPTZ", "NOT NULL"),
        # Added with reviews (MIGRATIONS adds them to older databases): who set `genre`, "model" or "review",
        # and the genre the model gave.
        "genre_source": ("VARCHAR", "TEXT", ""),
        "model_genre": ("VARCHAR", "TEXT", ""),
    },
    REVIEWS: {
        "track_id": ("VARCHAR", "TEXT", "PRIMARY KEY"),
        "genre": ("VARCHAR", "TEXT", ""),
        "model_genre": ("VARCHAR", "TEXT", ""),
        "model_version": ("VARCHAR", "TEXT", "NOT NULL"),
        "tagged_at": ("TIMESTAMPTZ", "TIMESTAMPTZ", "NOT NULL"),
    },
    EMBEDDINGS: {
        "track_id": ("VARCHAR", "TEXT", "NOT NULL"),
        "model_version": ("VARCHAR", "TEXT", "NOT NULL"),
        "embedding": ("FLOAT[]", None, "NOT NULL"),
    },
    TRACK_TAGS: {
        "track_id": ("VARCHAR", "TEXT", "NOT NULL"),
        "model_version": ("VARCHAR", "TEXT", "NOT NULL"),
        "tag": ("VARCHAR", "TEXT", "NOT NULL"),
        "score": ("REAL", "REAL", "NOT NULL"),
    },
    DESCRIPTORS: {
        "track_id": ("VARCHAR", "TEXT", "PRIMARY KEY"),
        "bpm": ("REAL", "REAL", ""),
        "bpm_confidence": ("REAL", "REAL", ""),
        "bpm_alternatives": ("FLOAT[]", "REAL[]", ""),
        "key": ("VARCHAR", "TEXT", ""),
        "key_confidence": ("REAL", "REAL", ""),
        "camelot": ("VARCHAR", "TEXT", ""),
        "loudness_lufs": ("REAL", "REAL", ""),
        "loudness_range_lu": ("REAL", "REAL", ""),
        "true_peak_dbtp": ("REAL", "REAL", ""),
        "loudness_variation_lu": ("REAL", "REAL", ""),
        "onset_rate": ("REAL", "REAL", ""),
        "descriptor_notes": ("VARCHAR", "TEXT", ""),
        "described_at": ("TIMESTAMPTZ", "TIMESTAMPTZ", "NOT NULL"),
    },
}
_COLUMNS[RECORDINGS] = {
    "track_id": ("VARCHAR", "TEXT", "PRIMARY KEY"),
    "recording_id": ("VARCHAR", "TEXT", "NOT NULL"),
    "duplicate_of": ("VARCHAR", "TEXT", ""),
    # The health flags as "|clipping|gap|" ("||": none), so one LIKE finds a flag in either database.
    "health_flags": ("VARCHAR", "TEXT", ""),
    "checked_at": ("TIMESTAMPTZ", "TIMESTAMPTZ", "NOT NULL"),
}
# The descriptor columns a load copies from tag files (every column of the table but its key and time).
DESCRIPTOR_VALUES = tuple(c for c in _COLUMNS[DESCRIPTORS] if c not in ("track_id", "described_at"))
# A loaded row carries descriptors when any of these is set (not a silent track, not --descriptors off).
CARRIES_DESCRIPTORS = "(bpm IS NOT NULL OR key IS NOT NULL OR loudness_lufs IS NOT NULL)"
_KEYS = {TAGS: ("track_id", "model_version"), EMBEDDINGS: ("track_id", "model_version"),
         TRACK_TAGS: ("track_id", "model_version", "tag")}
_INDEXES = {TRACK_TAGS_INDEX: (TRACK_TAGS, ("tag", "model_version")),
            f"{DESCRIPTORS}_bpm": (DESCRIPTORS, ("bpm",)), f"{DESCRIPTORS}_key": (DESCRIPTORS, ("key",)),
            f"{RECORDINGS}_recording": (RECORDINGS, ("recording_id",))}


def _ddl(dialect: int, embedding_type: str | None = None) -> list[str]:
    statements = []
    for table, columns in _COLUMNS.items():
        lines = [f"{name} {types[dialect] or embedding_type} {types[2]}".rstrip() for name, types in columns.items()]
        if table in _KEYS:
            lines.append(f"PRIMARY KEY ({', '.join(_KEYS[table])})")
        statements.append(f"CREATE TABLE IF NOT EXISTS {table} ({', '.join(lines)})")
    for name, (table, columns) in _INDEXES.items():
        statements.append(f"CREATE INDEX IF NOT EXISTS {name} ON {table} ({', '.join(columns)})")
    # Columns added after the first release: a database created before them gets them here.
    for table, column in ((TAGS, "genre_source"), (TAGS, "model_genre")):
        statements.append(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column} {_COLUMNS[table][column][dialect]}")
    return statements


def duckdb_type(table: str, column: str) -> str:
    return _COLUMNS[table][column][0]


def postgres_type(table: str, column: str) -> str:
    return _COLUMNS[table][column][1]


def duckdb_ddl() -> list[str]:
    """CREATE statements for DuckDB."""
    return _ddl(0)


def postgres_ddl(*, pgvector: bool) -> list[str]:
    """CREATE statements for PostgreSQL: the same columns as duckdb_ddl(), in PostgreSQL types."""
    return _ddl(1, "vector" if pgvector else "REAL[]")


def hnsw_index_name(model_version: str) -> str:
    """A stable, valid identifier for one model version's vector index (versions are free text)."""
    return f"{EMBEDDINGS}_hnsw_{hashlib.sha256(model_version.encode()).hexdigest()[:16]}"


# After a load has put the loaded rows in a temp table `latest` and their tags, one row per (track_id,
# model_version, tag), in `new_tags`: each loaded (track_id, model_version) gets exactly those tags.
# Tags it no longer carries go, changed scores are updated, unchanged rows are left alone (a reload
# writes nothing). PostgreSQL's; DuckDB deletes a load's keys and inserts them again
# (database/duckdb_store.py: its upserts failed on large loads).
REPLACE_TRACK_TAGS = (
    f"""DELETE FROM {TRACK_TAGS} x USING latest l
        WHERE x.track_id = l.track_id AND x.model_version = l.model_version AND NOT EXISTS (
            SELECT 1 FROM new_tags n WHERE n.track_id = x.track_id
            AND n.model_version = x.model_version AND n.tag = x.tag)""",
    f"""INSERT INTO {TRACK_TAGS} SELECT track_id, model_version, tag, score FROM new_tags
        ON CONFLICT (track_id, model_version, tag) DO UPDATE SET score = EXCLUDED.score
        WHERE {TRACK_TAGS}.score IS DISTINCT FROM EXCLUDED.score""",
)


# After a load has put the loaded rows in a temp table `latest` (one per track_id, model_version) and the
# reviews table is up to date: the tags rows to insert, a reviewed label outranking the row's genre.
TAGS_FROM_LATEST = f"""
    SELECT l.track_id, l.model_version,
        CASE WHEN r.track_id IS NULL THEN l.genre ELSE r.genre END,
        CASE WHEN r.track_id IS NULL THEN l.confidence ELSE 1.0 END,
        l.top_k,
        CASE WHEN r.track_id IS NULL THEN l.low_confidence ELSE false END,
        CASE WHEN r.track_id IS NULL THEN l.review_reason END,
        l.typicality, l.feature_version, l.tagged_at,
        CASE WHEN r.track_id IS NULL THEN coalesce(l.genre_source, 'model') ELSE 'review' END,
        coalesce(l.model_genre, l.genre)
    FROM latest l LEFT JOIN {REVIEWS} r USING (track_id)"""
# After a load has put the loaded rows in a temp table `latest`: the newest loaded row per track that
# carries descriptors, as the descriptors table's columns.
DESCRIPTORS_FROM_LATEST = (f"SELECT track_id, {', '.join(DESCRIPTOR_VALUES)}, tagged_at AS described_at FROM latest "
                           f"WHERE {CARRIES_DESCRIPTORS}")

# ... and its copies and health: the rows a run clustered (recording_id set), with the flags written
# "|a|b|" by `flags` (an SQL expression: the databases join a list differently).
def recordings_from_latest(flags: str) -> str:
    return (f"SELECT track_id, recording_id, duplicate_of, {flags}, tagged_at AS checked_at FROM latest "
            "WHERE recording_id IS NOT NULL")


def health_pattern(flag: str) -> str:
    """The LIKE pattern of one flag in recordings.health_flags."""
    return f"%|{flag}|%"


# The loaded rows a person labelled, newest first per track: what the reviews table takes from a load.
REVIEWED_IN_LATEST = ("SELECT track_id, genre, model_genre, model_version, tagged_at FROM latest "
                      "WHERE genre_source = 'review'")
