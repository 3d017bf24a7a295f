"""``tf.image.resize`` in NumPy, for models trained on TensorFlow's resizing.

Models trained with ``image_dataset_from_directory``, ``keras.utils.smart_resize`` or
``tf.image.resize`` saw TensorFlow's resampling, which differs from Pillow's (Pillow
always widens its filters when it shrinks an image, TensorFlow only with
``antialias=True``; their edges differ too). The workers serve models without
importing TensorFlow (an ONNX Runtime worker stays at about 100 MB), so its kernels
are rebuilt here on float32 arrays, each a separable resampling along the rows,
then the columns, with TensorFlow's half-pixel centres:

- ``nearest``: the input pixel under each output pixel's centre;
- ``bilinear`` and ``bicubic`` (Keys, a = -0.5): the kernel at the centre, widened
  when shrinking with ``antialias=True``; taps beyond an edge are dropped and the
  weights renormalised, except for bilinear without antialiasing, which repeats the
  edge pixel (TensorFlow's ``ResizeBilinear``);
- ``area``: each output pixel averages the input it covers, weighted by overlap.

``tests/test_preprocessing.py`` checks each against TensorFlow itself.
"""

from __future__ import annotations

import numpy as np

TF_METHODS = ("nearest", "bilinear", "bicubic", "area")
BICUBIC_TABLE_STEPS = 1024


def _triangle(x: np.ndarray) -> np.ndarray:
    return np.maximum(0.0, 1.0 - np.abs(x))


def _keys_cubic(x: np.ndarray, a: float = -0.5) -> np.ndarray:
    x = np.abs(x)
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return np.where(x <= 1, near, np.where(x < 2, far, 0.0))


_KERNELS = {"bilinear": (_triangle, 1.0), "bicubic": (_keys_cubic, 2.0)}


def _weights(in_size: int, out_size: int, method: str, antialias: bool) -> np.ndarray:
    """The (out_size, in_size) matrix that resamples one axis."""
    scale = in_size / out_size
    centres = (np.arange(out_size) + 0.5) * scale  # in input coordinates
    matrix = np.zeros((out_size, in_size), dtype=np.float64)
    rows = np.arange(out_size)
    if method == "nearest":
        matrix[rows, np.minimum(np.floor(centres).astype(int), in_size - 1)] = 1.0
        return matrix
    if method == "area":
        starts, ends = rows * scale, (rows + 1) * scale
        pixels = np.arange(in_size)
        overlap = np.minimum(ends[:, None], pixels + 1) - np.maximum(starts[:, None], pixels)
        matrix = np.maximum(overlap, 0.0)
        return matrix / matrix.sum(axis=1, keepdims=True)
    kernel, support = _KERNELS[method]
    widen = max(scale, 1.0) if antialias else 1.0
    radius = support * widen
    first = np.floor(centres - radius).astype(int)
    taps = first[:, None] + np.arange(int(np.ceil(2 * radius)) + 2)
    positions = centres - 0.5  # of each output pixel, in input pixel indices
    if method == "bicubic" and not antialias:
        # TensorFlow's ResizeBicubic reads its kernel from a table of 1024 steps.
        whole, steps = np.floor(positions), BICUBIC_TABLE_STEPS
        positions = whole + np.round((positions - whole) * steps) / steps
    weights = kernel((taps - positions[:, None]) / widen)
    if antialias or method == "bicubic":  # taps off the image are dropped
        weights = np.where((taps >= 0) & (taps < in_size), weights, 0.0)
    np.add.at(matrix, (np.repeat(rows, taps.shape[1]), np.clip(taps, 0, in_size - 1).ravel()),
              weights.ravel())  # fmt: skip
    return matrix / matrix.sum(axis=1, keepdims=True)


def tf_resize(
    pixels: np.ndarray, size: tuple[int, int], method: str, antialias: bool = False
) -> np.ndarray:
    """``tf.image.resize(pixels, (height, width), method, antialias)`` for an
    (height, width, channels) array; ``size`` is (width, height) as elsewhere."""
    width, height = size
    rows = _weights(pixels.shape[0], height, method, antialias)
    columns = _weights(pixels.shape[1], width, method, antialias)
    # In float32, as TensorFlow computes: no float64 copy of a whole photo.
    resized = np.einsum("oh,hwc->owc", rows.astype(np.float32), pixels.astype(np.float32))
    return np.einsum("pw,owc->opc", columns.astype(np.float32), resized)
