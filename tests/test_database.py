"""cattag load, cattag similar and cattag search on a real DuckDB file and a real PostgreSQL server (with pgvector,
over TCP loopback: tests/local_postgres.py), from real tag Parquet files."""

from __future__ import annotations

import datetime
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from database import connect, parse_url, redact, vector_index
from database.store import DescriptorFilter, TagScore
from pipelines import cli, load, search, similar
from schemas import catalogue_db, tag_output, tags
from tests import local_postgres

LABELS = ["ambient", "breakbeat", "waltz"]
DIM = 4


def unit(v) -> list[float]:
    v = np.asarray(v, dtype=np.float64)
    return (v / np.linalg.norm(v)).astype(np.float32).tolist()


def row(track_id: str, genre: str | None, embedding, *, version: str = "m1", day: int = 1,
        tagged: list[tuple[str, float]] | None = None) -> dict:
    silent = genre is None
    return {"tags": None if tagged is None else [{"label": t, "score": s} for t, s in tagged],
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
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), folder / f"{tag_output.TAGS_PREFIX}-{name}-00000-of-00001.parquet")


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
    # The silent track has no embedding; these rows have no `tags`, so no track_tags.
    assert result.counts == {"tracks": 6, "tags": 6, "embeddings": 5, "track_tags": 0, "reviews": 0, "descriptors": 0, "recordings": 0}
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
    assert result.counts == {"tracks": 6, "tags": 11, "embeddings": 10, "track_tags": 0, "reviews": 0, "descriptors": 0, "recordings": 0}
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
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), folder / f"{tag_output.TAGS_PREFIX}-r-00000-of-00001.parquet")


def _index_scans(url: str) -> int:
    import psycopg

    with psycopg.connect(url, autocommit=True) as con:
        con.execute("SELECT pg_stat_force_next_flush()")
        found = con.execute("SELECT idx_scan FROM pg_stat_user_indexes WHERE indexrelname = %s",
                            [catalogue_db.hnsw_index_name("m1")]).fetchone()
    return -1 if found is None else found[0]


def test_duckdb_and_postgresql_agree_and_the_hnsw_index_is_used(tmp_path, postgres):
    random_catalogue(tmp_path / "tags", n=400, dim=16)
    files = sorted(str(p) for p in (tmp_path / "tags").glob(tag_output.TAGS_GLOB))
    urls = {"duckdb": f"duckdb:///{tmp_path / 'c.duckdb'}",
            "pgvector": local_postgres.create_database(postgres, "agree_pgvector"),
            "real[]": local_postgres.create_database(postgres, "agree_arrays")}
    stores = {"duckdb": connect(urls["duckdb"]), "pgvector": connect(urls["pgvector"]),
              "real[]": connect(urls["real[]"], pgvector=False)}
    try:
        assert stores["pgvector"].pgvector and not stores["real[]"].pgvector
        for store in stores.values():
            assert store.load(files).counts == {"tracks": 400, "tags": 400, "embeddings": 400, "track_tags": 0,
                                                "reviews": 0, "descriptors": 0, "recordings": 0}
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


# --- cattag search: track_tags -------------------------------------------------------------------

# The labels each track carries (the tag file's `tags` column), best first; "quiet" is silent (null).
TRACK_TAGS = {
    "a": [("chill", 0.9), ("female vocalists", 0.8), ("Mellow", 0.7)],
    "b": [("female vocalists", 0.95), ("chill", 0.6)],
    "c": [("rock", 0.9), ("80s", 0.7)],
    "d": [("chill", 0.85), ("rock", 0.5)],
    "e": [("Hip-Hop", 0.8)],
}


def f32(x: float) -> float:
    """A score as it comes back from a REAL column: the float32 nearest x."""
    return float(np.float32(x))


def expected_ranking(wanted: list[str], *, match: str, catalogue=TRACK_TAGS) -> list[tuple[str, float]]:
    """(track, mean score of its matched tags) best first, ties by id: the ranking computed in Python."""
    found = []
    for track, carried in catalogue.items():
        scores = [f32(s) for t, s in carried or [] if t.lower() in {w.lower() for w in wanted}]
        if scores and (match == "any" or len(scores) == len(wanted)):
            found.append((track, sum(scores) / len(scores)))
    return sorted(found, key=lambda f: (-f[1], f[0]))


def tagged_rows(version: str = "m1", day: int = 1) -> list[dict]:
    return ([row(t, GENRES[t], e, version=version, day=day, tagged=TRACK_TAGS[t]) for t, e in EMBEDDINGS.items()]
            + [row("quiet", None, None, version=version, day=day)])


def track_tags_rows(url: str) -> list[tuple]:
    database = connect(url)
    try:
        return [(r[0], r[1], r[2], f32(r[3])) for r in database._con.execute(  # pylint: disable=protected-access
            "SELECT track_id, model_version, tag, score FROM track_tags ORDER BY 1, 2, 3").fetchall()]
    finally:
        database.close()


def loaded_rows(tmp_path, db_url, rows: list[dict]) -> tuple:
    """(folder, url, LoadResult) after `cattag load` of one tag file of `rows`."""
    write_tags(tmp_path / "tags", rows)
    return tmp_path, db_url, load.main(["--tags", str(tmp_path / "tags"), "--db", db_url])


