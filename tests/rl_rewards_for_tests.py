"""A reward for the tests (a user's callable, as ``reward_function`` names it)."""

import numpy as np


def brightness(requests, texts, images):
    """Mean brightness of the image at each recorded step, 0-1."""
    return np.asarray(images, np.float64).mean(axis=(2, 3, 4)) / 255.0


def text_length(requests, texts, images):
    """Characters of each text (what a text task's rollouts differ in)."""
    return np.asarray([[len(t) for t in row] for row in texts], np.float64)
