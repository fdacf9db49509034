"""Large synthetic-but-realistic catalogues for scale benchmarks (issue 15: catalogues of millions of tracks).

    .venv/bin/python bench/make_catalogue.py manifest OUT.parquet --rows 1000000 [--format parquet|csv|jsonl]
    .venv/bin/python bench/make_catalogue.py tree DIR --files 100000

Real catalogues of millions of tracks cannot be shipped with the repository, and what a launcher does
with a catalogue (list it, count it, plan the job) depends on the number of entries, not on the audio.
So these catalogues have the shape of a real one and point at real audio: every entry is a distinct
track (distinct track id, or distinct file name) whose audio is one of a small pool of real clips,
cycled (default: the 60 GTZAN-dev FLAC clips under ../shared/data/gtzan-dev/GENRE/*.flac; the genre is
the clip's folder). A worker that reaches an entry decodes real music.

  * `manifest(path, n)`: a manifest of n rows, columns uri (absolute path of a pool clip), track_id
    (t0000000, t0000001, ...), genre, artist (artist-{i % 5000}); CSV, JSON Lines or Parquet, the
    formats `cattag` reads. Written in chunks (Parquet: one row group a chunk), so memory stays flat: 10^6
    rows take about a second or two.
  * `tree(root, n)`: n symlinks with distinct names to pool clips, laid out as root/GENRE/NNNN/GENRE-IIIIIII.flac
    with at most 1000 entries a folder (what a listing of a large bucket or NFS share looks like).
  * `manifest(path, n, tree_root=root)`: the manifest of that tree, uri i the path `tree(root, n)` gives
    track i. Every uri is then distinct, as in a real catalogue: with the pool's 60 paths repeated, a
    catalogue compresses far better than a real one (a pickled list of 10^5 entries: 1.4 MB vs 9.5 MB
    with distinct uris), which flatters anything that ships entries around compressed.

Used by bench/scale_bench.py. It is a benchmark helper, kept out of the test suite (tests/ does not
import it and nothing here runs under pytest): at the sizes it is for, it writes far more than a test
should.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time
from collections.abc import Sequence

REPO = pathlib.Path(__file__).resolve().parents[1]
GTZAN = REPO.parent / "shared" / "data" / "gtzan-dev"
FORMATS = ("parquet", "csv", "jsonl")
CHUNK = 100_000
ARTISTS = 5000
PER_FOLDER = 1000


def default_pool(folder: pathlib.Path = GTZAN) -> list[pathlib.Path]:
    """The pool of real clips: FOLDER/GENRE/*.flac, sorted (the 60 GTZAN-dev clips by default)."""
    pool = sorted(p.absolute() for p in folder.glob("*/*.flac"))
    if not pool:
        raise SystemExit(f"no audio pool: {folder} has no GENRE/*.flac files (pass --pool DIR)")
    return pool


def _pool(pool: Sequence[os.PathLike | str] | os.PathLike | str | None) -> list[pathlib.Path]:
    if pool is None:
        return default_pool()
    if isinstance(pool, (str, os.PathLike)):
        return default_pool(pathlib.Path(pool))
    files = [pathlib.Path(p).absolute() for p in pool]
    if not files:
        raise SystemExit("empty audio pool")
    return files


def _track_ids(start: int, stop: int, width: int) -> list[str]:
    return [f"t{i:0{width}d}" for i in range(start, stop)]


def _tree_path(root: str, i: int, clip: pathlib.Path, k: int, width: int, per_folder: int) -> str:
    """Where tree() puts track i, the k-th of its genre: root/GENRE/NNNN/GENRE-IIIIIII.ext."""
    genre = clip.parent.name
    return f"{root}/{genre}/{k // per_folder:04d}/{genre}-{i:0{width}d}{clip.suffix}"


