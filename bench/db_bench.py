"""The recommender database: load rate and `similar` latency, side by side in one run.

    .venv/bin/python bench/db_bench.py [--sizes 10000 100000] [--dim 128] [--queries 50]

For each size, one tag Parquet file of synthetic tracks (written like `cattag tag` writes them:
schemas/tags.py, 10 genres, embeddings of the default model's size) is loaded, the same file, into
  * DuckDB (the embedded default; similar is an exact scan),
  * PostgreSQL + pgvector with the per-model HNSW index (`cattag load`'s default),
  * PostgreSQL + pgvector without an index (`--vector-index none`; exact),
  * PostgreSQL without pgvector (REAL[] embeddings, exact cosine in SQL: a server lacking the extension),
each into a fresh database, on one PostgreSQL 16 server (tests/local_postgres.py, the pgserver wheel)
on TCP loopback. Then the same query tracks, k=10, through the store's `similar` (what
`cattag similar` calls after start-up): median and 95th-percentile latency, and for the HNSW index its
recall@10 against DuckDB's exact answer.

The embeddings are clustered, like a genre model's (one centre per genre, ReLU, unit length), not
uniform noise: uniform high-dimensional points are a needlessly hard case for HNSW.
"""

from __future__ import annotations

import argparse
import datetime
import pathlib
import sys
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from database import connect
from schemas import tag_output, tags
from tests import local_postgres

GENRES = [f"genre{i}" for i in range(10)]
BACKENDS = ("duckdb", "postgresql+hnsw", "postgresql, no index", "postgresql, no pgvector")


def synthetic_embeddings(n: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(genre index [n], unit float32 embeddings [n, dim]) clustered by genre, as a genre model's."""
    rng = np.random.default_rng(seed)
    genre = rng.integers(len(GENRES), size=n)
    centres = rng.normal(size=(len(GENRES), dim))
    embedding = np.empty((n, dim), np.float32)
    for start in range(0, n, 100_000):  # in slices: the float64 noise of 10^6 rows would be 1 GB at once
        rows = slice(start, min(n, start + 100_000))
        noisy = centres[genre[rows]] + 0.8 * rng.normal(size=(rows.stop - rows.start, dim))
        embedding[rows] = np.maximum(noisy, 0)
    embedding /= np.linalg.norm(embedding, axis=1, keepdims=True)
    return genre, embedding


def write_tag_file(folder: pathlib.Path, *, n: int, dim: int, seed: int = 0) -> str:
    genre, embedding = synthetic_embeddings(n, dim, seed)
    rng = np.random.default_rng(seed + 1)
    confidence = rng.uniform(0.3, 1.0, size=n).astype(np.float32)
    schema = tags.tags_schema(labels=GENRES, embedding_dim=dim, model_version="bench", feature_version="f")
    now = datetime.datetime(2026, 11, 21, tzinfo=datetime.UTC)
    columns = {
        "track_id": [f"track-{i:07d}" for i in range(n)],
        "uri": [f"gs://catalogue/{GENRES[g]}/track-{i:07d}.flac" for i, g in enumerate(genre)],
        "content_fingerprint": [None] * n,
        "genre": [GENRES[g] for g in genre], "confidence": confidence,
        "top_k": [[{"label": GENRES[g], "score": float(c)}] for g, c in zip(genre, confidence)],
        "probabilities": [None] * n,
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(embedding.ravel()), dim),
        "duration_s": np.full(n, 30.0), "n_segments": np.full(n, 10, dtype=np.int32),
        "low_confidence": confidence < 0.6, "review_reason": [None] * n, "typicality": confidence,
        "model_version": ["bench"] * n, "feature_version": ["f"] * n, "tagged_at": [now] * n,
    }
    table = pa.Table.from_pydict({name: columns[name] for name in schema.names}, schema=schema)
    path = folder / f"{tag_output.TAGS_PREFIX}-bench{n}-00000-of-00001.parquet"
    pq.write_table(table, path)
    return str(path)


def open_store(backend: str, server: str, workdir: pathlib.Path, name: str):
    if backend == "duckdb":
        return connect(f"duckdb:///{workdir / (name + '.duckdb')}")
    url = local_postgres.create_database(server, name)
    if backend == "postgresql+hnsw":
        return connect(url)
    if backend == "postgresql, no index":
        return connect(url, vector_index="none")
    return connect(url, pgvector=False)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--dim", type=int, default=128, help="embedding size (the default model's: 128)")
    parser.add_argument("--queries", type=int, default=50)
    args = parser.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory() as tmp, local_postgres.running(pathlib.Path(tmp) / "pgdata") as server:
        workdir = pathlib.Path(tmp)
        for n in args.sizes:
            path = write_tag_file(workdir, n=n, dim=args.dim)
            queries = [f"track-{i:07d}" for i in np.random.default_rng(1).choice(n, args.queries, replace=False)]
            exact_answers = None
            for backend in BACKENDS:
                store = open_store(backend, server, workdir, f"b{n}_{BACKENDS.index(backend)}")
                try:
                    start = time.perf_counter()
                    loaded = store.load([path])
                    load_s = time.perf_counter() - start
                    assert loaded.counts["embeddings"] == n, loaded.counts
                    latencies, answers = [], []
                    for query in queries:
                        start = time.perf_counter()
                        found = store.similar(query, k=10, model_version="bench")
                        latencies.append(time.perf_counter() - start)
                        answers.append({nb.track_id for nb in found.neighbours})
                finally:
                    store.close()
                if exact_answers is None:
                    exact_answers = answers
                recall = np.mean([len(a & e) / 10 for a, e in zip(answers, exact_answers)])
                results.append((n, backend, found.method, load_s, n / load_s, np.median(latencies) * 1e3,
                                np.percentile(latencies, 95) * 1e3, recall))
                print(f"{n:>7} {backend:<24} load {load_s:6.1f} s ({n / load_s:8.0f} rows/s)  similar median "
                      f"{results[-1][5]:8.1f} ms  p95 {results[-1][6]:8.1f} ms  recall@10 {recall:.3f}", flush=True)
    print("\n| rows | database | search | load s | load rows/s | similar median ms | similar p95 ms | recall@10 |")
    print("|---:|---|---|---:|---:|---:|---:|---:|")
    for n, backend, method, load_s, rate, median, p95, recall in results:
        print(f"| {n} | {backend} | {method} | {load_s:.1f} | {rate:.0f} | {median:.1f} | {p95:.1f} | {recall:.3f} |")


if __name__ == "__main__":
    main()
