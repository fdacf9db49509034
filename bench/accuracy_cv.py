"""Track-level accuracy of cnn2d, cnn1d and the default model: 5-fold cross-validation on
../shared/data/gtzan-dev (60 tracks, 10 genres), grouped by track, side by side in one run.

    .venv/bin/python bench/accuracy_cv.py [--folds 5] [--epochs 50] [--archs cnn2d,cnn1d,resnet,bandstats]
                                          [--segment-hop-s 3.0]

The clips are featurized once with `cattag featurize`; the examples are then re-sharded per fold:
test = one fold (12 tracks, stratified by genre), validation = one track per genre from the
others (for early stopping), train = the remaining 38 tracks, with the mel statistics recomputed
on the training tracks. Every architecture trains with the same settings and seed. Prints a
Markdown table and writes results.json in the work directory.
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import pathlib
import shutil
import statistics
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
GTZAN = REPO.parent / "shared" / "data" / "gtzan-dev"


def featurize_all(work: pathlib.Path, hop_s: float) -> pathlib.Path:
    from pipelines import featurize

    out = work / ("features-all" if hop_s == 3.0 else f"features-all-hop{hop_s:g}")
    if not (out / "metadata.json").exists():
        featurize.run(["--input", str(GTZAN / "manifest.csv"), "--output", str(out), "--splits", "100,0,0",
                       "--segment-hop-s", str(hop_s), "--overwrite", "--progress", "off"])
    return out


def read_examples(features: pathlib.Path) -> dict[str, list[bytes]]:
    import tensorflow as tf

    by_track: dict[str, list[bytes]] = collections.defaultdict(list)
    files = sorted(glob.glob(str(features / "*" / "part-*.tfrecord.gz")))
    for record in tf.data.TFRecordDataset(files, compression_type="GZIP"):
        from schemas.examples import decode_example

        by_track[decode_example(record.numpy())["track_id"]].append(record.numpy())
    return by_track


def fold_of_tracks(genre_of: dict[str, str], folds: int) -> dict[str, int]:
    """Stratified: within each genre, tracks in id order go to folds round-robin."""
    assignment, offset = {}, 0
    for genre in sorted(set(genre_of.values())):
        for i, track in enumerate(sorted(t for t, g in genre_of.items() if g == genre)):
            assignment[track] = (i + offset) % folds
        offset += 1  # rotate, so the genres' sixth tracks do not all land in fold 0
    return assignment


def write_fold(base_meta: dict, by_track: dict[str, list[bytes]], genre_of: dict[str, str],
               split_of: dict[str, str], out: pathlib.Path) -> None:
    import numpy as np
    import tensorflow as tf

    from schemas.examples import decode_example
    from transforms.stats import Moments

    if out.exists():
        shutil.rmtree(out)
    moments = Moments()
    counts: dict[str, dict[str, dict[str, int]]] = {s: {} for s in ("train", "validation", "test")}
    writers = {}
    for split in counts:
        (out / split).mkdir(parents=True)
        writers[split] = tf.io.TFRecordWriter(str(out / split / "part-00000-of-00001.tfrecord.gz"),
                                              options=tf.io.TFRecordOptions(compression_type="GZIP"))
    for track, records in sorted(by_track.items()):
        split = split_of[track]
        entry = counts[split].setdefault(genre_of[track], {"tracks": 0, "segments": 0, "silent_segments": 0,
                                                           "audio_ms": 0})
        entry["tracks"] += 1
        entry["segments"] += len(records)
        for record in records:
            writers[split].write(record)
            if split == "train":
                moments = moments.add(np.asarray(decode_example(record)["mel"]))
    for writer in writers.values():
        writer.close()
    meta = {**base_meta, "counts": counts, "mel_stats": {"split": "train", **moments.to_dict()},
            "splits": {"cv": True}}
    (out / "metadata.json").write_text(json.dumps(meta))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--patience", type=int, default=12)
    parser.add_argument("--archs", default="cnn2d,cnn1d,resnet")
    parser.add_argument("--segment-hop-s", type=float, default=3.0,
                        help="featurize hop; 1.5 gives 19 overlapping segments a track instead of 10")
    parser.add_argument("--seed-offset", type=int, default=0,
                        help="fold k trains with seed k + this; repeated runs with other offsets measure the noise")
    parser.add_argument("--workdir", default="/tmp/cattag-cv")
    args = parser.parse_args()
    work = pathlib.Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)

    from trainer.task import TrainConfig, run

    features = featurize_all(work, args.segment_hop_s)
    base_meta = json.loads((features / "metadata.json").read_text())
    by_track = read_examples(features)
    import csv

    with open(GTZAN / "manifest.csv", newline="") as handle:
        genre_of = {row["track_id"]: row["genre"] for row in csv.DictReader(handle)}
    fold = fold_of_tracks(genre_of, args.folds)

    results: dict[str, list[float]] = collections.defaultdict(list)
    details = []
    for k in range(args.folds):
        rest = sorted(t for t in genre_of if fold[t] != k)
        validation = {}
        for track in rest:  # the first remaining track of each genre validates
            validation.setdefault(genre_of[track], track)
        split_of = {t: "test" if fold[t] == k else "validation" if t in validation.values() else "train"
                    for t in genre_of}
        data = work / f"fold{k}"
        write_fold(base_meta, by_track, genre_of, split_of, data)
        for arch in args.archs.split(","):
            started = time.perf_counter()
            seed = k + args.seed_offset
            name = f"model-{arch}-fold{k}" if not args.seed_offset else f"model-{arch}-seed{seed}-fold{k}"
            card = run(TrainConfig(data_dir=str(data), model_dir=str(work / name), arch=arch,
                                   epochs=args.epochs, patience=args.patience, seed=seed, verbose=0))
            accuracy = card["metrics"]["track_accuracy"]
            results[arch].append(accuracy)
            details.append({"fold": k, "arch": arch, "seed": seed, "track_accuracy": accuracy,
                            "segment_accuracy": card["metrics"]["segment_accuracy"],
                            "epochs_run": card["training"]["epochs_run"], "seconds": time.perf_counter() - started})
            print(f"fold {k} {arch}: track accuracy {accuracy:.3f} "
                  f"({card['training']['epochs_run']} epochs, {time.perf_counter() - started:.0f} s)", flush=True)

    results_file = work / ("results.json" if not args.seed_offset else f"results-seed{args.seed_offset}.json")
    results_file.write_text(json.dumps({"per_run": details, "per_arch": results}, indent=2))
    print(f"\n| model | track accuracy, mean | std | per fold ({args.folds}-fold CV, 60 GTZAN tracks) |")
    print("|---|---:|---:|---|")
    for arch, values in results.items():
        print(f"| {arch} | {statistics.mean(values):.3f} | {statistics.pstdev(values):.3f} | "
              + ", ".join(f"{v:.2f}" for v in values) + " |")


if __name__ == "__main__":
    main()
