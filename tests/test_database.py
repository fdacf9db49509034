"""cattag load and cattag similar on a real DuckDB file and a real PostgreSQL server (with pgvector,
over TCP loopback: tests/local_postgres.py), from real tag Parquet files."""

from __future__ import annotations

import datetime
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines import cli, load, similar
from pipelines.database import connect, parse_url, redact
from schemas import catalogue_db, tags
from tests import local_postgres

LABELS = ["ambient", "breakbeat", "waltz"]
DIM = 4


def unit(v) -> list[float]:
    v = np.asarray(v, dtype=np.float64)
    return (v / np.linalg.norm(v)).astype(np.float32).tolist()


def row(track_id: str, genre: str | None, embedding, *, version: str = "m1", day: int = 1) -> dict:
    silent = genre is None
    return {
        "track_id": track_id, "uri": f"/music/{track_id}.flac", "genre": genre,
        "confidence": 0.0 if silent else 0.9, "top_k": None if silent else [{"label": genre, "score": 0.9}],
        "probabilities": None if silent else [0.05, 0.05, 0.9], "embedding": [0.0] * DIM if silent else unit(embedding),
        "duration_s": 30.0, "n_segments": 0 if silent else 10, "low_confidence": silent,
        "review_reason": "silent" if silent else None, "typicality": None if silent else 0.95,
        "model_version": version, "feature_version": "f1",
        "tagged_at": datetime.datetime(2026, 11, day, tzinfo=datetime.UTC),
    }


def write_tags(folder, rows, *, version: str = "m1", name: str = "run1") -> None:
    schema = tags.tags_schema(labels=LABELS, embedding_dim=DIM, model_version=version, feature_version="f1")
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), folder / f"{tags.TAGS_PREFIX}-{name}-00000-of-00001.parquet")


EMBEDDINGS = {"a": [1, 0, 0, 0], "b": [0.9, 0.1, 0, 0], "c": [0.5, 0.5, 0, 0], "d": [0, 1, 0, 0], "e": [0, 0, 1, 0]}
GENRES = {"a": "waltz", "b": "waltz", "c": "breakbeat", "d": "breakbeat", "e": "ambient"}


@pytest.fixture(scope="session")
def postgres(tmp_path_factory):
    """One server for the session; each test gets its own database on it."""
    with local_postgres.running(tmp_path_factory.mktemp("postgres") / "data") as url:
        yield url


@pytest.fixture(params=["duckdb", "postgresql"])
def db_url(request, tmp_path):
    if request.param == "duckdb":
        return f"duckdb:///{tmp_path / 'catalogue.duckdb'}"  # tmp_path is absolute: four slashes
    return local_postgres.create_database(request.getfixturevalue("postgres"), f"t_{tmp_path.name.lower()}")


@pytest.fixture()
def loaded(tmp_path, db_url):
    write_tags(tmp_path / "tags", [row(t, GENRES[t], e) for t, e in EMBEDDINGS.items()] + [row("quiet", None, None)])
    result = load.main(["--tags", str(tmp_path / "tags"), "--db", db_url])
    return tmp_path, db_url, result


def test_load_fills_the_three_tables_and_a_reload_changes_nothing(loaded):
    tmp_path, url, result = loaded
    assert result.rows == 6 and result.model_versions == ["m1"]
    assert result.counts == {"tracks": 6, "tags": 6, "embeddings": 5}  # the silent track has no embedding
    again = load.main(["--tags", str(tmp_path / "tags"), "--db", url])
    assert again.counts == result.counts


