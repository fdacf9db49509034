"""Input pipeline throughput beside training step rate, on this CPU, in one run.

    .venv/bin/python bench/train_bench.py [--data DIR] [--batch-size 32]

Input: examples/s from the gzip TFRecord shards to augmented, batched training tensors
(trainer.data.make_dataset, exactly what `cattag train` feeds Keras), several epochs over the data.
Training: examples/s that one training step consumes, for each architecture, fed from tensors
already in memory (so the input pipeline is not in the measurement). The input pipeline must
deliver at least 5x what the default model's training consumes. Without --data, the GTZAN clips
in ../shared/data are featurized first.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def input_rate(data_dir: str, batch_size: int, epochs: int) -> float:
    from trainer.data import Augment, make_dataset, read_data_info

    info = read_data_info(data_dir)
    dataset = make_dataset(data_dir, "train", info=info, batch_size=batch_size, training=True, augment=Augment())
    for _ in dataset.take(2):  # warm-up: graph tracing, file opening
        pass
    count, started = 0, time.perf_counter()
    for _ in range(epochs):
        for mel, _, _ in dataset:
            count += int(mel.shape[0])
    return count / (time.perf_counter() - started)


def training_rate(arch: str, data_dir: str, batch_size: int, steps: int) -> float:
    import keras
    import numpy as np

    from trainer import models
    from trainer.data import read_data_info

    info = read_data_info(data_dir)
    model = models.build(arch, mel_shape=info.cfg.mel_shape, n_classes=len(info.labels),
                         mel_mean=info.mel_mean, mel_std=info.mel_std)
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.normal(-20, 15, (batch_size * steps, *info.cfg.mel_shape)).astype(np.float32)
    y = keras.utils.to_categorical(rng.integers(0, len(info.labels), len(x)), len(info.labels))
    model.fit(x[:batch_size * 2], y[:batch_size * 2], batch_size=batch_size, epochs=1, verbose=0)  # trace
    started = time.perf_counter()
    model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0, shuffle=False)
    return len(x) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=None)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workdir", default="/tmp/cattag-train-bench")
    args = parser.parse_args()
    data = args.data
    if data is None:
        from pipelines import featurize

        data = f"{args.workdir}/features"
        if not pathlib.Path(data, "metadata.json").exists():
            featurize.run(["--input", str(REPO.parent / "shared/data/gtzan-dev/manifest.csv"), "--output", data,
                           "--splits", "100,0,0", "--overwrite", "--progress", "off"])
    import os

    import tensorflow as tf

    from trainer.models import ARCHITECTURES, DEFAULT_ARCH

    pipeline = input_rate(data, args.batch_size, epochs=3)
    rates = {arch: training_rate(arch, data, args.batch_size, steps=12) for arch in ARCHITECTURES}
    print(f"\n{os.cpu_count()} CPU cores, TensorFlow {tf.__version__}, batch {args.batch_size}, "
          f"GPUs: {len(tf.config.list_physical_devices('GPU'))}\n")
    print("| what | examples/s | input pipeline / this |")
    print("|---|---:|---:|")
    print(f"| input pipeline (TFRecords -> parsed, augmented batches) | {pipeline:.0f} | |")
    for arch, rate in rates.items():
        marker = " (default)" if arch == DEFAULT_ARCH else ""
        print(f"| training step, {arch}{marker} | {rate:.0f} | {pipeline / rate:.1f}x |")


if __name__ == "__main__":
    main()
