"""fingerprint(samples, rate) -> Chromaprint's raw fingerprint: one 32-bit word per ~124 ms of audio.

Through Debian's libchromaprint (LGPL-2.1, loaded with ctypes; `make test` installs libchromaprint1),
fed the mono samples the pipelines decode anyway, at 11025 Hz (the rate its algorithm works at), so
the fingerprint does not depend on the file's rate, channels or encoding, and copies of one recording
give words that mostly agree bit for bit (transforms/duplicates.py compares them). The resampling is
soxr's quick cubic, not Chromaprint's own filter, which took two thirds of the fingerprint's time (9.7
against 4.6 ms a 30 s clip at 16 kHz). The algorithm reads chroma below 3.5 kHz only: on 20 GTZAN clips
the words differ from those after soxr's very-high-quality filter in 0.2% of bits (0.6% at most), where
copies of one recording differ in up to 7% and distinct recordings in 40% (bench/RESULTS.md).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

import numpy as np
import soxr

ALGORITHM = 1  # CHROMAPRINT_ALGORITHM_TEST2, the library's default and AcoustID's
RATE_HZ = 11025
ITEM_S = 4096 / 3 / RATE_HZ  # seconds of audio per fingerprint word (the algorithm's hop at 11025 Hz)
MAX_S = 120.0  # the first two minutes, as fpcalc and AcoustID take: enough to tell recordings apart, and it
# bounds what each track carries through the clustering (about 970 words) however long the track is
_CHUNK = 1 << 16


class ChromaprintError(RuntimeError):
    pass


@functools.cache
def _library() -> ctypes.CDLL:
    name = ctypes.util.find_library("chromaprint") or "libchromaprint.so.1"
    try:
        lib = ctypes.CDLL(name)
    except OSError as err:
        raise ChromaprintError("libchromaprint is not installed on this worker (Debian: apt install "
                               "libchromaprint1)") from err
    lib.chromaprint_new.restype = ctypes.c_void_p
    lib.chromaprint_new.argtypes = [ctypes.c_int]
    lib.chromaprint_free.argtypes = [ctypes.c_void_p]
    lib.chromaprint_start.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
    lib.chromaprint_feed.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_int16), ctypes.c_int]
    lib.chromaprint_finish.argtypes = [ctypes.c_void_p]
    lib.chromaprint_get_raw_fingerprint.argtypes = [
        ctypes.c_void_p, ctypes.POINTER(ctypes.POINTER(ctypes.c_uint32)), ctypes.POINTER(ctypes.c_int)]
    lib.chromaprint_dealloc.argtypes = [ctypes.c_void_p]
    return lib


def fingerprint(samples: np.ndarray, rate_hz: int) -> np.ndarray:
    """uint32 [words]: the raw fingerprint of the first MAX_S seconds of mono float samples in [-1, 1]
    (empty for under ~3 s)."""
    lib = _library()
    head = samples[:int(MAX_S * rate_hz)]
    if rate_hz != RATE_HZ:
        head, rate_hz = soxr.resample(head, rate_hz, RATE_HZ, quality="QQ"), RATE_HZ
    pcm = np.ascontiguousarray(np.clip(head, -1.0, 1.0) * 32767.0, dtype=np.int16)
    context = lib.chromaprint_new(ALGORITHM)
    if not context:
        raise ChromaprintError("chromaprint_new failed")
    try:
        if not lib.chromaprint_start(context, int(rate_hz), 1):
            raise ChromaprintError(f"chromaprint_start refused {rate_hz} Hz")
        for start in range(0, len(pcm), _CHUNK):
            chunk = pcm[start:start + _CHUNK]
            if not lib.chromaprint_feed(context, chunk.ctypes.data_as(ctypes.POINTER(ctypes.c_int16)), len(chunk)):
                raise ChromaprintError("chromaprint_feed failed")
        if not lib.chromaprint_finish(context):
            raise ChromaprintError("chromaprint_finish failed")
        words, size = ctypes.POINTER(ctypes.c_uint32)(), ctypes.c_int()
        if not lib.chromaprint_get_raw_fingerprint(context, ctypes.byref(words), ctypes.byref(size)):
            raise ChromaprintError("chromaprint_get_raw_fingerprint failed")
        try:
            return np.ctypeslib.as_array(words, shape=(size.value,)).copy() if size.value else np.zeros(0, np.uint32)
        finally:
            lib.chromaprint_dealloc(words)
    finally:
        lib.chromaprint_free(context)
