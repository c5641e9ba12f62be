"""The MMaDA-Parallel-M job: a request without an input image is a generation request whose input
is a black image (what parallel SFT's data builder gives such examples); the instruction padding
option of the SFT layout."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, golden_path
from mmada_jax.app import load_pipeline
from mmada_jax.app.requests import Request
from mmada_jax.app.tasks import ParallelM, _encode

pytestmark = pytest.mark.golden


@pytest.fixture(scope="module")
def pipe():
    return load_pipeline(golden_path("mmada_tiny"), golden_path("magvitv2_tiny"), ROOT / "tests/fixtures/tiny_tokenizer")


def test_missing_input_image_is_a_black_image(pipe):
    size = pipe.vq.config.image_size
    black = np.asarray(pipe.vq.encode(pipe.vq.load_images([Image.new("RGB", (size, size))], size=size)))
    np.testing.assert_array_equal(_encode(pipe, [None], size), black)
    task = ParallelM()
    options = task.options()
    assert task.request_errors(pipe, Request(prompt="Draw a red circle.", image=None), options, False) == []


def test_pad_instruction_budget_and_layout(pipe):
    task = ParallelM()
    options = task.options(pad_instruction=12)
    assert task.budget(pipe, options) == 10                 # BOS and EOS take two of the 12 slots
    errors = task.request_errors(pipe, Request(prompt="x" * 11, image=None), options, False)
    assert errors and "budget of 10" in errors[0]
    pairs, n = task.inputs(pipe, [Request(prompt="abc", image=None)], task.settings(), options, seed=0,
                           log=lambda *_: None)
    cond, uncond = pairs[0]
    assert len(cond) == len(uncond) == 3 + n + 12
