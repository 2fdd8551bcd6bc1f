"""The checks every entry point shares (``napari_retina._validate``): numbers, byte counts, a stimulus's shape.

One home each: the type tests :func:`is_int` / :func:`is_real`, the real-number check :func:`check_real`
(stimuli, experiments, the synthetic retina, training), the byte count :func:`size_text` (I/O limits, memory
refusals, the analysis' notes) and the shape check ``batch.check_stimulus_shape`` (a batch's file headers, the
Analyze dock's layers).
"""

from __future__ import annotations

import fractions
import math

import numpy as np
import pytest

from napari_retina._validate import (FLOAT32_MAX, check_int, check_positive, check_real, crop_to, is_int, is_real,
                                     size_text)
from napari_retina.batch import check_stimulus_shape


@pytest.mark.parametrize("value, integer, real", [
    (3, True, True), (np.int64(3), True, True), (np.uint8(3), True, True), (2**80, True, True),
    (3.0, False, True), (np.float32(3), False, True), (fractions.Fraction(1, 3), False, True),
    (True, False, False), (np.bool_(True), False, False), ("3", False, False), (None, False, False),
    (1j, False, False), ([3], False, False),
])
def test_the_type_tests_take_python_and_numpy_numbers_never_bools(value, integer, real):
    assert (is_int(value), is_real(value)) == (integer, real)


@pytest.mark.parametrize("call, error, message", [
    (lambda: check_real("2", "width"), TypeError, "^width must be a number, got str '2'$"),
    (lambda: check_real(True, "width"), TypeError, "^width must be a number, got bool True$"),
    (lambda: check_real(float("nan"), "bias"), ValueError, "^bias must be a finite number, got nan$"),
    (lambda: check_real(0, "speed", low=0, strict=True), ValueError, "^speed must be a finite number > 0, got 0$"),
    (lambda: check_real(-1.5, "l2", low=0), ValueError, r"^l2 must be a finite number >= 0, got -1\.5$"),
    (lambda: check_real(10**400, "x"), ValueError, "^x must be a finite number, got 1000"),   # beyond any float
    (lambda: check_real(1e39, "weight", float32=True), ValueError,
     r"^weight must be within float32 \(\|value\| <= 3\.4e\+38\), got 1e\+39$"),
    (lambda: check_real(-1e39, "intensity", float32=True), ValueError, r"^intensity must be within float32"),
    (lambda: check_real(1e39, "contrast", low=0, strict=True, float32=True), ValueError,
     r"^contrast must be a finite number > 0 within float32 \(<= 3\.4e\+38\), got 1e\+39$"),
    (lambda: check_positive(float("inf"), "scale"), ValueError, "^scale must be a finite number > 0, got inf$"),
    (lambda: check_int(2.0, "frames"), TypeError, "^frames must be an int, got float 2.0$"),
    (lambda: check_int(np.bool_(True), "frames"), TypeError, "^frames must be an int, got bool"),
])
def test_number_checks_refuse_in_one_sentence_saying_what_is_allowed_and_what_came(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_number_checks_accept_numpy_scalars_and_give_python_numbers():
    assert check_real(np.float32(0.5), "x", low=0) == 0.5 and type(check_real(np.int64(2), "x")) is float
    assert check_real(-FLOAT32_MAX, "x", float32=True) == -FLOAT32_MAX
    assert check_real(1e39, "x") == 1e39                      # no float32 limit unless asked
    assert check_int(np.int16(7), "n", 1) == 7 and type(check_int(np.int16(7), "n", 1)) is int


@pytest.mark.parametrize("n_bytes, args, text", [
    (512, (), "512 bytes"), (1536, (), "1.5 KiB"), (3.5 * 2**20, (), "3.5 MiB"), (3 * 10**9, (), "2.79 GiB"),
    (4 * 10**12, (), "3.64 TiB"), (4 * 10**12, ("GiB",), "3.73e+03 GiB"), (2**62, ("GiB", ".1f"), "4294967296.0 GiB"),
    (math.inf, ("GiB",), "inf GiB"), (300 * 2**20, (), "300 MiB"),
])
def test_size_text_writes_byte_counts_in_binary_units(n_bytes, args, text):
    assert size_text(n_bytes, *args) == text


@pytest.mark.parametrize("crop", [None, "center", (0, 0)])
def test_a_stack_smaller_than_the_model_is_refused_whatever_the_crop(crop):
    with pytest.raises(ValueError, match=r"^stimulus is 12x20 pixels, smaller than the 16x16 the model expects, and "
                                         r"a crop cannot make it larger; if its pixels are larger than the model's "
                                         r"55 µm, pass their size in µm as pixel_um to resample it, else pad it to at "
                                         r"least 16x16$"):
        crop_to(np.zeros((2, 12, 20), np.float32), 16, crop)


def test_the_shape_check_says_the_callers_remedy_for_a_larger_stack_without_a_crop():
    """A batch says its spec's key, the Analyze dock its crop choice, the API its argument: the decision is one."""
    with pytest.raises(ValueError, match=r"^the stimulus in a\.npy is 20x20 pixels but the model expects 16x16; "
                                         r"set the spec's 'crop'"):
        check_stimulus_shape((30, 20, 20), 10, 16, None, "the stimulus in a.npy")
    with pytest.raises(ValueError, match=r"^Layer 'm' is 20x20 pixels but the model expects 16x16; choose a crop$"):
        check_stimulus_shape((30, 20, 20), 10, 16, None, "Layer 'm'", "choose a crop")
    with pytest.raises(ValueError, match=r"^stimulus is 20x20 pixels but the model expects 16x16; pass crop='center'"):
        crop_to(np.zeros((2, 20, 20), np.float32), 16, None)
    with pytest.raises(ValueError, match=r"^Layer 'm' has 5 frame\(s\) but the model needs at least its history"):
        check_stimulus_shape((5, 16, 16), 10, 16, None, "Layer 'm'", "choose a crop")
    with pytest.raises(ValueError, match=r"must not be empty"):
        check_stimulus_shape((0, 16, 16), 10, 16, None, "Layer 'm'")
    check_stimulus_shape((30, 20, 20), 10, 16, "center", "Layer 'm'")   # a window cut out of a larger stack
