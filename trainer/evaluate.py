"""Evaluation of a genre model: segment and track metrics, plots, and `cattag evaluate`.

Track-level predictions average a track's segment probabilities: that is how the tagger labels a
track, so it is the accuracy that matters to a catalogue.
"""

from __future__ import annotations

import json
import logging
import pathlib
from collections.abc import Sequence

import numpy as np

from transforms import aggregate

_LOG = logging.getLogger(__name__)


def classification_metrics(true: np.ndarray, predicted: np.ndarray, labels: Sequence[str]) -> dict:
    """Accuracy, per-class precision/recall/F1, macro-F1 and the confusion matrix (rows: true)."""
    n = len(labels)
    confusion = np.zeros((n, n), dtype=np.int64)
    np.add.at(confusion, (true, predicted), 1)
    per_class = {}
    for index, label in enumerate(labels):
        tp = confusion[index, index]
        precision = tp / confusion[:, index].sum() if confusion[:, index].sum() else 0.0
        recall = tp / confusion[index].sum() if confusion[index].sum() else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[label] = {"precision": float(precision), "recall": float(recall), "f1": float(f1),
                            "support": int(confusion[index].sum())}
    present = [label for label in labels if per_class[label]["support"] > 0]
    return {
        "accuracy": float(np.trace(confusion) / max(confusion.sum(), 1)),
        # Macro-F1 over the classes that occur in the evaluated data: an absent class has no recall.
        "macro_f1": float(np.mean([per_class[label]["f1"] for label in present])) if present else 0.0,
        "per_class": per_class,
        "confusion": confusion.tolist(),
        "count": int(confusion.sum()),
    }


