"""cattag load and cattag similar on a real DuckDB file, from real tag Parquet files."""

from __future__ import annotations

import datetime
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines import cli, load, similar
from pipelines.database import connect, parse_url
from schemas import tags

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


@pytest.fixture()
def loaded(tmp_path):
    write_tags(tmp_path / "tags", [row(t, GENRES[t], e) for t, e in EMBEDDINGS.items()] + [row("quiet", None, None)])
    url = f"duckdb:///{tmp_path / 'catalogue.duckdb'}"  # tmp_path is absolute: four slashes
    result = load.main(["--tags", str(tmp_path / "tags"), "--db", url])
    return tmp_path, url, result


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
        neighbours = database.similar("a", k=3, model_version="m1")
        query = np.asarray(unit(EMBEDDINGS["a"]))
        expected = sorted((t for t in EMBEDDINGS if t != "a"), key=lambda t: -float(query @ unit(EMBEDDINGS[t])))[:3]
        assert [n.track_id for n in neighbours] == expected == ["b", "c", "d"]
        assert neighbours[0].similarity == pytest.approx(float(query @ unit(EMBEDDINGS["b"])), abs=1e-6)
        assert [n.track_id for n in database.similar("a", k=10, model_version="m1", genre="breakbeat")] == ["c", "d"]
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
        assert [n.track_id for n in database.similar("a", k=1, model_version="m1")] == ["b"]
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
    with pytest.raises(ValueError, match="PostgreSQL is not supported"):
        parse_url("postgresql://me@localhost:5432/db")
    with pytest.raises(ValueError, match="expected a duckdb:/// URL"):
        parse_url("sqlite:///x.db")
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
        assert [n.track_id for n in database.similar("a", k=1, model_version="m1")] == ["e"]
        assert [n.genre for n in database.similar("e", k=1, model_version="m1")] == ["ambient"]
    finally:
        database.close()