def test_similar_is_exact_cosine_order_without_the_track_itself(loaded):
    _, url, _ = loaded
    database = connect(url)
    try:
        neighbours = database.similar("a", k=3, model_version="m1", exact=True).neighbours
        query = np.asarray(unit(EMBEDDINGS["a"]))
        expected = sorted((t for t in EMBEDDINGS if t != "a"), key=lambda t: -float(query @ unit(EMBEDDINGS[t])))[:3]
        assert [n.track_id for n in neighbours] == expected == ["b", "c", "d"]
        assert neighbours[0].similarity == pytest.approx(float(query @ unit(EMBEDDINGS["b"])), abs=1e-6)
        assert [n.track_id for n in database.similar("a", k=10, model_version="m1", genre="breakbeat").neighbours] == ["c", "d"]
        with pytest.raises(ValueError, match="has no embedding"):
            database.similar("quiet", k=3, model_version="m1")
        with pytest.raises(ValueError, match="not in the database"):
            database.latest_model_version("nope")
    finally:
        database.close()


def test_a_newer_model_sits_beside_the_older_one(loaded):
    tmp_path, url, _ = loaded
    flipped = {t: e[::-1] for t, e in EMBEDDINGS.items()}
    write_tags(tmp_path / "tags", [row(t, GENRES[t], flipped[t], version="m2", day=2) for t in EMBEDDINGS],
               version="m2", name="run2")
    result = load.main(["--tags", str(tmp_path / "tags"), "--db", url])
    assert result.model_versions == ["m1", "m2"]
    assert result.counts == {"tracks": 6, "tags": 11, "embeddings": 10}
    database = connect(url)
    try:
        assert database.latest_model_version("a") == "m2"
        assert [n.track_id for n in database.similar("a", k=1, model_version="m1").neighbours] == ["b"]
    finally:
        database.close()


def test_similar_prints_a_table_or_json(loaded, capsys):
    _, url, _ = loaded
    similar.main(["--db", url, "a", "-k", "2"])
    out = capsys.readouterr().out
    assert "Tracks most like a (model m1" in out and out.index(" b ") < out.index(" c ")
    similar.main(["--db", url, "a", "-k", "2", "--json"])
    payload = json.loads(capsys.readouterr().out)
    assert [n["track_id"] for n in payload["neighbours"]] == ["b", "c"] and payload["model_version"] == "m1"


def test_bad_urls_and_inputs_are_one_line_errors(tmp_path, capsys):
    with pytest.raises(ValueError, match="name the database"):
        parse_url("postgresql://me@localhost:5432")
    with pytest.raises(ValueError, match="expected duckdb:///FILE or postgresql://"):
        parse_url("sqlite:///x.db")
    assert parse_url("postgresql://me@db.example:5432/cat") == ("postgresql", "postgresql://me@db.example:5432/cat")
    assert redact("postgresql://me:s3cret@db.example/cat") == "postgresql://me:***@db.example/cat"
    assert parse_url("duckdb:///rel/cat.duckdb") == ("duckdb", "rel/cat.duckdb")
    assert parse_url("duckdb:////abs/cat.duckdb") == ("duckdb", "/abs/cat.duckdb")
    assert cli.main(["load", "--tags", str(tmp_path), "--db", f"duckdb:///{tmp_path}/x.duckdb"]) == 2
    assert "no tags-*.parquet files" in capsys.readouterr().err


def test_a_later_tagging_of_the_same_track_and_model_replaces_the_row(loaded):
    tmp_path, url, result = loaded
    write_tags(tmp_path / "tags", [row("a", "ambient", EMBEDDINGS["e"], day=5)], name="run9")
    again = load.main(["--tags", str(tmp_path / "tags"), "--db", url])
    assert again.counts == result.counts
    database = connect(url)
    try:
        assert [n.track_id for n in database.similar("a", k=1, model_version="m1").neighbours] == ["e"]
        assert [n.genre for n in database.similar("e", k=1, model_version="m1").neighbours] == ["ambient"]
    finally:
        database.close()


def random_catalogue(folder, *, n: int, dim: int, seed: int = 0) -> None:
    """n tracks with random unit embeddings in three genres (one tag file, one model)."""
    rng = np.random.default_rng(seed)
    rows = [row(f"t{i:04d}", LABELS[i % 3], rng.normal(size=dim)) for i in range(n)]
    schema = tags.tags_schema(labels=LABELS, embedding_dim=dim, model_version="m1", feature_version="f1")
    for r in rows:
        r["embedding"] = unit(r["embedding"])
    folder.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), folder / f"{tags.TAGS_PREFIX}-r-00000-of-00001.parquet")


