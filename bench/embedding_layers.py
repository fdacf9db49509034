"""Which musicnn output to store as a track's embedding: same-genre precision@5 of each candidate
over ../shared/data/gtzan-dev (60 tracks, 10 genres), side by side in one run.

    .venv/bin/python bench/embedding_layers.py [--preset musicnn-msd]   (after `cattag pretrained fetch`)

Each track goes through the product's own front end (decode at 16 kHz, segments, log-mel with the
preset's feature config); a track's vector for an output is the L2-normalized mean of its
segments' vectors, as `cattag tag` stores it. precision@5: for each track, the share of its 5
nearest other tracks (cosine) with the same genre, averaged over tracks. Also printed: the
leave-one-out nearest-centroid accuracy, a second view of the same question.
"""

from __future__ import annotations

import argparse
import csv
import pathlib
import sys

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
GTZAN = REPO.parent / "shared" / "data" / "gtzan-dev"


def precision_at_k(vectors: np.ndarray, labels: np.ndarray, k: int = 5) -> float:
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -np.inf)
    nearest = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
    return float((labels[nearest] == labels[:, None]).mean())


def centroid_accuracy(vectors: np.ndarray, labels: np.ndarray) -> float:
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    right = 0
    for i in range(len(unit)):
        keep = np.arange(len(unit)) != i
        classes = sorted(set(labels[keep]))
        centroids = np.stack([unit[keep][labels[keep] == c].mean(axis=0) for c in classes])
        right += classes[int(np.argmax(centroids @ unit[i]))] == labels[i]
    return right / len(unit)


def track_vectors(preset: str) -> tuple[dict[str, np.ndarray], np.ndarray]:
    import tensorflow as tf

    from schemas.features import SegmentPolicy
    from trainer import musicnn, pretrained
    from transforms.audio import decode
    from transforms.mel import log_mel, mel_basis
    from transforms.segments import cut_segments

    backbone, info = pretrained.load_backbone(preset)
    from schemas.features import FeatureConfig

    cfg = FeatureConfig.from_dict(info["feature_config"])
    policy, basis = SegmentPolicy(), mel_basis(cfg)
    run = tf.function(lambda mel: backbone(mel, training=False))
    rows = list(csv.DictReader(open(GTZAN / "manifest.csv")))
    vectors: dict[str, list[np.ndarray]] = {name: [] for name in musicnn.OUTPUTS}
    for row in rows:
        audio = decode(str(GTZAN / row["path"]), sample_rate_hz=cfg.sample_rate_hz, max_duration_s=policy.max_track_s)
        cut = cut_segments(audio.samples, segment_samples=cfg.segment_samples,
                           hop_samples=round(policy.hop_s * cfg.sample_rate_hz), max_segments=policy.max_segments,
                           pad_short=True, silence_floor_dbfs=policy.silence_floor_dbfs)
        mels = np.stack([log_mel(samples, basis=basis) for _, samples in cut.segments])
        outputs = run(tf.constant(mels))
        for name in musicnn.OUTPUTS:
            segment_vectors = outputs[name].numpy()
            mean = segment_vectors.mean(axis=0)
            vectors[name].append(mean / max(np.linalg.norm(mean), 1e-12))
    return {name: np.stack(v) for name, v in vectors.items()}, np.array([row["genre"] for row in rows])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="musicnn-msd")
    args = parser.parse_args()
    vectors, labels = track_vectors(args.preset)
    print(f"{args.preset}: same-genre precision@5 and leave-one-out nearest-centroid accuracy over "
          f"{len(labels)} GTZAN-dev tracks")
    print("| output | dim | precision@5 | centroid accuracy |")
    print("|---|---:|---:|---:|")
    for name, matrix in vectors.items():
        print(f"| {name} | {matrix.shape[1]} | {precision_at_k(matrix, labels):.3f} | "
              f"{centroid_accuracy(matrix, labels):.3f} |")


if __name__ == "__main__":
    main()
