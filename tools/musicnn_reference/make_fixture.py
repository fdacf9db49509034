"""Build the musicnn reference fixture for the Keras 3 port's parity test.

Runs the ORIGINAL musicnn 0.1.0 TF1 graph (Pons & Serra 2019, ISC licence) on a few
real clips and saves inputs plus outputs/intermediate activations into one compressed
npz (tests/fixtures/musicnn_reference.npz).

This script must NOT run in the project's .venv: the musicnn wheel declares numpy<1.17
and TensorFlow 1, so it lives in an isolated venv with the original code installed with
--no-deps on top of tensorflow-cpu 2.15.1 / numpy 1.26.4.

How to regenerate (from the repo root, e.g. /work/main):

    python3.11 -m venv /tmp/musicnn-ref-venv
    /tmp/musicnn-ref-venv/bin/pip install -r tools/musicnn_reference/requirements.txt
    mkdir -p /tmp/musicnn-wheel
    /tmp/musicnn-ref-venv/bin/pip download musicnn==0.1.0 --no-deps -d /tmp/musicnn-wheel
    echo "f38a4890c648c1ddbb141c5d96d2b0a8cfcd36746002d896989f7b88beb65cfa  /tmp/musicnn-wheel/musicnn-0.1.0-py3-none-any.whl" | sha256sum -c -
    /tmp/musicnn-ref-venv/bin/pip install --no-deps /tmp/musicnn-wheel/musicnn-0.1.0-py3-none-any.whl
    /tmp/musicnn-ref-venv/bin/python tools/musicnn_reference/make_fixture.py \\
        --wheel-dir /tmp/musicnn-wheel --data ../shared/data \\
        --out tests/fixtures/musicnn_reference.npz

The script re-checks the wheel's sha256 and that the installed musicnn package files
(code and the two checkpoints) are byte-identical to the ones inside that wheel.

Notes on what it does (and deliberately does not do):
  * It does NOT call musicnn.extractor.extractor(): that function is buggy (after the
    first batch it repeats that batch's penultimate output, and it silently swallows a
    failed checkpoint restore, running with random weights). Instead it builds the graph
    exactly as extractor() does (tf.compat.v1, eager disabled, tf.name_scope('model'),
    models.define_model, sigmoid on the logits), restores with tf.compat.v1.train.Saver
    from "<package>/<model>/" (checkpoint prefix with trailing slash) and fetches the
    layer tensors directly in ONE sess.run per clip with is_training=False.
  * Input features come from the package's own batch_data(file, n_frames=187,
    overlap=187): librosa.load at 16 kHz, mel n_fft=512 hop=256 96 mels, cast to
    float16, log10(10000*x + 1), then non-overlapping 187-frame patches of the FULL track.
    Under numpy 1.26 (legacy value-based casting) `10000 * float16_array` is promoted to
    FLOAT32 (np.result_type(np.float16, 10000) == float32), so the log is computed in
    float32 on float16-quantised mel power and cannot overflow; under numpy>=2 (NEP 50)
    the same line stays float16 and gives inf for bins with power > ~6.55. The script
    refuses to save patches containing inf/nan and records the dtype and inf counts. The first N patches (default 3)
    of each clip are kept; `M/i/mel` is exactly the float32 array fed to the model.

npz keys (M in MSD_musicnn, MTT_musicnn; i = clip index into `clips`):
  clips            str[n_clips]   clip paths relative to --data
  meta             str            JSON: versions, wheel sha256, settings, inf counts
  M/labels         str[50]
  M/i/mel          float32[3,187,96]  model input (log-mel patches)
  M/i/taggram      float32[3,50]      sigmoid(logits)
  M/i/logits       float32[3,50]      pre-sigmoid logits
  M/i/penultimate  float32[3,200]     batch_normalization_10 output (after dense+ReLU)
  M/i/mean_pool    float32[3,753]     temporal mean of the mid-end feature map
  M/i/max_pool     float32[3,753]     temporal max of the mid-end feature map
"""

