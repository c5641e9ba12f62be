"""MMaDA-Parallel-A (and Lumina-DiMOO, whose architecture, token table and aMUSEd VQ it shares):
``<system>``/``<user>`` turns, an answer holding the output image grid (NEWLINE after each row)
then the reasoning text. Checkpoints of this family have config kind ``dimoo``.

* :mod:`.layout` - the sequence (``Layout``), written once;
* :mod:`.prompts` - editing and image-generation inputs from token ids;
* :mod:`.sampler` - the joint editing sampler (``generate``, ``Settings``);
* :mod:`.image` - DiMOO text-to-image / image-to-image (``generate_image``, ``ImageSettings``);
* :mod:`.sft` - -A SFT (inputs built in the jitted step, loss).
"""

from .image import ImageSettings, generate_image
from .layout import Layout, output_grid
from .prompts import EditPrompt, ImagePrompt, edit_prompt, image_prompt
from .sampler import Settings, generate

__all__ = ["EditPrompt", "ImagePrompt", "ImageSettings", "Layout", "Settings", "edit_prompt", "generate",
           "generate_image", "image_prompt", "output_grid"]