@pytest.fixture()
def tagged(tmp_path, db_url):
    return loaded_rows(tmp_path, db_url, tagged_rows())


def test_load_fills_track_tags_from_the_tags_column_and_a_reload_changes_nothing(tagged):
    tmp_path, url, result = tagged
    # None for the silent track.
    assert result.counts == {"tracks": 6, "tags": 6, "embeddings": 5, "track_tags": 10, "reviews": 0, "descriptors": 0, "recordings": 0}
    before = track_tags_rows(url)
    assert [r for r in before if r[0] == "a"] == [("a", "m1", "Mellow", f32(0.7)), ("a", "m1", "chill", f32(0.9)),
                                                  ("a", "m1", "female vocalists", f32(0.8))]
    assert not [r for r in before if r[0] == "quiet"]
    again = load.main(["--tags", str(tmp_path / "tags"), "--db", url])
    assert again.counts == result.counts
    assert track_tags_rows(url) == before


def test_search_all_and_any_rank_by_the_mean_score_of_the_matched_tags(tagged):
    _, url, _ = tagged
    database = connect(url)
    try:
        found = database.search(["chill", "female vocalists"], k=10, match="all")
        assert found.model_version == "m1" and found.latest and found.match == "all"
        assert [(t.track_id, t.score) for t in found.tracks] == expected_ranking(["chill", "female vocalists"],
                                                                                 match="all")
        assert [t.track_id for t in found.tracks] == ["a", "b"]  # c, d, e lack one tag or both
        a, b = found.tracks
        assert (a.genre, a.confidence) == ("waltz", f32(0.9))
        assert a.tags == [TagScore("chill", f32(0.9)), TagScore("female vocalists", f32(0.8))]  # best first
        assert b.tags == [TagScore("female vocalists", f32(0.95)), TagScore("chill", f32(0.6))]
        assert b.score == pytest.approx((0.95 + 0.6) / 2)

        anything = database.search(["chill", "rock"], k=10, model_version="m1", match="any")
        assert not anything.latest
        # a and c tie at 0.9 (ties by track id); d's mean 0.675 ranks above b's single 0.6.
        assert [(t.track_id, t.score) for t in anything.tracks] == expected_ranking(["chill", "rock"], match="any")
        assert [t.track_id for t in anything.tracks] == ["a", "c", "d", "b"]
        assert [t.track_id for t in database.search(["chill", "rock"], k=2, match="any").tracks] == ["a", "c"]
        assert database.search(["rock", "Hip-Hop"], k=10, match="all").tracks == []
    finally:
        database.close()


def test_search_matches_tags_case_insensitively_and_reports_the_models_spelling(tagged):
    _, url, _ = tagged
    database = connect(url)
    try:
        found = database.search(["hip-hop"], k=5)
        assert [t.track_id for t in found.tracks] == ["e"] and found.tags == ["Hip-Hop"]
        assert found.tracks[0].tags == [TagScore("Hip-Hop", f32(0.8))]
        mixed = database.search(["MELLOW", "Chill", "chill"], k=5)  # the same tag twice counts once
        assert mixed.tags == ["Mellow", "chill"] and [t.track_id for t in mixed.tracks] == ["a"]
        assert mixed.tracks[0].score == pytest.approx((f32(0.9) + f32(0.7)) / 2)
    finally:
        database.close()


def test_an_unknown_tag_is_an_error_naming_close_known_tags(tagged, capsys):
    _, url, _ = tagged
    database = connect(url)
    try:
        with pytest.raises(ValueError, match=r"tag 'chil' is not a tag of model 'm1' \(close: 'chill'\)"):
            database.search(["chil", "rock"], k=5, match="any")
        with pytest.raises(ValueError, match=r"'zzzz' is not a tag of model 'm1' \(its 6 tags include '80s', 'chill', "
                                             r"'female vocalists', 'Hip-Hop', 'Mellow', 'rock'\)$"):
            database.search(["zzzz"], k=5)
        with pytest.raises(ValueError, match=r"model version 'm9' has no track tags; versions with tags: m1"):
            database.search(["chill"], k=5, model_version="m9")
    finally:
        database.close()
    assert cli.main(["search", "--db", url, "--tag", "female vocalist"]) == 2
    err = capsys.readouterr().err
    assert "cattag search: error: tag 'female vocalist' is not a tag of model 'm1' (close: 'female vocalists')" in err


def test_a_retagging_replaces_the_tracks_tags(tagged):
    tmp_path, url, result = tagged
    # a, tagged again (later) by the same model, now carries one tag with a new score; b is now silent.
    write_tags(tmp_path / "tags", [row("a", "waltz", EMBEDDINGS["a"], day=5, tagged=[("chill", 0.5)]),
                                   row("b", None, None, day=5)], name="run9")
    again = load.main(["--tags", str(tmp_path / "tags"), "--db", url])
    assert again.counts["track_tags"] == result.counts["track_tags"] - 2 - 2
    assert [r for r in track_tags_rows(url) if r[0] in ("a", "b")] == [("a", "m1", "chill", f32(0.5))]
    database = connect(url)
    try:
        with pytest.raises(ValueError, match="'female vocalists' is not a tag of model 'm1'"):  # no track has it now
            database.search(["female vocalists"], k=5)
        assert [t.track_id for t in database.search(["rock", "chill"], k=5, match="any").tracks] == ["c", "d", "a"]
        assert [(t.track_id, t.score) for t in database.search(["chill"], k=5).tracks] == [("d", f32(0.85)),
                                                                                           ("a", f32(0.5))]
    finally:
        database.close()


