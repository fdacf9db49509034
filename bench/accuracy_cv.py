"""Track-level accuracy of the default model (a head on the pretrained musicnn backbone) and the
from-scratch architectures: 5-fold cross-validation on ../shared/data/gtzan-dev (60 tracks, 10
genres), grouped by track, side by side in one run; and the same-genre precision@5 of each model's
stored embedding.

    .venv/bin/python bench/accuracy_cv.py [--folds 5] [--epochs 50]
        [--models musicnn-msd,cnn2d,cnn1d,resnet] [--segment-hop-s 3.0]

A model name that is a pretrained preset trains `--backbone NAME` on the preset's feature config
(musicnn); an architecture trains `--backbone none --arch NAME` on cattag-v1 features (22.05 kHz,
128 bands), the config those were designed with.

The clips are featurized once per feature config with `cattag featurize`; the examples are then re-sharded per fold:
test = one fold (12 tracks, stratified by genre), validation = one track per genre from the
others (for early stopping), train = the remaining 38 tracks, with the mel statistics recomputed
on the training tracks. Every model trains with the same settings and seed. Retrieval: each fold's
model embeds all 60 tracks (the tagger's rule: mean of segment embeddings, unit length), and each
test track's 5 nearest other tracks are checked for its genre; the zero-shot row is the preset's
own embedding, with no training. Prints Markdown tables and writes results.json in the work directory.
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


def featurize_all(work: pathlib.Path, hop_s: float, feature_config: str) -> pathlib.Path:
    from pipelines import featurize

    out = work / (f"features-{feature_config}" if hop_s == 3.0 else f"features-{feature_config}-hop{hop_s:g}")
    if not (out / "metadata.json").exists():
        featurize.run(["--input", str(GTZAN / "manifest.csv"), "--output", str(out), "--splits", "100,0,0",
                       "--segment-hop-s", str(hop_s), "--feature-config", feature_config, "--overwrite",
                       "--progress", "off"])
    return out


def track_embeddings(model_dir: str, by_track: dict[str, list[bytes]]) -> tuple[list[str], object]:
    """Every track's embedding from an exported model, as `cattag tag` computes it."""
    import numpy as np
    import tensorflow as tf

    from schemas.examples import decode_example
    from transforms.aggregate import mean_embedding

    model = tf.saved_model.load(model_dir)
    tracks = sorted(by_track)
    vectors = []
    for track in tracks:
        mels = np.stack([decode_example(record)["mel"] for record in by_track[track]])
        vectors.append(mean_embedding(model.serve(mels)["embedding"].numpy()))
    return tracks, np.stack(vectors)