def _index_scans(url: str) -> int:
    import psycopg

    with psycopg.connect(url, autocommit=True) as con:
        con.execute("SELECT pg_stat_force_next_flush()")
        found = con.execute("SELECT idx_scan FROM pg_stat_user_indexes WHERE indexrelname = %s",
                            [catalogue_db.hnsw_index_name("m1")]).fetchone()
    return -1 if found is None else found[0]


def test_duckdb_and_postgresql_agree_and_the_hnsw_index_is_used(tmp_path, postgres):
    random_catalogue(tmp_path / "tags", n=400, dim=16)
    files = sorted(str(p) for p in (tmp_path / "tags").glob(tags.TAGS_GLOB))
    urls = {"duckdb": f"duckdb:///{tmp_path / 'c.duckdb'}",
            "pgvector": local_postgres.create_database(postgres, "agree_pgvector"),
            "real[]": local_postgres.create_database(postgres, "agree_arrays")}
    stores = {"duckdb": connect(urls["duckdb"]), "pgvector": connect(urls["pgvector"]),
              "real[]": connect(urls["real[]"], pgvector=False)}
    try:
        assert stores["pgvector"].pgvector and not stores["real[]"].pgvector
        for store in stores.values():
            assert store.load(files).counts == {"tracks": 400, "tags": 400, "embeddings": 400}
        recalls = []
        for query in ["t0000", "t0007", "t0123", "t0399"]:
            for genre in (None, "waltz"):
                found = {name: store.similar(query, k=10, model_version="m1", genre=genre, exact=True)
                         for name, store in stores.items()}
                expected = found.pop("duckdb")
                assert expected.method == "exact" and len(expected.neighbours) == 10
                for name, other in found.items():
                    assert other.method == "exact", name
                    assert [n.track_id for n in other.neighbours] == [n.track_id for n in expected.neighbours], name
                    assert [n.similarity for n in other.neighbours] == pytest.approx(
                        [n.similarity for n in expected.neighbours], abs=1e-5), name
                    assert [n.genre for n in other.neighbours] == [n.genre for n in expected.neighbours], name
            approximate = stores["pgvector"].similar(query, k=10, model_version="m1")
            assert approximate.method == "approximate (HNSW index)"
            exact_ids = {n.track_id for n in stores["duckdb"].similar(query, k=10, model_version="m1").neighbours}
            recalls.append(len(exact_ids & {n.track_id for n in approximate.neighbours}) / 10)
        assert np.mean(recalls) >= 0.9, recalls
    finally:
        for store in stores.values():
            store.close()
    assert _index_scans(urls["pgvector"]) >= 4  # the approximate searches went through the index
    reopened = connect(urls["real[]"])  # a REAL[] table stays one, and the user is told why searches are exact
    try:
        assert not reopened.pgvector and "created without pgvector" in reopened.notes[0]
    finally:
        reopened.close()


def test_postgresql_without_an_index_searches_exactly(tmp_path, postgres):
    random_catalogue(tmp_path / "tags", n=50, dim=8)
    url = local_postgres.create_database(postgres, "no_index")
    load.main(["--tags", str(tmp_path / "tags"), "--db", url, "--vector-index", "none"])
    database = connect(url)
    try:
        assert not database.has_index("m1")
        assert database.similar("t0001", k=3, model_version="m1").method == "exact"
    finally:
        database.close()


def test_an_unreachable_postgresql_is_a_one_line_error(tmp_path, capsys):
    random_catalogue(tmp_path / "tags", n=3, dim=4)
    url = "postgresql://cattag:hunter2@127.0.0.1:1/catalogue"  # nothing listens on port 1
    assert cli.main(["load", "--tags", str(tmp_path / "tags"), "--db", url]) == 2
    err = capsys.readouterr().err
    assert "cannot connect to PostgreSQL" in err and "hunter2" not in err and "cattag:***@" in err