def old_tag_file(folder, rows, *, version: str, name: str) -> None:
    """A tag file as `cattag tag` wrote it before the `tags` column existed."""
    schema = tags.tags_schema(labels=LABELS, embedding_dim=DIM, model_version=version, feature_version="f1")
    schema = schema.remove(schema.get_field_index("tags"))
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist([{k: v for k, v in r.items() if k != "tags"} for r in rows], schema=schema),
                   folder / f"{tag_output.TAGS_PREFIX}-{name}-00000-of-00001.parquet")


@pytest.mark.parametrize("old_first", [True, False], ids=["old-file-first", "new-file-first"])
def test_tag_files_without_the_tags_column_still_load(tmp_path, db_url, old_first):
    # Files sort by name: "a-old" before "b-new" or after "0-new".
    old_rows = [row(t, GENRES[t], EMBEDDINGS[t], version="m0") for t in ("a", "b")]
    old_tag_file(tmp_path / "tags", old_rows, version="m0", name="a-old")
    write_tags(tmp_path / "tags", tagged_rows(), name="b-new" if old_first else "0-new")
    result = load.main(["--tags", str(tmp_path / "tags"), "--db", db_url])
    assert result.model_versions == ["m0", "m1"]
    # None from the old file.
    assert result.counts == {"tracks": 6, "tags": 8, "embeddings": 7, "track_tags": 10, "reviews": 0, "descriptors": 0, "recordings": 0}
    assert {r[1] for r in track_tags_rows(db_url)} == {"m1"}
    database = connect(db_url)
    try:
        assert [t.track_id for t in database.search(["chill", "female vocalists"], k=5).tracks] == ["a", "b"]
        with pytest.raises(ValueError, match="'m0' has no track tags; versions with tags: m1"):
            database.search(["chill"], k=5, model_version="m0")
    finally:
        database.close()


def test_only_old_tag_files_load_and_search_says_there_are_no_tags(tmp_path, db_url):
    old_tag_file(tmp_path / "tags", [row(t, GENRES[t], EMBEDDINGS[t]) for t in EMBEDDINGS], version="m1", name="old")
    assert load.main(["--tags", str(tmp_path / "tags"), "--db", db_url]).counts == {
        "tracks": 5, "tags": 5, "embeddings": 5, "track_tags": 0, "reviews": 0, "descriptors": 0, "recordings": 0}
    database = connect(db_url)
    try:
        with pytest.raises(ValueError, match="the database has no track tags"):
            database.search(["chill"], k=5)
    finally:
        database.close()


def test_search_defaults_to_the_latest_model_version_with_track_tags(tagged):
    tmp_path, url, _ = tagged
    # m2 (day 2) tags a differently; m3 (day 3, newest) was written before the tags column: it has none.
    retagged = dict(TRACK_TAGS, a=[("chill", 0.1)], b=[("chill", 0.2)])
    write_tags(tmp_path / "tags", [row(t, GENRES[t], EMBEDDINGS[t], version="m2", day=2, tagged=retagged[t])
                                   for t in EMBEDDINGS], version="m2", name="run2")
    old_tag_file(tmp_path / "tags", [row("a", "waltz", EMBEDDINGS["a"], version="m3", day=3)], version="m3",
                 name="run3")
    load.main(["--tags", str(tmp_path / "tags"), "--db", url])
    database = connect(url)
    try:
        latest = database.search(["chill"], k=10)
        assert latest.model_version == "m2" and latest.latest
        assert [(t.track_id, t.score) for t in latest.tracks] == expected_ranking(["chill"], match="any",
                                                                                  catalogue=retagged)
        assert [t.track_id for t in latest.tracks] == ["d", "b", "a"]
        assert [t.track_id for t in database.search(["chill"], k=10, model_version="m1").tracks] == ["a", "d", "b"]
    finally:
        database.close()


def test_search_defaults_to_the_latest_model_version_that_has_the_tags(tagged):
    """A genre model (tags: its genres) loaded after the tagger: a search for the tagger's tags means
    the tagger; a search for the genre model's genres means the genre model."""
    tmp_path, url, _ = tagged
    genres = {t: [(GENRES[t], 0.99)] for t in EMBEDDINGS}
    write_tags(tmp_path / "tags", [row(t, GENRES[t], EMBEDDINGS[t], version="genre-model", day=2, tagged=genres[t])
                                   for t in EMBEDDINGS], version="genre-model", name="run2")
    load.main(["--tags", str(tmp_path / "tags"), "--db", url])
    database = connect(url)
    try:
        assert database.search(["chill", "Female Vocalists"], k=10).model_version == "m1"
        assert database.search(["waltz"], k=10).model_version == "genre-model"
        assert database.search(["chill", "Hip-Hop"], k=10, match="any").model_version == "m1"
        with pytest.raises(ValueError, match="'chill' is not a tag of model 'genre-model'"):
            database.search(["waltz", "chill"], k=10)  # no model has both: the newest, and its error
    finally:
        database.close()