def manifest(path: os.PathLike | str, n: int, pool: Sequence[os.PathLike | str] | os.PathLike | str | None = None,
             fmt: str | None = None, chunk: int = CHUNK, tree_root: os.PathLike | str | None = None,
             per_folder: int = PER_FOLDER) -> pathlib.Path:
    """Writes a manifest of n rows (uri, track_id, genre, artist) to path, in chunks of `chunk` rows.

    fmt: parquet, csv or jsonl; by default from path's suffix. Row i is pool[i % len(pool)] as track
    t{i:07d} (wider past 10^7 rows), genre its folder name, artist artist-{i % 5000}. With tree_root,
    its uri is where `tree(tree_root, n, pool)` puts track i (distinct uris; make the tree to read them)."""
    path = pathlib.Path(path)
    fmt = fmt or path.suffix.lstrip(".").lower()
    if fmt not in FORMATS:
        raise SystemExit(f"format {fmt!r}: one of {', '.join(FORMATS)}")
    files = _pool(pool)
    uris = [str(p) for p in files]
    genres = [p.parent.name for p in files]
    width = max(7, len(str(max(n - 1, 0))))
    path.parent.mkdir(parents=True, exist_ok=True)

    root = str(pathlib.Path(tree_root).absolute()) if tree_root is not None else None
    # tree() numbers the files of each genre; pool clips of one genre share a counter.
    share = [sum(1 for q in files if q.parent.name == p.parent.name) for p in files]
    rank = [sum(1 for q in files[:j] if q.parent.name == p.parent.name) for j, p in enumerate(files)]

    def uri(i: int, j: int) -> str:
        if root is None:
            return uris[j]
        # The k-th track of its genre: whole cycles of the pool give `share` each, then its rank in this one.
        return _tree_path(root, i, files[j], (i // len(files)) * share[j] + rank[j], width, per_folder)

    def chunks():
        for start in range(0, n, chunk):
            stop = min(n, start + chunk)
            cycle = [i % len(files) for i in range(start, stop)]
            yield (_track_ids(start, stop, width), [uri(i, j) for i, j in zip(range(start, stop), cycle)],
                   [genres[j] for j in cycle], [f"artist-{i % ARTISTS}" for i in range(start, stop)])

    if fmt == "jsonl":
        with open(path, "w", encoding="utf-8") as out:
            for ids, us, gs, arts in chunks():
                out.write("".join(json.dumps({"uri": u, "track_id": t, "genre": g, "artist": a}) + "\n"
                                  for t, u, g, a in zip(ids, us, gs, arts)))
        return path

    import pyarrow as pa

    schema = pa.schema([("uri", pa.string()), ("track_id", pa.string()), ("genre", pa.string()),
                        ("artist", pa.string())])

    def table(ids, us, gs, arts):
        return pa.table([pa.array(us, pa.string()), pa.array(ids, pa.string()), pa.array(gs, pa.string()),
                         pa.array(arts, pa.string())], schema=schema)

    if fmt == "parquet":
        import pyarrow.parquet as pq

        with pq.ParquetWriter(path, schema, compression="zstd") as writer:
            for part in chunks():
                writer.write_table(table(*part), row_group_size=chunk)
            if n == 0:
                writer.write_table(schema.empty_table())
    else:
        import pyarrow.csv as pacsv

        with pacsv.CSVWriter(path, schema, write_options=pacsv.WriteOptions(quoting_style="needed")) as writer:
            for part in chunks():
                writer.write_table(table(*part))
    return path


def tree(root: os.PathLike | str, n: int, pool: Sequence[os.PathLike | str] | os.PathLike | str | None = None,
         per_folder: int = PER_FOLDER) -> pathlib.Path:
    """Makes n symlinks with distinct names to pool clips: root/GENRE/NNNN/GENRE-IIIIIII.ext, at most
    `per_folder` files a leaf folder. root must be absent or empty."""
    root = pathlib.Path(root).absolute()
    if root.exists() and any(root.iterdir()):
        raise SystemExit(f"{root} is not empty")
    files = _pool(pool)
    width = max(7, len(str(max(n - 1, 0))))
    per_genre: dict[str, int] = {}
    made: set[str] = set()
    for i in range(n):
        clip = files[i % len(files)]
        k = per_genre.get(clip.parent.name, 0)
        per_genre[clip.parent.name] = k + 1
        link = _tree_path(str(root), i, clip, k, width, per_folder)
        folder = link.rsplit("/", 1)[0]
        if folder not in made:
            os.makedirs(folder, exist_ok=True)
            made.add(folder)
        os.symlink(clip, link)
    root.mkdir(parents=True, exist_ok=True)
    return root


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    m = sub.add_parser("manifest", help="a manifest of --rows rows")
    m.add_argument("out")
    m.add_argument("--rows", type=int, default=1_000_000)
    m.add_argument("--format", choices=FORMATS, help="default: from OUT's suffix")
    m.add_argument("--pool", help=f"a folder of GENRE/*.flac clips (default {GTZAN})")
    m.add_argument("--tree", metavar="DIR", help="uris into the tree `tree DIR --files ROWS` makes (distinct uris)")
    t = sub.add_parser("tree", help="a folder tree of --files symlinks")
    t.add_argument("dir")
    t.add_argument("--files", type=int, default=100_000)
    t.add_argument("--pool", help=f"a folder of GENRE/*.flac clips (default {GTZAN})")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    if args.what == "manifest":
        out = manifest(args.out, args.rows, args.pool, args.format, tree_root=args.tree)
        print(f"{out}: {args.rows} rows, {out.stat().st_size / 2**20:.1f} MiB, "
              f"{time.perf_counter() - started:.1f} s", file=sys.stderr)
    else:
        out = tree(args.dir, args.files, args.pool)
        print(f"{out}: {args.files} files, {time.perf_counter() - started:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
