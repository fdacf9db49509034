"""`cattag load` and `cattag similar` at catalogue scale: 10^5 and 10^6 tag rows (issue 15).

    .venv/bin/python bench/load_bench.py [--sizes 100000 1000000] [--dim 128] [--queries 100]

For each size, tag files of synthetic tracks in shards of 100,000 rows, as a `cattag tag` output of
that size would be. Their embeddings have the pretrained tagger's size (200, musicnn's penultimate
layer; the default model's head adds its 10 genre probabilities) and a catalogue's structure: tracks
group by genre and, within a genre, by artist (50 tracks an artist on average), each level a
smaller spread (catalogue_embeddings). bench/db_bench.py's embeddings (genre clusters of pure noise,
`--structure genre` here) have no structure below the genre: their 10 nearest tracks are barely
nearer than the rest of the cluster, the case where every graph index does worst.
Each contender loads them into a fresh database with the real `cattag load` command, one process:
wall time, rows per second, and that process's peak RSS (GNU time's; for PostgreSQL the client's,
the server runs apart):

  * duckdb                        rows, then the HNSW index files (model versions >= 30k embeddings)
  * duckdb --vector-index none    the rows alone
  * postgresql                    COPY into a staging table, one upsert, pgvector's HNSW built after
  * postgresql --vector-index none

Then `similar` for the same query tracks (k=10) through the store, as `cattag similar` calls it after
its start-up: median and 95th-percentile latency, recall@10 against an exact search in numpy, and
the wall time of one whole `cattag similar` process. One PostgreSQL 16 server with pgvector
(tests/local_postgres.py) on TCP loopback; 2 cores shared by everything.
"""

from __future__ import annotations

import argparse
import datetime
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.db_bench import GENRES, synthetic_embeddings  # noqa: E402
from database import (
    connect,  # noqa: E402
    vector_index,  # noqa: E402
)
from schemas import (
    tag_output,
    tags,  # noqa: E402
)
from tests import local_postgres  # noqa: E402

SHARD_ROWS = 100_000
K = 10
CONTENDERS = {"duckdb": [], "duckdb --vector-index none": ["--vector-index", "none"],
              "postgresql": [], "postgresql --vector-index none": ["--vector-index", "none"]}
CATTAG = str(pathlib.Path(sys.executable).with_name("cattag"))


def write_tag_files(folder: pathlib.Path, genre: np.ndarray, embedding: np.ndarray) -> None:
    n, dim = embedding.shape
    schema = tags.tags_schema(labels=GENRES, embedding_dim=dim, model_version="bench", feature_version="f")
    now = datetime.datetime(2026, 11, 21, tzinfo=datetime.UTC)
    rng = np.random.default_rng(2)
    shards = (n + SHARD_ROWS - 1) // SHARD_ROWS
    folder.mkdir(parents=True)
    for shard in range(shards):
        rows = range(shard * SHARD_ROWS, min(n, (shard + 1) * SHARD_ROWS))
        m = len(rows)
        confidence = rng.uniform(0.3, 1.0, size=m).astype(np.float32)
        names = [GENRES[g] for g in genre[rows.start:rows.stop]]
        columns = {
            "track_id": [f"track-{i:07d}" for i in rows],
            "uri": [f"gs://catalogue/{g}/track-{i:07d}.flac" for i, g in zip(rows, names)],
            "content_fingerprint": [f"{i * 2654435761:032x}" for i in rows],
            "genre": names, "confidence": confidence,
            "top_k": [[{"label": g, "score": float(c)}] for g, c in zip(names, confidence)],
            "tags": [[{"label": g, "score": float(c)}] for g, c in zip(names, confidence)],
            "probabilities": [None] * m,
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(embedding[rows.start:rows.stop].ravel()), dim),
            "duration_s": np.full(m, 30.0), "n_segments": np.full(m, 10, dtype=np.int32),
            "low_confidence": confidence < 0.6, "review_reason": [None] * m, "typicality": confidence,
            "model_version": ["bench"] * m, "feature_version": ["f"] * m, "tagged_at": [now] * m,
        }
        table = pa.Table.from_pydict({name: columns[name] for name in schema.names}, schema=schema)
        pq.write_table(table, folder / f"{tag_output.TAGS_PREFIX}-bench-{shard:05d}-of-{shards:05d}.parquet")