def test_search_prints_a_table_or_json(tagged, capsys):
    _, url, _ = tagged
    assert cli.main(["search", "--db", url, "--tag", "Chill", "--tag", "female vocalists"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == ("Tracks tagged chill and female vocalists (model m1, the latest with these tags; "
                        "ranked by the mean score of the matched tags):")
    assert lines[1].split() == ["track", "genre", "confidence", "score", "bpm", "key", "LUFS", "tags"]
    # No descriptors loaded for these tracks: dashes.
    assert lines[2].split() == ["a", "waltz", "0.90", "0.850", "-", "-", "-", "chill", "0.90,", "female", "vocalists",
                                "0.80"]
    assert lines[3].split()[:4] == ["b", "waltz", "0.90", "0.775"] and len(lines) == 4
    assert cli.main(["search", "--db", url, "--tag", "rock", "--tag", "chill", "--any", "-k", "3",
                     "--model-version", "m1", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["model_version"] == "m1" and payload["latest"] is False and payload["match"] == "any"
    assert [t["track_id"] for t in payload["tracks"]] == ["a", "c", "d"]
    assert payload["tracks"][2]["tags"] == [{"tag": "chill", "score": f32(0.85)}, {"tag": "rock", "score": f32(0.5)}]
    assert cli.main(["search", "--db", url, "--tag", "rock", "--tag", "Hip-Hop"]) == 0
    assert "(no track carries all of these tags)" in capsys.readouterr().out
    assert cli.main(["search", "--db", url, "--tag", "rock", "-k", "0"]) == 2
    assert "-k 0: expected at least 1" in capsys.readouterr().err


def random_tagged_catalogue(folder, *, n: int, seed: int = 0) -> list[str]:
    """n tracks, each carrying 0 to 6 of 20 tags (mixed case), scores from a coarse grid so that
    means tie often; some tracks silent. Returns the vocabulary."""
    rng = np.random.default_rng(seed)
    vocabulary = [f"Tag{i:02d}" if i % 3 == 0 else f"tag {i:02d}" for i in range(20)]
    rows = []
    for i in range(n):
        track = f"t{i:04d}"
        if i % 17 == 0:
            rows.append(row(track, None, None))
            continue
        chosen = rng.choice(len(vocabulary), size=rng.integers(0, 7), replace=False)
        carried = sorted(((vocabulary[j], float(rng.integers(1, 9)) / 8 - 0.01 * float(rng.integers(0, 3)))
                          for j in chosen), key=lambda t: -t[1])
        rows.append(row(track, LABELS[i % 3], rng.normal(size=DIM), tagged=carried))
    write_tags(folder, rows)
    return vocabulary


def test_duckdb_and_postgresql_search_alike(tmp_path, postgres):
    vocabulary = random_tagged_catalogue(tmp_path / "tags", n=600)
    urls = {"duckdb": f"duckdb:///{tmp_path / 'c.duckdb'}",
            "postgresql": local_postgres.create_database(postgres, "search_agree")}
    for url in urls.values():
        load.main(["--tags", str(tmp_path / "tags"), "--db", url])
    assert track_tags_rows(urls["duckdb"]) == track_tags_rows(urls["postgresql"])
    stores = {name: connect(url) for name, url in urls.items()}
    rng = np.random.default_rng(1)
    try:
        ties = 0
        for _ in range(12):
            wanted = [str(t).upper() for t in rng.choice(vocabulary, size=rng.integers(1, 4), replace=False)]
            for match in ("all", "any"):
                found = {name: store.search(wanted, k=25, match=match) for name, store in stores.items()}
                assert found["duckdb"] == found["postgresql"], (wanted, match)
                assert found["duckdb"].tracks or match == "all"
                scores = [t.score for t in found["duckdb"].tracks]
                assert scores == sorted(scores, reverse=True)
                ties += len(scores) - len(set(scores))
        assert ties > 0  # the tie-break by track id was exercised
    finally:
        for store in stores.values():
            store.close()


def test_postgres_stages_a_file_a_batch_at_a_time_with_the_same_rows(tmp_path):
    from database.postgres_store import _staged_rows

    write_tags(tmp_path / "tags", [row(t, GENRES[t], e) for t, e in EMBEDDINGS.items()] + [row("quiet", None, None)])
    path = str(next((tmp_path / "tags").glob("*.parquet")))
    whole = list(_staged_rows(path))
    assert len(whole) == 6
    assert list(_staged_rows(path, batch_rows=2)) == whole  # three batches, same COPY tuples


def test_a_bulk_load_rebuilds_the_hnsw_index_after_its_rows_and_a_small_one_updates_it(tmp_path, postgres,
                                                                                       monkeypatch):
    from database import postgres_store

    monkeypatch.setattr(postgres_store, "BULK_ROWS", 50)
    random_catalogue(tmp_path / "first", n=100, dim=8)
    random_catalogue(tmp_path / "bulk", n=200, dim=8, seed=1)  # same ids t0000..t0099 replaced, 100 new
    url = local_postgres.create_database(postgres, "bulk_rebuild")
    database = connect(url)
    try:
        first = database.load(sorted(str(p) for p in (tmp_path / "first").glob(tag_output.TAGS_GLOB)))
        assert database.has_index("m1") and not any("rebuilt" in n for n in first.notes)
        bulk = database.load(sorted(str(p) for p in (tmp_path / "bulk").glob(tag_output.TAGS_GLOB)))
        assert any("200 rows of m1 loaded at once" in n for n in bulk.notes), bulk.notes
        assert database.has_index("m1") and bulk.counts["embeddings"] == 200
        found = database.similar("t0150", k=5, model_version="m1")
        assert found.method == "approximate (HNSW index)" and len(found.neighbours) == 5
        small = tmp_path / "small"
        small.mkdir()  # one more track: too few to rebuild, the index is updated
        schema = tags.tags_schema(labels=LABELS, embedding_dim=8, model_version="m1", feature_version="f1")
        pq.write_table(pa.Table.from_pylist([row("late", LABELS[0], unit(np.ones(8)))], schema=schema),
                       small / f"{tag_output.TAGS_PREFIX}-s-00000-of-00001.parquet")
        notes_before = len(database.notes)
        database.load(sorted(str(p) for p in small.glob(tag_output.TAGS_GLOB)))
        assert len(database.notes) == notes_before and database.has_index("m1")
    finally:
        database.close()


def _duckdb_index_files(database_file) -> list[str]:
    return sorted(p.name for p in database_file.parent.glob(f"{database_file.name}.vectors/*"))


def test_duckdb_builds_a_vector_index_updates_it_and_never_searches_a_stale_one(tmp_path):
    import duckdb

    random_catalogue(tmp_path / "tags", n=400, dim=16)
    path = tmp_path / "c.duckdb"
    # Tests' catalogues are small: an index from 300 embeddings, in shards of 150 (here 150, 150, 100).
    database = connect(f"duckdb:///{path}", index_min_rows=300, index_shard_rows=150)
    try:
        first = database.load(sorted(str(p) for p in (tmp_path / "tags").glob(tag_output.TAGS_GLOB)))
        assert first.notes == ["model m1: HNSW vector index built over 400 embeddings"]
        assert len(_duckdb_index_files(path)) == 7  # manifest, and per shard its graph and per-track arrays
        built = _duckdb_index_files(path)
        folder = path.parent / f"{path.name}.vectors"  # files "<slug>-<generation>-<shard>.*"
        key = vector_index.track_keys(["t0123"])[0]
        holding_t0123 = {name.split(".")[0].rsplit("-", 1)[1] for name in built
                         if name.endswith(".npz") and key in np.load(folder / name)["keys"]}
        recalls = []
        for query in ["t0000", "t0007", "t0123", "t0399"]:
            approximate = database.similar(query, k=10, model_version="m1")
            exact = database.similar(query, k=10, model_version="m1", exact=True)
            assert approximate.method == "approximate (HNSW index)" and exact.method == "exact"
            assert query not in {n.track_id for n in approximate.neighbours} and len(approximate.neighbours) == 10
            exact_by_id = {n.track_id: n for n in exact.neighbours}
            recalls.append(len(exact_by_id.keys() & {n.track_id for n in approximate.neighbours}) / 10)
            for n in approximate.neighbours:  # the index's float32 cosine is the exact one
                if n.track_id in exact_by_id:
                    assert n.similarity == pytest.approx(exact_by_id[n.track_id].similarity, abs=1e-6)
                    assert n.genre == exact_by_id[n.track_id].genre
        assert np.mean(recalls) >= 0.9, recalls
        assert database.similar("t0007", k=5, model_version="m1", genre="waltz").method == "exact"

        # A small load updates the index: a twin of t0007 arrives, t0123 falls silent.
        twin = pq.read_table(next((tmp_path / "tags").glob(tag_output.TAGS_GLOB))).to_pylist()[7]["embedding"]
        schema = tags.tags_schema(labels=LABELS, embedding_dim=16, model_version="m1", feature_version="f1")
        small = [row("twin", "waltz", twin, day=2), {**row("t0123", None, None, day=2), "embedding": [0.0] * 16}]
        (tmp_path / "small").mkdir()
        pq.write_table(pa.Table.from_pylist(small, schema=schema),
                       tmp_path / "small" / f"{tag_output.TAGS_PREFIX}-s-00000-of-00001.parquet")
        database.load([str(p) for p in (tmp_path / "small").glob(tag_output.TAGS_GLOB)])
        found = database.similar("t0007", k=3, model_version="m1")
        assert found.method == "approximate (HNSW index)"
        assert found.neighbours[0].track_id == "twin" and found.neighbours[0].similarity == pytest.approx(1.0)
        assert found.neighbours[0].genre == "waltz" and found.neighbours[0].confidence == pytest.approx(0.9)
        with pytest.raises(ValueError, match="no embedding"):  # silent now: not in the index, nor in the table
            database.similar("t0123", k=3, model_version="m1")
        manifest = json.loads(next(path.parent.glob(f"{path.name}.vectors/*.json")).read_text())
        assert manifest["size"] == manifest["rows"] == 400 and manifest["generation"] == 2
        # Only the shards the load touched were rewritten: the last (100 tracks, room for the twin)
        # and the one that held t0123; any other kept its files.
        touched = {"2"} | holding_t0123
        rewritten = {name.split(".")[0].rsplit("-", 1)[1] for name in set(_duckdb_index_files(path)) - set(built)}
        assert len(holding_t0123) == 1 and rewritten == touched and all("-2-" in n for n in set(_duckdb_index_files(path)) - set(built))
        assert len(_duckdb_index_files(path)) == 7
        assert all("t0123" not in {n.track_id for n in database.similar(q, k=10, model_version="m1").neighbours}
                   for q in ["t0000", "t0122", "t0124"])
    finally:
        database.close()

    # A change the index did not see (here: a row deleted behind cattag's back): exact, never a stale answer.
    with duckdb.connect(str(path)) as con:
        con.execute("DELETE FROM embeddings WHERE track_id = 'twin'")
    database = connect(f"duckdb:///{path}", index_min_rows=300, index_shard_rows=150)
    try:
        found = database.similar("t0007", k=3, model_version="m1")
        assert found.method == "exact" and "twin" not in {n.track_id for n in found.neighbours}
    finally:
        database.close()
    database = connect(f"duckdb:///{path}", vector_index="none")  # --vector-index none removes the files
    try:
        database.load([str(p) for p in (tmp_path / "small").glob(tag_output.TAGS_GLOB)])
        assert _duckdb_index_files(path) == []
    finally:
        database.close()


def test_duckdb_readers_share_a_file_need_it_to_exist_and_writers_wait_for_the_lock(tmp_path, capsys):
    import multiprocessing
    import time

    from database.duckdb_store import DuckDB

    missing = tmp_path / "absent.duckdb"
    assert cli.main(["similar", "a", "--db", f"duckdb:///{missing}"]) == 2
    assert "no such database file" in capsys.readouterr().err and not missing.exists()  # not created

    write_tags(tmp_path / "tags", [row(t, GENRES[t], e) for t, e in EMBEDDINGS.items()])
    path = tmp_path / "c.duckdb"
    load.main(["--tags", str(tmp_path / "tags"), "--db", f"duckdb:///{path}"])
    readers = [connect(f"duckdb:///{path}", read_only=True) for _ in range(2)]  # two readers at once
    try:
        assert [r.similar("a", k=1, model_version="m1").neighbours[0].track_id for r in readers] == ["b", "b"]
    finally:
        for reader in readers:
            reader.close()

    # Another process holds the file for writing: a second writer waits, then names it.
    spawn = multiprocessing.get_context("spawn")
    ready, release = spawn.Event(), spawn.Event()
    holder = spawn.Process(target=_hold_duckdb, args=(str(path), ready, release))
    holder.start()
    try:
        assert ready.wait(60)
        started = time.monotonic()
        with pytest.raises(TimeoutError, match=rf"in use by another process, PID {holder.pid}"):
            DuckDB(str(path), lock_timeout_s=1.5)
        assert time.monotonic() - started >= 1.5
    finally:
        release.set()
        holder.join(60)
    DuckDB(str(path), lock_timeout_s=1.5).close()  # free again


def _hold_duckdb(path: str, ready, release) -> None:
    import duckdb

    con = duckdb.connect(path)
    ready.set()
    release.wait(60)
    con.close()


def test_a_duckdb_load_replacing_many_rows_commits_in_parts_with_the_same_result(tmp_path, monkeypatch, caplog):
    """DuckDB holds what one transaction replaces in memory: a load replacing more than REPLACE_ROWS
    rows commits in parts (by track id), and the database ends as one transaction would leave it."""
    import duckdb

    from database import duckdb_store

    random_catalogue(tmp_path / "first", n=400, dim=16)
    rng = np.random.default_rng(5)  # all 400 re-tagged later, every tenth now silent, plus 20 new tracks
    again = [row(f"t{i:04d}", None if i % 10 == 0 else LABELS[(i + 1) % 3], rng.normal(size=16), day=2,
                 tagged=[("calm", 0.25 + i / 1000)]) for i in range(420)]
    for r in again:
        r["embedding"] = unit(r["embedding"]) if r["genre"] else [0.0] * 16
    (tmp_path / "again").mkdir()
    schema = tags.tags_schema(labels=LABELS, embedding_dim=16, model_version="m1", feature_version="f1")
    pq.write_table(pa.Table.from_pylist(again, schema=schema), tmp_path / "again" / f"{tag_output.TAGS_PREFIX}-a-00000-of-00001.parquet")

    def contents(path) -> dict:
        with duckdb.connect(str(path), read_only=True) as con:
            return {table: con.execute(f"SELECT * FROM {table} ORDER BY ALL").fetchall() for table in catalogue_db.TABLES}

    results = {}
    for name, replace_rows in [("one", duckdb_store.REPLACE_ROWS), ("parts", 150)]:
        monkeypatch.setattr(duckdb_store, "REPLACE_ROWS", replace_rows)
        url = f"duckdb:///{tmp_path / name}.duckdb"
        load.main(["--tags", str(tmp_path / "first"), "--db", url])
        caplog.clear()
        with caplog.at_level("INFO"):
            result = load.main(["--tags", str(tmp_path / "again"), "--db", url])
        assert ("committing in 3 parts" in caplog.text) == (name == "parts")  # 400 replaced, 150 a part
        results[name] = contents(tmp_path / f"{name}.duckdb")
    assert results["parts"] == results["one"]
    assert result.counts == {"tracks": 420, "tags": 420, "embeddings": 378, "track_tags": 420, "reviews": 0,
                             "descriptors": 0, "recordings": 0}
    assert {r[2] for r in results["parts"][catalogue_db.TAGS]} == {*LABELS, None}


def _query(url: str, sql: str) -> list[tuple]:
    with connect(url) as database:
        return sorted(database._con.execute(sql).fetchall(), key=str)  # pylint: disable=protected-access


def test_a_reviewed_label_outranks_every_models_genre_now_and_later(tmp_path, db_url):
    reviewed = [row(t, GENRES[t], EMBEDDINGS[t], version="m2", day=2) for t in ("a", "b", "c")]
    reviewed[0].update(genre="breakbeat", confidence=1.0, genre_source="review", model_genre="waltz")
    reviewed[1].update(genre=None, confidence=1.0, genre_source="review", model_genre="waltz")  # not music
    reviewed[2].update(genre_source="model", model_genre=GENRES["c"])
    write_tags(tmp_path / "tags", reviewed, version="m2", name="run2")
    write_tags(tmp_path / "tags", [row(t, GENRES[t], EMBEDDINGS[t]) for t in ("a", "b", "c")], name="run1")
    result = load.main(["--tags", str(tmp_path / "tags"), "--db", db_url])
    assert result.counts["reviews"] == 2
    assert _query(db_url, "SELECT track_id, genre, model_genre FROM reviews") == [
        ("a", "breakbeat", "waltz"), ("b", None, "waltz")]
    expected = {("a", "breakbeat", "review"), ("b", None, "review"), ("c", "breakbeat", "model")}
    # M1's rows (written before any review, genre_source absent) follow the review too.
    assert set(_query(db_url, "SELECT track_id, genre, genre_source FROM tags WHERE model_version = 'm1'")) == expected
    assert set(_query(db_url, "SELECT track_id, genre, genre_source FROM tags WHERE model_version = 'm2'")) == expected
    # A later model's tags, loaded on their own, do not undo the review; a reload changes nothing.
    write_tags(tmp_path / "later", [row("a", "waltz", EMBEDDINGS["a"], version="m3", day=3)], version="m3")
    later = load.main(["--tags", str(tmp_path / "later"), "--db", db_url])
    assert _query(db_url, "SELECT genre, genre_source, model_genre, confidence FROM tags WHERE model_version = 'm3'") \
        == [("breakbeat", "review", "waltz", 1.0)]
    assert load.main(["--tags", str(tmp_path / "tags"), "--db", db_url]).counts == later.counts


# ------------------------------------------------------------------------------------ descriptors in the database
DESCRIBED = {  # track -> (bpm, key, loudness LUFS)
    "a": (120.0, "A minor", -8.0), "b": (124.0, "C major", -12.0), "c": (126.5, "E minor", -7.5),
    "d": (90.0, "A minor", -14.0), "e": (121.0, "F# major", -9.5),
}


def described_rows(version: str = "m1", day: int = 1, *, off: tuple[str, ...] = ()) -> list[dict]:
    rows = tagged_rows(version, day)
    for r in rows:
        if r["track_id"] in DESCRIBED and r["track_id"] not in off:
            bpm, key, lufs = DESCRIBED[r["track_id"]]
            r.update(bpm=bpm, bpm_confidence=0.5, bpm_alternatives=[bpm / 2, bpm * 2], key=key, key_confidence=0.8,
                     camelot="8A", loudness_lufs=lufs, loudness_range_lu=5.0, true_peak_dbtp=-1.0,
                     loudness_variation_lu=2.0, onset_rate=3.0)
        elif r["track_id"] in off:
            r["descriptor_notes"] = "descriptors off"
        else:  # the silent track
            r["descriptor_notes"] = "bpm: no onsets (silent or steady sound); key: no pitched content"
    return rows


@pytest.fixture()
def described(tmp_path, db_url):
    return loaded_rows(tmp_path, db_url, described_rows())


def test_load_keeps_descriptors_per_track_and_a_retagging_without_them_leaves_them(described):
    tmp_path, url, result = described
    assert result.counts["descriptors"] == 5  # none for the silent track
    again = load.main(["--tags", str(tmp_path / "tags"), "--db", url])
    assert again.counts == result.counts
    # A newer model's tags written with --descriptors off: the audio's descriptors stay as they were.
    write_tags(tmp_path / "tags", described_rows("m2", day=2, off=("a", "b")), version="m2", name="run2")
    assert load.main(["--tags", str(tmp_path / "tags"), "--db", url]).counts["descriptors"] == 5
    with connect(url, read_only=True) as database:
        found = database.search([], k=10, descriptors=DescriptorFilter(keys=("A minor",)))
    assert [(t.track_id, t.bpm, t.key, t.loudness_lufs) for t in found.tracks] == [
        ("a", 120.0, "A minor", -8.0), ("d", 90.0, "A minor", -14.0)]


def test_search_filters_by_tempo_key_and_loudness_with_or_without_tags(described, capsys):
    _, url, _ = described
    out = search.main(["--db", url, "--bpm", "118-126", "--json"])
    # Nearest the middle of the range (122) first, ties by id; c (126.5) and d (90) are outside it.
    assert [t["track_id"] for t in out_json(capsys)["tracks"]] == ["e", "a", "b"] and out.tracks[0].bpm == 121.0
    search.main(["--db", url, "--key", "a minor", "--key-compatible", "--json"])  # A minor, C major, E minor, D minor
    assert sorted(t["track_id"] for t in out_json(capsys)["tracks"]) == ["a", "b", "c", "d"]
    search.main(["--db", url, "--loudness-max", "-9", "--bpm", "100-130", "--json"])
    assert sorted(t["track_id"] for t in out_json(capsys)["tracks"]) == ["b", "e"]
    # With tags: the tag ranking, narrowed by the descriptors.
    search.main(["--db", url, "--tag", "chill", "--json"])
    assert [t["track_id"] for t in out_json(capsys)["tracks"]] == ["a", "d", "b"]
    search.main(["--db", url, "--tag", "chill", "--key", "A minor", "--loudness-max", "-9", "--json"])
    tracks = out_json(capsys)["tracks"]
    # a is in A minor too but louder than -9 LUFS.
    assert [t["track_id"] for t in tracks] == ["d"] and tracks[0]["key"] == "A minor" and tracks[0]["bpm"] == 90.0
    search.main(["--db", url, "--bpm", "118-126"])
    table = capsys.readouterr().out
    assert "Tracks matching these filters" in table and "F# major" in table


def test_search_descriptor_flags_are_checked(described):
    _, url, _ = described
    with pytest.raises(ValueError, match="give --tag, or a filter"):
        search.main(["--db", url])
    with pytest.raises(ValueError, match="expected a range of beats per minute"):
        search.main(["--db", url, "--bpm", "fast"])
    with pytest.raises(ValueError, match="not a key"):
        search.main(["--db", url, "--key", "H minor"])
    with pytest.raises(ValueError, match="--key-compatible goes with --key"):
        search.main(["--db", url, "--bpm", "100-120", "--key-compatible"])


def test_similar_narrows_neighbours_to_the_same_key_or_a_close_tempo(described, capsys):
    _, url, _ = described
    similar.main(["a", "--db", url, "--json"])
    assert [n["track_id"] for n in out_json(capsys)["neighbours"]] == ["b", "c", "d", "e"]
    similar.main(["a", "--db", url, "--same-key", "--json"])
    assert [n["track_id"] for n in out_json(capsys)["neighbours"]] == ["d"]
    similar.main(["a", "--db", url, "--bpm-within", "5%", "--json"])  # 114 to 126 BPM
    assert [n["track_id"] for n in out_json(capsys)["neighbours"]] == ["b", "e"]
    similar.main(["a", "--db", url, "--bpm-within", "7", "--json"])  # 113 to 127 BPM
    assert [n["track_id"] for n in out_json(capsys)["neighbours"]] == ["b", "c", "e"]
    more = described[0] / "more"
    write_tags(more, [row("nokey", "waltz", [1, 0, 0, 1])], name="x")  # tagged with no descriptors
    load.main(["--tags", str(more), "--db", url])
    with pytest.raises(ValueError, match="has no key"):
        similar.main(["nokey", "--db", url, "--same-key"])


def out_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out)


# ------------------------------------------------------------------------------- copies and health in the database
def recording_rows() -> list[dict]:
    """a and b are copies of one recording (b the MP3, pointing at a), c and d distinct; d is clipped."""
    rows = tagged_rows()
    copies = {"a": ("rec-ab", None, []), "b": ("rec-ab", "a", ["spectral cutoff"]), "c": ("rec-c", None, []),
              "d": ("rec-d", None, ["clipping", "gap"]), "e": ("rec-e", None, [])}
    for r in rows:
        if r["track_id"] in copies:
            r["recording_id"], r["duplicate_of"], r["health_flags"] = copies[r["track_id"]]
    return rows


def test_similar_leaves_out_copies_and_search_finds_health_flags(tmp_path, db_url, capsys):
    _, url, result = loaded_rows(tmp_path, db_url, recording_rows())
    assert result.counts["recordings"] == 5
    # a's nearest are b (its copy), c, then d and e: without duplicates, b is left out.
    similar.main(["a", "--db", url, "--json"])
    assert [n["track_id"] for n in out_json(capsys)["neighbours"]] == ["c", "d", "e"]
    similar.main(["a", "--db", url, "--include-duplicates", "--json"])
    assert [n["track_id"] for n in out_json(capsys)["neighbours"]] == ["b", "c", "d", "e"]
    # From c, a and b are one recording: only the nearer of the two (b, at 0.78 against a's 0.71) comes back.
    similar.main(["c", "--db", url, "-k", "2", "--json"])
    assert [n["track_id"] for n in out_json(capsys)["neighbours"]] == ["b", "d"]
    search.main(["--db", url, "--health", "clipping", "--json"])
    assert [t["track_id"] for t in out_json(capsys)["tracks"]] == ["d"]
    search.main(["--db", url, "--tag", "chill", "--health", "gap", "--json"])
    assert [t["track_id"] for t in out_json(capsys)["tracks"]] == ["d"]
    with pytest.raises(ValueError, match="--health 'clipped'"):
        search.main(["--db", url, "--health", "clipped"])
    again = load.main(["--tags", str(tmp_path / "tags"), "--db", url])
    assert again.counts == result.counts