def track_level(track_ids: np.ndarray, label_ids: np.ndarray, probabilities: np.ndarray,
                embeddings: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Aggregates segments into tracks: mean probabilities, L2-normalized mean embedding."""
    tracks, inverse = np.unique(track_ids, return_inverse=True)
    counts = np.bincount(inverse).astype(np.float64)
    mean_probs = np.zeros((len(tracks), probabilities.shape[1]))
    np.add.at(mean_probs, inverse, probabilities)
    mean_probs /= counts[:, None]
    labels = np.zeros(len(tracks), dtype=np.int64)
    labels[inverse] = label_ids
    result = {"track_id": tracks, "label_id": labels, "probabilities": mean_probs}
    if embeddings is not None:
        mean_emb = np.zeros((len(tracks), embeddings.shape[1]))
        np.add.at(mean_emb, inverse, embeddings)
        result["embedding"] = aggregate.unit_rows(mean_emb)  # the tagger's rule, per track
    return result


def evaluate_predictions(track_ids: np.ndarray, label_ids: np.ndarray, probabilities: np.ndarray,
                         labels: Sequence[str]) -> dict:
    """Segment and track metrics from segment-level predictions of labelled segments."""
    segments = classification_metrics(label_ids, probabilities.argmax(axis=1), labels)
    tracks = track_level(track_ids, label_ids, probabilities)
    track_metrics = classification_metrics(tracks["label_id"], tracks["probabilities"].argmax(axis=1), labels)
    return {
        "segment_accuracy": segments["accuracy"],
        "track_accuracy": track_metrics["accuracy"],
        "macro_f1": track_metrics["macro_f1"],
        "segment_macro_f1": segments["macro_f1"],
        "per_class": track_metrics["per_class"],
        "confusion": track_metrics["confusion"],
        "segments": segments["count"],
        "tracks": track_metrics["count"],
        "labels": list(labels),
    }


def predict(model, data_dir: str, split: str, *, info, batch_size: int = 64) -> dict[str, np.ndarray]:
    """Runs an exported model's `serve` endpoint over a split's labelled segments (`info`: the
    data's DataInfo, already checked against the model)."""
    from schemas import examples
    from trainer.data import make_dataset

    track_ids, label_ids, probabilities, embeddings = [], [], [], []
    for batch in make_dataset(data_dir, split, info=info, batch_size=batch_size, training=False):
        labelled = batch[examples.LABEL_ID].numpy() >= 0
        if not labelled.any():
            continue
        out = model.serve(batch[examples.MEL][labelled])
        track_ids.append(batch[examples.TRACK_ID].numpy()[labelled])
        label_ids.append(batch[examples.LABEL_ID].numpy()[labelled])
        probabilities.append(out["probabilities"].numpy())
        embeddings.append(out["embedding"].numpy())
    if not track_ids:
        raise ValueError(f"{data_dir}/{split} has no labelled segments to evaluate on")
    return {
        "track_id": np.concatenate(track_ids), "label_id": np.concatenate(label_ids),
        "probabilities": np.concatenate(probabilities), "embedding": np.concatenate(embeddings),
    }


def evaluate_model(model_dir: str, data_dir: str, *, split: str = "test", output_dir: str | None = None,
                   model=None) -> dict:
    """Evaluates the exported model (`model`: it already loaded with tf.saved_model.load, or None to
    load it) on a split, writes metrics.json and plots."""
    import tensorflow as tf

    from schemas.model_assets import read_model_assets
    from trainer.data import check_model_matches_data

    assets = read_model_assets(model_dir)
    info = check_model_matches_data(assets.cfg, data_dir)
    # A model trained with reviewers' corrections may know labels the data lacks: they come after the data's.
    if assets.labels[:len(info.labels)] != info.labels:
        raise ValueError(f"the data's labels {info.labels} differ from the model's {assets.labels}")
    model = model if model is not None else tf.saved_model.load(model_dir)
    predictions = predict(model, data_dir, split, info=info)
    metrics = evaluate_predictions(predictions["track_id"], predictions["label_id"], predictions["probabilities"],
                                   assets.labels)
    metrics["split"] = split
    tracks = track_level(predictions["track_id"], predictions["label_id"], predictions["probabilities"],
                         predictions["embedding"])
    if assets.calibration is not None:
        metrics["calibration"] = calibration_metrics(tracks, assets)
    out = pathlib.Path(output_dir or model_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    from trainer import plots

    plots.confusion_matrix(metrics, out / "confusion_matrix.png")
    if "calibration" in metrics:
        plots.reliability_diagram(metrics["calibration"], out / "reliability.png",
                                  title=f"Reliability of confidence ({split}, {metrics['tracks']} tracks)")
    plots.embedding_map(tracks["embedding"], [assets.labels[i] for i in tracks["label_id"]],
                        out / "embeddings_pca.png", title=f"Track embeddings ({split}), PCA")
    history = pathlib.Path(model_dir) / "history.csv"
    if history.exists():
        plots.training_curves(history, out / "training_curves.png")
    _LOG.info("evaluate (%s): segment accuracy %.3f, track accuracy %.3f, macro-F1 %.3f over %d tracks",
              split, metrics["segment_accuracy"], metrics["track_accuracy"], metrics["macro_f1"], metrics["tracks"])
    return metrics


def calibrated_tracks(tracks: dict[str, np.ndarray], assets) -> dict[str, np.ndarray]:
    """Per labelled track (`tracks`: track_level output with embeddings): top posterior, calibrated
    confidence, whether the genre is right and whether it is flagged, computed as `cattag tag` does."""
    from transforms.calibration import Calibration

    fitted = Calibration.from_dict(assets.calibration)
    typicality = None
    if assets.typicality is not None:
        reference = aggregate.Typicality.from_dict(assets.typicality)
        typicality = np.array([reference(embedding) for embedding in tracks["embedding"]])
    posterior = tracks["probabilities"]
    confidence = fitted.confidence(posterior.max(axis=1), typicality)
    return {"top": posterior.max(axis=1), "confidence": confidence, "flagged": confidence < fitted.flag_below,
            "right": posterior.argmax(axis=1) == tracks["label_id"], "flag_below": fitted.flag_below}


def calibration_metrics(tracks: dict[str, np.ndarray], assets) -> dict:
    """Reliability curve, ECE and review flags of the calibrated confidence on labelled tracks."""
    from transforms.calibration import expected_calibration_error, summary

    scored = calibrated_tracks(tracks, assets)
    result = summary(scored["confidence"], scored["right"], scored["flag_below"])
    result["ece_uncalibrated"] = expected_calibration_error(scored["top"], scored["right"])
    return result


def add_arguments(parser) -> None:
    parser.add_argument("--data", required=True, help="a `cattag featurize` output directory")
    parser.add_argument("--model", required=True, help="a model directory written by `cattag train`")
    parser.add_argument("--split", default="test", choices=("train", "validation", "test"),
                        help="which split to evaluate on (default %(default)s)")
    parser.add_argument("--output", default=None, help="where metrics.json and plots go (default: the model directory)")



def main(argv: list[str] | None = None) -> dict:
    """`cattag evaluate`: parses flags only."""
    import argparse

    parser = argparse.ArgumentParser(prog="cattag evaluate")
    add_arguments(parser)
    args = parser.parse_args(argv)
    return evaluate_model(args.model, args.data, split=args.split, output_dir=args.output)
