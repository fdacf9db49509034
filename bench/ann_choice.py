"""Which approximate-nearest-neighbour library backs `cattag similar` on DuckDB: measured, not guessed.

    .venv/bin/pip install usearch faiss-cpu     # both are on PyPI as wheels; hnswlib is source-only
    .venv/bin/python bench/ann_choice.py [--n 200000] [--dim 128] [--queries 200]

The same clustered unit embeddings as bench/db_bench.py. For each contender, an HNSW index of
cosine similarity (M = 16, efConstruction = 128) is built with every core, saved to a file, then
opened the way a `cattag similar` process would open it (memory-mapped where the library can, else
read whole), and queried one track at a time (k = 11: the track itself and 10 neighbours) at two
search depths. Recall@10 is against an exact numpy search. DuckDB's own `vss` extension is not a
contender here: its PyPI package exists only for DuckDB 1.5.5 (the project pins 2.0.0).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import tempfile
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.db_bench import synthetic_embeddings  # noqa: E402

M, EF_CONSTRUCTION, K = 16, 128, 10


def exact(embeddings: np.ndarray, queries: np.ndarray) -> list[set[int]]:
    answers = []
    for q in queries:
        scores = embeddings @ embeddings[q]
        scores[q] = -np.inf
        answers.append(set(np.argpartition(-scores, K)[:K].tolist()))
    return answers


def usearch_contender(embeddings, path, dtype):
    from usearch.index import Index

    index = Index(ndim=embeddings.shape[1], metric="cos", dtype=dtype, connectivity=M, expansion_add=EF_CONSTRUCTION)
    started = time.perf_counter()
    index.add(np.arange(len(embeddings), dtype=np.uint64), embeddings)
    build_s = time.perf_counter() - started
    index.save(path)
    del index
    started = time.perf_counter()
    view = Index.restore(path, view=True)
    open_s = time.perf_counter() - started

    def search(vector, ef):
        view.expansion_search = ef
        return view.search(vector, K + 1).keys

    return build_s, open_s, search


def faiss_contender(embeddings, path):
    import faiss

    index = faiss.IndexHNSWFlat(embeddings.shape[1], M, faiss.METRIC_INNER_PRODUCT)  # unit vectors: IP = cosine
    index.hnsw.efConstruction = EF_CONSTRUCTION
    started = time.perf_counter()
    index.add(embeddings)
    build_s = time.perf_counter() - started
    faiss.write_index(index, path)
    del index
    started = time.perf_counter()
    loaded = faiss.read_index(path)  # HNSW indexes cannot be memory-mapped by faiss: read whole
    open_s = time.perf_counter() - started

    def search(vector, ef):
        loaded.hnsw.efSearch = ef
        return loaded.search(vector[None, :], K + 1)[1][0]

    return build_s, open_s, search


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    _, embeddings = synthetic_embeddings(args.n, args.dim)
    queries = np.random.default_rng(1).choice(args.n, args.queries, replace=False)
    truth = exact(embeddings, queries)
    contenders = {"usearch f32": lambda p: usearch_contender(embeddings, p, "f32"),
                  "usearch f16": lambda p: usearch_contender(embeddings, p, "f16"),
                  "faiss IndexHNSWFlat": lambda p: faiss_contender(embeddings, p)}
    print(f"{args.n} embeddings of {args.dim}, {os.cpu_count()} cores, {args.queries} queries, k={K}\n")
    print("| library | build s | file MB | open s | ef | median ms | p95 ms | recall@10 |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for name, make in contenders.items():
            path = str(pathlib.Path(tmp) / name.replace(" ", "_"))
            build_s, open_s, search = make(path)
            for ef in (64, 128):
                latencies, recalls = [], []
                for q in queries:
                    started = time.perf_counter()
                    found = search(embeddings[q], ef)
                    latencies.append(time.perf_counter() - started)
                    found = [int(key) for key in found if int(key) != q][:K]
                    recalls.append(len(set(found) & truth[len(recalls)]) / K)
                print(f"| {name} | {build_s:.1f} | {os.path.getsize(path) / 2**20:.0f} | {open_s:.3f} | {ef} | "
                      f"{np.median(latencies) * 1e3:.2f} | {np.percentile(latencies, 95) * 1e3:.2f} | "
                      f"{np.mean(recalls):.3f} |", flush=True)


if __name__ == "__main__":
    main()