def precision_at_5(vectors, genres, queries) -> list[float]:
    """Per query index: the share of its 5 most cosine-similar other tracks with its genre."""
    import numpy as np

    similarity = vectors @ vectors.T
    np.fill_diagonal(similarity, -np.inf)
    return [float(np.mean([genres[j] == genres[i] for j in np.argsort(-similarity[i], kind="stable")[:5]]))
            for i in queries]


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
    parser.add_argument("--models", default="musicnn-msd,cnn2d,cnn1d",
                        help="pretrained presets (a head on the backbone) and/or from-scratch architectures")
    parser.add_argument("--segment-hop-s", type=float, default=3.0,
                        help="featurize hop; 1.5 gives 19 overlapping segments a track instead of 10")
    parser.add_argument("--seed-offset", type=int, default=0,
                        help="fold k trains with seed k + this; repeated runs with other offsets measure the noise")
    parser.add_argument("--workdir", default="/tmp/cattag-cv")
    args = parser.parse_args()
    work = pathlib.Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)

    from schemas import presets
    from trainer.task import TrainConfig, run

    names = args.models.split(",")
    config_of = {name: "musicnn" if name in presets.PRESETS else "cattag-v1" for name in names}
    data_of = {}  # feature config -> (metadata, examples by track)
    for feature_config in sorted(set(config_of.values())):
        features = featurize_all(work, args.segment_hop_s, feature_config)
        data_of[feature_config] = (json.loads((features / "metadata.json").read_text()), read_examples(features))
    import csv

    with open(GTZAN / "manifest.csv", newline="") as handle:
        genre_of = {row["track_id"]: row["genre"] for row in csv.DictReader(handle)}
    fold = fold_of_tracks(genre_of, args.folds)

    results: dict[str, list[float]] = collections.defaultdict(list)
    retrieval: dict[str, list[float]] = collections.defaultdict(list)
    details = []
    for name in names:
        if name in presets.PRESETS:  # zero-shot: the preset's own embedding, no training
            tracks, vectors = track_embeddings(presets.resolve_model(name), data_of["musicnn"][1])
            retrieval[f"{name} (zero-shot)"] = precision_at_5(vectors, [genre_of[t] for t in tracks],
                                                              range(len(tracks)))
    for k in range(args.folds):
        rest = sorted(t for t in genre_of if fold[t] != k)
        validation = {}
        for track in rest:  # the first remaining track of each genre validates
            validation.setdefault(genre_of[track], track)
        split_of = {t: "test" if fold[t] == k else "validation" if t in validation.values() else "train"
                    for t in genre_of}
        for feature_config, (base_meta, by_track) in data_of.items():
            write_fold(base_meta, by_track, genre_of, split_of, work / f"fold{k}-{feature_config}")
        for arch in names:
            started = time.perf_counter()
            seed = k + args.seed_offset
            name = f"model-{arch}-fold{k}" if not args.seed_offset else f"model-{arch}-seed{seed}-fold{k}"
            backbone = arch if arch in presets.PRESETS else "none"
            card = run(TrainConfig(data_dir=str(work / f"fold{k}-{config_of[arch]}"), model_dir=str(work / name),
                                   backbone=backbone, arch=arch if backbone == "none" else TrainConfig.arch,
                                   epochs=args.epochs, patience=args.patience, seed=seed, verbose=0))
            accuracy = card.metrics["track_accuracy"]
            results[card.arch].append(accuracy)
            tracks, vectors = track_embeddings(str(work / name), data_of[config_of[arch]][1])
            precision = precision_at_5(vectors, [genre_of[t] for t in tracks],
                                       [i for i, t in enumerate(tracks) if fold[t] == k])
            retrieval[card.arch].extend(precision)
            details.append({"fold": k, "arch": card.arch, "seed": seed, "track_accuracy": accuracy,
                            "segment_accuracy": card.metrics["segment_accuracy"],
                            "precision_at_5": statistics.mean(precision),
                            "epochs_run": card.training["epochs_run"], "seconds": time.perf_counter() - started})
            print(f"fold {k} {card.arch}: track accuracy {accuracy:.3f}, precision@5 {statistics.mean(precision):.3f} "
                  f"({card.training['epochs_run']} epochs, {time.perf_counter() - started:.0f} s)", flush=True)

    results_file = work / ("results.json" if not args.seed_offset else f"results-seed{args.seed_offset}.json")
    results_file.write_text(json.dumps({"per_run": details, "per_arch": results,
                                        "precision_at_5": {k: statistics.mean(v) for k, v in retrieval.items()}},
                                       indent=2))
    print(f"\n| model | track accuracy, mean | std | per fold ({args.folds}-fold CV, 60 GTZAN tracks) |")
    print("|---|---:|---:|---|")
    for arch, values in results.items():
        print(f"| {arch} | {statistics.mean(values):.3f} | {statistics.pstdev(values):.3f} | "
              + ", ".join(f"{v:.2f}" for v in values) + " |")
    print("\n| embedding | same-genre precision@5 (test tracks of each fold against all 59 others) |")
    print("|---|---:|")
    for name, values in retrieval.items():
        print(f"| {name} | {statistics.mean(values):.3f} |")


if __name__ == "__main__":
    main()

