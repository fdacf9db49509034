"""Pretrained presets: which pretrained models cattag knows, where they come from, and where their
conversions are cached. Data only (no TensorFlow): `cattag tag --model musicnn-msd` resolves a
name here, and trainer/pretrained.py does the fetching and converting.

CACHE is $CATTAG_CACHE, else $XDG_CACHE_HOME/cattag, else ~/.cache/cattag; a preset lives in
CACHE/pretrained/NAME/ (preset.json, LICENSE.md, backbone.weights.h5, model/).
"""

from __future__ import annotations

import dataclasses
import pathlib

from schemas.cache import cache_root
from schemas.features import MUSICNN, FeatureConfig

MODEL_SUBDIR = "model"
PRESET_FILE = "preset.json"
BACKBONE_WEIGHTS = "backbone.weights.h5"


@dataclasses.dataclass(frozen=True)
class Wheel:
    name: str
    version: str
    sha256: str

    @property
    def filename(self) -> str:
        return f"{self.name}-{self.version}-py3-none-any.whl"


MUSICNN_WHEEL = Wheel("musicnn", "0.1.0", "f38a4890c648c1ddbb141c5d96d2b0a8cfcd36746002d896989f7b88beb65cfa")


@dataclasses.dataclass(frozen=True)
class Preset:
    """One pretrained model: where its weights are in the wheel and how to read its outputs."""

    name: str
    description: str
    wheel: Wheel
    checkpoint_dir: str  # inside the wheel
    labels_name: str  # the label list's name in the wheel's musicnn/configuration.py
    # The labels that are genres: the `genre` column is the best of these. The rest are moods, eras,
    # instruments and voices. A judgement made once from the tag names, not tuned on any data.
    genre_labels: tuple[str, ...]
    cfg: FeatureConfig = MUSICNN
    licence: str = "ISC (musicnn, Pons and Serra 2019)"


PRESETS = {
    "musicnn-msd": Preset(
        "musicnn-msd", "musicnn trained on the Million Song Dataset's 50 most common last.fm tags",
        MUSICNN_WHEEL, "musicnn/MSD_musicnn", "MSD_LABELS",
        ("rock", "pop", "alternative", "indie", "electronic", "dance", "alternative rock", "jazz", "metal",
         "classic rock", "soul", "indie rock", "electronica", "folk", "punk", "blues", "hard rock", "ambient",
         "experimental", "Hip-Hop", "country", "easy listening", "funk", "electro", "heavy metal",
         "Progressive rock", "rnb", "indie pop", "House", "chillout")),
    "musicnn-mtt": Preset(
        "musicnn-mtt", "musicnn trained on MagnaTagATune's 50 most common tags",
        MUSICNN_WHEEL, "musicnn/MTT_musicnn", "MTT_LABELS",
        ("classical", "techno", "electronic", "rock", "indian", "pop", "new age", "dance", "country", "metal",
         "ambient", "opera", "choral")),
}
DEFAULT_BACKBONE = "musicnn-msd"


class NotCached(ValueError):
    """A pretrained name whose conversion is not in the cache."""


def preset_dir(name: str) -> pathlib.Path:
    return cache_root() / "pretrained" / name


def preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"unknown pretrained model {name!r}: expected one of {', '.join(PRESETS)}")
    return PRESETS[name]


def cached(name: str) -> pathlib.Path:
    """The cache folder of a fetched preset; NotCached (one line, naming the command) otherwise."""
    folder = preset_dir(preset(name).name)
    if not (folder / PRESET_FILE).exists():
        raise NotCached(f"pretrained model {name} is not in the cache ({folder}): run `cattag pretrained fetch {name}` "
                        "(it downloads musicnn's wheel from PyPI once)")
    return folder


def resolve_model(model: str) -> str:
    """A --model value -> a model directory: a pretrained name's cached model, or the path itself."""
    if model in PRESETS:
        return str(cached(model) / MODEL_SUBDIR)
    return model