import argparse
import hashlib
import json
import os
import platform
import sys
import zipfile

import numpy as np

WHEEL_NAME = "musicnn-0.1.0-py3-none-any.whl"
WHEEL_SHA256 = "f38a4890c648c1ddbb141c5d96d2b0a8cfcd36746002d896989f7b88beb65cfa"
MODELS = ("MSD_musicnn", "MTT_musicnn")
DEFAULT_CLIPS = (
    "gtzan-dev/jazz/jazz.00000.flac",
    "gtzan-dev/metal/metal.00000.flac",
    "catalogue-sample/Kevin_MacLeod_-_Vibe_Ace.ogg",
)
N_FRAMES = 187
N_MELS = 96
NUM_CLASSES = 50


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_install(wheel_path, pkg_dir):
    """Check the installed musicnn files are the ones shipped in the pinned wheel."""
    checked = 0
    with zipfile.ZipFile(wheel_path) as zf:
        for name in zf.namelist():
            if not name.startswith("musicnn/"):
                continue
            rel = name[len("musicnn/"):]
            wanted = rel.endswith(".py") or any(rel.startswith(m + "/") for m in MODELS)
            if not wanted or name.endswith("/"):
                continue
            installed = os.path.join(pkg_dir, rel)
            if not os.path.isfile(installed):
                sys.exit(f"installed musicnn lacks {rel} (from the wheel)")
            if hashlib.sha256(zf.read(name)).hexdigest() != sha256_file(installed):
                sys.exit(f"installed musicnn file {rel} differs from the wheel's")
            checked += 1
    if checked == 0:
        sys.exit("no musicnn files found in the wheel")
    return checked


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wheel-dir", required=True,
                    help=f"folder holding {WHEEL_NAME} (from pip download)")
    ap.add_argument("--data", required=True, help="shared data root (e.g. ../shared/data)")
    ap.add_argument("--out", required=True, help="output .npz path")
    ap.add_argument("--clips", nargs="+", default=list(DEFAULT_CLIPS),
                    help="clip paths relative to --data")
    ap.add_argument("--n-patches", type=int, default=3)
    args = ap.parse_args()

    wheel_path = os.path.join(args.wheel_dir, WHEEL_NAME)
    got = sha256_file(wheel_path)
    if got != WHEEL_SHA256:
        sys.exit(f"{wheel_path}: sha256 {got} != pinned {WHEEL_SHA256}")

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import librosa
    import tensorflow as tf
    import musicnn
    # importing extractor disables eager execution (as the original code does)
    from musicnn import configuration as config
    from musicnn import models
    from musicnn.extractor import batch_data
    tf.compat.v1.disable_eager_execution()

    pkg_dir = os.path.dirname(os.path.abspath(musicnn.__file__))
    n_checked = verify_install(wheel_path, pkg_dir)
    print(f"wheel sha256 ok; {n_checked} installed files match the wheel", file=sys.stderr)

    # ---- features (model independent) ----
    mels = []
    inf_report = {}
    for rel in args.clips:
        path = os.path.join(args.data, rel)
        batch, audio_rep = batch_data(path, N_FRAMES, N_FRAMES)
        if batch.shape[0] < args.n_patches:
            sys.exit(f"{rel}: only {batch.shape[0]} patches, need {args.n_patches}")
        patches = batch[: args.n_patches]
        inf_report[rel] = {
            "dtype": str(batch.dtype),
            "n_patches_full_track": int(batch.shape[0]),
            "inf_in_full_spectrogram": int(np.isinf(audio_rep).sum()),
            "inf_in_saved_patches": int(np.isinf(patches).sum()),
            "nan_in_saved_patches": int(np.isnan(patches).sum()),
        }
        print(f"{rel}: {inf_report[rel]}", file=sys.stderr)
        if not np.all(np.isfinite(patches)):
            sys.exit(f"{rel}: non-finite values in the first {args.n_patches} patches; "
                     "pick another clip")
        mels.append(np.ascontiguousarray(patches.astype(np.float32)))

    out = {
        "clips": np.array(args.clips),
    }

    for model in MODELS:
        labels = config.MSD_LABELS if "MSD" in model else config.MTT_LABELS
        assert len(labels) == NUM_CLASSES
        out[f"{model}/labels"] = np.array(labels)

        tf.compat.v1.reset_default_graph()
        with tf.name_scope("model"):
            x = tf.compat.v1.placeholder(tf.float32, [None, N_FRAMES, N_MELS])
            is_training = tf.compat.v1.placeholder(tf.bool)
            (logits, timbral, temporal, cnn1, cnn2, cnn3,
             mean_pool, max_pool, penultimate) = models.define_model(
                 x, is_training, model, NUM_CLASSES)
            normalized_y = tf.nn.sigmoid(logits)
        graph = tf.compat.v1.get_default_graph()
        flat_pool = graph.get_tensor_by_name("model/flatten/Reshape:0")

        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            saver = tf.compat.v1.train.Saver()
            prefix = os.path.join(pkg_dir, model) + "/"
            saver.restore(sess, prefix)  # no try/except: a failed restore must fail
            # sanity: restored weights equal the checkpoint's
            reader = tf.compat.v1.train.NewCheckpointReader(prefix)
            for v in tf.compat.v1.global_variables():
                ck = reader.get_tensor(v.op.name)
                if not np.array_equal(sess.run(v), ck):
                    sys.exit(f"{model}: variable {v.op.name} not restored")

            for i, mel in enumerate(mels):
                y, lg, pen, mp, xp, fp = sess.run(
                    [normalized_y, logits, penultimate, mean_pool, max_pool, flat_pool],
                    feed_dict={x: mel, is_training: False})
                # document the back-end concat order: flatten(concat([max, mean], axis=2))
                # of [B,753,1] tensors interleaves -> [max_0, mean_0, max_1, mean_1, ...]
                inter = np.stack([xp, mp], axis=-1).reshape(xp.shape[0], -1)
                assert np.array_equal(fp, inter), "unexpected back-end concat order"
                key = f"{model}/{i}"
                out[f"{key}/mel"] = mel
                out[f"{key}/taggram"] = y.astype(np.float32)
                out[f"{key}/logits"] = lg.astype(np.float32)
                out[f"{key}/penultimate"] = pen.astype(np.float32)
                out[f"{key}/mean_pool"] = mp.astype(np.float32)
                out[f"{key}/max_pool"] = xp.astype(np.float32)
                top = np.argsort(-y.mean(axis=0))[:3]
                print(f"{model} {args.clips[i]}: top tags "
                      f"{[labels[t] for t in top]}", file=sys.stderr)

    meta = {
        "musicnn_wheel": WHEEL_NAME,
        "wheel_sha256": WHEEL_SHA256,
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "numpy": np.__version__,
        "librosa": librosa.__version__,
        "soundfile": __import__("soundfile").__version__,
        "n_frames": N_FRAMES,
        "overlap": N_FRAMES,
        "n_patches": args.n_patches,
        "sr": config.SR,
        "fft_size": config.FFT_SIZE,
        "fft_hop": config.FFT_HOP,
        "n_mels": config.N_MELS,
        "features": "musicnn.extractor.batch_data: librosa.load(sr=16000) -> melspectrogram "
                    "-> astype(float16) -> log10(10000*x+1); numpy 1.26 promotes 10000*float16 "
                    "to float32, so the log is float32 arithmetic on float16-quantised power",
        "is_training": False,
        "backend_flatten_order": "interleaved [max_0, mean_0, max_1, mean_1, ...]",
        "batchnorm_epsilon": 1e-3,
        "inf_report": inf_report,
    }
    out["meta"] = np.array(json.dumps(meta, sort_keys=True))

    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    np.savez_compressed(args.out, **out)
    print(f"wrote {args.out} ({os.path.getsize(args.out)} bytes, {len(out)} arrays)",
          file=sys.stderr)


if __name__ == "__main__":
    main()