def catalogue_embeddings(n: int, dim: int, seed: int = 0, tracks_per_artist: int = 50):
    """(genre index [n], unit float32 [n, dim]): ReLU(genre centre + 0.7 artist offset + 0.5 track
    noise), each track by one of n / tracks_per_artist artists, each artist in one genre."""
    rng = np.random.default_rng(seed)
    artists = max(1, n // tracks_per_artist)
    artist_genre = rng.integers(len(GENRES), size=artists)
    genre_centres = rng.normal(size=(len(GENRES), dim))
    artist_centres = genre_centres[artist_genre] + 0.7 * rng.normal(size=(artists, dim))
    artist = rng.integers(artists, size=n)
    embedding = np.empty((n, dim), np.float32)
    for start in range(0, n, 100_000):
        rows = slice(start, min(n, start + 100_000))
        noisy = artist_centres[artist[rows]] + 0.5 * rng.normal(size=(rows.stop - rows.start, dim))
        embedding[rows] = np.maximum(noisy, 0)
    embedding /= np.linalg.norm(embedding, axis=1, keepdims=True)
    return artist_genre[artist], embedding


def run_measured(command: list[str]) -> tuple[float, float]:
    """(wall s, peak RSS MiB) of one process. The peak comes from GNU time, which starts the command
    itself: the ru_maxrss that wait4 reports for a child of this process counts this process's own
    memory too (the child's address space before exec was a copy of it: 2.1 GB at 10^6 rows here)."""
    with tempfile.NamedTemporaryFile("r") as peak:
        started = time.perf_counter()
        done = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", peak.name, *command], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        wall = time.perf_counter() - started
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed: {done.stderr.decode()[-2000:]}")
        return wall, int(peak.read().split()[-1]) / 1024


def exact_neighbours(embedding: np.ndarray, queries: np.ndarray) -> list[set[str]]:
    answers = []
    for q in queries:
        scores = embedding @ embedding[q]
        scores[q] = -np.inf
        answers.append({f"track-{i:07d}" for i in np.argpartition(-scores, K)[:K]})
    return answers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=200)
    parser.add_argument("--structure", choices=["artist", "genre"], default="artist",
                        help="artist: catalogue_embeddings (default); genre: bench/db_bench.py's")
    parser.add_argument("--ef", type=int, nargs="*", default=[64, 128, 256, 512],
                        help="DuckDB's index searched again at each of these depths (recall against latency)")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--contenders", nargs="+", default=list(CONTENDERS), choices=list(CONTENDERS))
    parser.add_argument("--workdir", help="default: a temporary folder (tag files of 10^6 rows take ~0.8 GB)")
    args = parser.parse_args()
    results, sweep = [], []
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp, \
            local_postgres.running(pathlib.Path(tmp) / "pgdata") as server:
        work = pathlib.Path(tmp)
        for n in args.sizes:
            make = catalogue_embeddings if args.structure == "artist" else synthetic_embeddings
            genre, embedding = make(n, args.dim)
            folder = work / f"tags-{n}"
            write_tag_files(folder, genre, embedding)
            queries = np.random.default_rng(1).choice(n, args.queries, replace=False)
            truth = exact_neighbours(embedding, queries)
            for index, name in enumerate(args.contenders):
                if name.startswith("duckdb"):
                    url = f"duckdb:///{work / f'load-{n}-{index}.duckdb'}"
                else:
                    url = local_postgres.create_database(server, f"load_{n}_{index}")
                wall, rss = run_measured([CATTAG, "load", "--tags", str(folder), "--db", url, *CONTENDERS[name]])
                store = connect(url)
                try:
                    method, median, p95, recall = search(store, queries, truth)
                    if name == "duckdb":  # the same index at other search depths
                        default = vector_index.EXPANSION_SEARCH
                        for ef in args.ef:
                            vector_index.EXPANSION_SEARCH = ef
                            sweep.append((n, ef, *search(store, queries, truth)[1:]))
                        vector_index.EXPANSION_SEARCH = default
                finally:
                    store.close()
                cli_s, _ = run_measured([CATTAG, "similar", f"track-{queries[0]:07d}", "--db", url])
                results.append((n, name, wall, n / wall, rss, method, median, p95, recall, cli_s))
                print("| " + " | ".join(_cells(results[-1])) + " |", flush=True)
            del embedding
    print("\n| rows | `cattag load` | load s | rows/s | load peak RSS MiB | similar search | median ms | p95 ms | "
          "recall@10 | `cattag similar` process s |")
    print("|---:|---|---:|---:|---:|---|---:|---:|---:|---:|")
    for result in results:
        print("| " + " | ".join(_cells(result)) + " |")
    print(f"\nDuckDB's index at other search depths (default ef {vector_index.EXPANSION_SEARCH}):\n")
    print("| rows | ef | median ms | p95 ms | recall@10 |\n|---:|---:|---:|---:|---:|")
    for n, ef, median, p95, recall in sweep:
        print(f"| {n:,} | {ef} | {median:.2f} | {p95:.2f} | {recall:.3f} |")


def search(store, queries, truth) -> tuple[str, float, float, float]:
    """(method, median ms, p95 ms, recall@10) of `similar` for the queries, through an open store."""
    latencies, recalls = [], []
    for q, expected in zip(queries, truth):
        started = time.perf_counter()
        found = store.similar(f"track-{q:07d}", k=K, model_version="bench")
        latencies.append(time.perf_counter() - started)
        recalls.append(len(expected & {nb.track_id for nb in found.neighbours}) / K)
    return found.method, np.median(latencies) * 1e3, np.percentile(latencies, 95) * 1e3, np.mean(recalls)


def _cells(result) -> list[str]:
    n, name, wall, rate, rss, method, median, p95, recall, cli_s = result
    return [f"{n:,}", name, f"{wall:.1f}", f"{rate:.0f}", f"{rss:.0f}", method, f"{median:.1f}", f"{p95:.1f}",
            f"{recall:.3f}", f"{cli_s:.1f}"]


if __name__ == "__main__":
    main()
