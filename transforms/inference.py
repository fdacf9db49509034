"""A Beam ModelHandler for cattag's exported SavedModel.

Beam's TFModelHandler* load models with `keras.models.load_model`, which Keras 3 refuses for
SavedModel directories; this handler loads with `tf.saved_model.load` and calls the `serve`
endpoint (log-mel in, probabilities and embedding out). RunInference gives it batching
(BatchElements) and one loaded model per worker process, shared by the process's threads.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from apache_beam.ml.inference.base import ModelHandler, PredictionResult

_LOG = logging.getLogger(__name__)


# Segments per model call. On CPU 16 runs as fast as 64 and holds 1.4 GB less per musicnn worker
# (bench/RESULTS.md, "Tag workers' memory"); a GPU wants more (--inference-batch-size).
DEFAULT_BATCH_SIZE = 16


def padded_batch_size(n: int, max_batch_size: int) -> int:
    """The batch size the model is called with for n examples: the next power of two, at most the
    largest batch (n itself when it is larger).

    Each batch shape the model sees costs TensorFlow memory that the worker process keeps. With
    BatchElements' adaptive sizes (1 to 64) a tag worker grew through the whole run (musicnn-msd:
    2.3 GB after 10^3 tracks, 4.7 GB after 10^4); with fixed full batches it stays flat. Full batches
    are what batch_elements_kwargs asks for; the last batch of a bundle is padded to one of a few
    sizes here, so that many small bundles (Flink, the watch) add no new shapes either.
    """
    if n < 1:
        raise ValueError(f"a batch of {n} examples")
    return min(1 << (n - 1).bit_length(), max(n, max_batch_size))


class SavedModelHandler(ModelHandler[np.ndarray, PredictionResult, Any]):
    """Examples are float32 log-mels [frames, n_mels]; each inference is a dict with
    `probabilities` [n_classes] and `embedding` [dim] (numpy, float32)."""

    def __init__(self, model_dir: str, *, max_batch_size: int = DEFAULT_BATCH_SIZE, intra_op_threads: int = 0):
        super().__init__()
        if max_batch_size < 1:
            raise ValueError(f"--inference-batch-size {max_batch_size}: expected at least 1")
        self._model_dir = model_dir
        self._max_batch_size = max_batch_size
        self._intra_op_threads = intra_op_threads

    def load_model(self) -> Any:
        import tensorflow as tf

        if self._intra_op_threads:
            try:  # only possible before this process's first TensorFlow op
                tf.config.threading.set_intra_op_parallelism_threads(self._intra_op_threads)
            except RuntimeError as err:
                _LOG.warning("inference threads left as they are (%s)", err)
        return tf.saved_model.load(self._model_dir)

    def run_inference(
        self, batch: Sequence[np.ndarray], model: Any, inference_args: dict[str, Any] | None = None
    ) -> Iterable[PredictionResult]:
        stacked = np.stack(batch).astype(np.float32, copy=False)
        padded = padded_batch_size(len(stacked), self._max_batch_size)
        if padded > len(stacked):
            stacked = np.concatenate([stacked, np.zeros((padded - len(stacked), *stacked.shape[1:]), np.float32)])
        outputs = model.serve(stacked)
        probabilities = outputs["probabilities"].numpy()[:len(batch)]
        embeddings = outputs["embedding"].numpy()[:len(batch)]
        return [
            PredictionResult(example, {"probabilities": p, "embedding": e}, self._model_dir)
            for example, p, e in zip(batch, probabilities, embeddings, strict=True)
        ]

    def get_num_bytes(self, batch: Sequence[np.ndarray]) -> int:
        return sum(example.nbytes for example in batch)

    def batch_elements_kwargs(self) -> dict[str, int]:
        # Full batches only (a bundle's last one excepted): one shape, flat memory (padded_batch_size).
        return {"min_batch_size": self._max_batch_size, "max_batch_size": self._max_batch_size}

    def get_metrics_namespace(self) -> str:
        return "cattag_inference"
