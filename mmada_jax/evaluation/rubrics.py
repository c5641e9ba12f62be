"""ParaBench's six judge rubrics, in our own words, versioned: the one place their texts live.

MMaDA-Parallel's ParaBench scores every output with six questions put to a VLM judge (GPT-4.1),
each answered with an integer 1-5 and a reason as JSON (the paper's App. K gives the editing
prompts; generation prompts are "the same format with minor modifications"). The paper's prompts
are not ours to copy: these rubrics ask the same questions with the same anchors, written afresh.
Change any text here and bump :data:`RUBRIC_VERSION`: it is recorded with every result and is part
of the judge cache's key, so old answers are never reused for a new rubric.

Each :class:`Rubric` says what the judge sees (``inputs``: the instruction, the input image, the
output image, the output text) for an edit item (one with an input image) and a generation item,
and the JSON key of its score (the paper's key names). Image Consistency is asked for edits only.
"""

from __future__ import annotations

import dataclasses

RUBRIC_VERSION = "parabench-rubrics-v1"

#: what a rubric may show the judge, in the order the request lists them
INPUTS = ("instruction", "input_image", "output_image", "output_text")

_ANSWER = ("Answer with one JSON object and nothing else: {{\"reason\": \"<one or two sentences>\", "
           "\"{key}\": <integer from 1 to 5>}}.")


@dataclasses.dataclass(frozen=True)
class Rubric:
    metric: str                    # ParaBench's column name
    key: str                       # the JSON key of the score in the judge's answer
    edit_inputs: tuple[str, ...]
    edit_text: str
    generation_inputs: tuple[str, ...] | None = None    # None: not asked for generation items
    generation_text: str | None = None

    def applies(self, edit: bool) -> bool:
        return edit or self.generation_inputs is not None

    def inputs(self, edit: bool) -> tuple[str, ...]:
        return self.edit_inputs if edit else self.generation_inputs

    def prompt(self, edit: bool) -> str:
        """The rubric's instructions to the judge, ending with the answer format."""
        body = self.edit_text if edit else self.generation_text
        return body.strip() + "\n\n" + _ANSWER.format(key=self.key)


_SCALE_NOTE = "Use the whole scale; give 5 only when nothing is wrong."

_IMAGE_QUALITY = f"""
You grade the visual QUALITY of one image, whatever it was meant to show. Go through this
checklist and mark each point as met or not met: coherent structure (objects whole, plausible
shapes); natural appearance; no artifacts (noise, smears, broken patterns, duplicated parts);
faithful textures; balanced composition; harmonious colours. Low resolution alone is not a
flaw.
Score: 5 = every point met; 4 = one minor flaw; 3 = noticeable flaws that do not hide the
content; 2 = major flaws that make parts unrecognisable; 1 = mostly noise or broken.
{_SCALE_NOTE}"""

RUBRICS: tuple[Rubric, ...] = (
    Rubric(
        "Text Quality", "text_quality_score",
        ("instruction", "output_text"), f"""
You grade the REASONING TEXT a model wrote before editing an image as instructed. Judge the
writing itself. Go through this checklist and mark each point as met or not met:
- clear: easy to follow, no garbled or repeated fragments;
- complete: covers what the edit needs, with no unfinished sentences;
- consistent: no statement contradicts another;
- relevant: stays on the requested edit;
- concise: no padding or rambling;
- accurate: nothing stated is plainly false.
Score: 5 = every point met; 4 = one minor point missed; 3 = two points missed or one major
flaw; 2 = mostly unclear, incomplete or off-topic; 1 = unreadable or unrelated. {_SCALE_NOTE}""",
        ("instruction", "output_text"), f"""
You grade the REASONING TEXT a model wrote before generating an image for a prompt. Judge the
writing itself. Go through this checklist and mark each point as met or not met:
- clear: easy to follow, no garbled or repeated fragments;
- complete: plans what the image needs, with no unfinished sentences;
- consistent: no statement contradicts another;
- relevant: stays on the prompt;
- concise: no padding or rambling;
- accurate: nothing stated is plainly false.
Score: 5 = every point met; 4 = one minor point missed; 3 = two points missed or one major
flaw; 2 = mostly unclear, incomplete or off-topic; 1 = unreadable or unrelated. {_SCALE_NOTE}"""),
    Rubric(
        "Text Alignment", "text_alignment_score",
        ("instruction", "input_image", "output_text"), f"""
You check whether a model's REASONING TEXT understood an image-editing request. You see the
input image, the instruction and the reasoning. Work in steps: restate what the instruction
asks; note what the input image shows that matters for it; read what the reasoning says will
change and why; compare the two.
Score: 5 = the reasoning interprets the request exactly and describes the input image
faithfully, with nothing omitted or invented; 4 = correct with a small omission or imprecision;
3 = gets the main change but misreads a detail or invents a minor edit; 2 = misreads the
request or the image in a way that would change the result; 1 = unrelated to the request or
the image. {_SCALE_NOTE}""",
        ("instruction", "output_text"), f"""
You check whether a model's REASONING TEXT understood an image-generation prompt. You see the
prompt and the reasoning. Work in steps: list what the prompt asks for (objects, counts,
attributes, relations, style); read what the reasoning plans; compare the two.
Score: 5 = every requested element is planned correctly and nothing contradicts the prompt;
4 = a small omission or imprecision; 3 = the main subject is right but a requested detail is
missing or wrong; 2 = several requested elements missing or wrong; 1 = unrelated to the prompt.
{_SCALE_NOTE}"""),
    Rubric(
        "Image Consistency", "consistency_score",
        ("instruction", "input_image", "output_image"), """
You check an image EDIT for unwanted changes. You see the input image, the instruction and the
edited output image. Ignore the changes the instruction asks for; look only at everything else
(other objects, background, layout, identity, colours, lighting, style).
Score: 5 = everything not mentioned by the instruction is unchanged; 4 = one tiny incidental
change; 3 = one clear unrequested change; 2 = two or more unrequested changes; 1 = the scene,
the subject's identity or the layout has been replaced."""),
    Rubric(
        "Image Alignment", "instruction_score",
        ("instruction", "input_image", "output_image"), f"""
You check whether an image EDIT did what was asked. You see the input image, the instruction and
the edited output image. Work in steps: find what differs between the two images; write for
yourself the caption the correctly edited image should have; check whether the output matches
it. Judge only the requested change (unrequested changes are graded elsewhere).
Score: 5 = the requested change is made exactly; 4 = made with a small flaw (size, position,
shade); 3 = partly made, or made on the wrong object or in the wrong way; 2 = barely
attempted; 1 = not made at all, or the opposite. {_SCALE_NOTE}""",
        ("instruction", "output_image"), f"""
You check whether a generated image shows what the prompt asks. You see the prompt and the
image. Work in steps: list the requested objects, counts, attributes, relations and style; look
for each in the image.
Score: 5 = everything requested is shown correctly; 4 = one small detail off; 3 = the main
subject is right but a requested element is missing or wrong; 2 = most requested elements are
missing or wrong; 1 = unrelated to the prompt. {_SCALE_NOTE}"""),
    Rubric(
        "Image Quality", "quality_score",
        ("output_image",), _IMAGE_QUALITY, ("output_image",), _IMAGE_QUALITY),
    Rubric(
        "Output Alignment", "output_alignment_score",
        ("input_image", "output_image", "output_text"), f"""
You check whether an edited image AGREES WITH THE REASONING TEXT the same model wrote alongside
it. You see the input image, the output image and the reasoning text. Work in steps: extract
every visual claim the reasoning makes or clearly implies about the result (objects, colours,
positions, sizes, what changes and what stays); look at the output image for each; decide how
many hold. Judge agreement with the text, not whether the edit was a good idea.
Score: 5 = every claim holds in the image; 4 = one minor claim fails; 3 = the main claim holds
but some others fail; 2 = the main claim fails; 1 = the image and the text describe different
things. {_SCALE_NOTE}""",
        ("output_image", "output_text"), f"""
You check whether a generated image AGREES WITH THE REASONING TEXT the same model wrote
alongside it. You see the image and the reasoning text. Work in steps: extract every visual
claim the reasoning makes or clearly implies (objects, counts, colours, positions, style); look
at the image for each; decide how many hold. Judge agreement with the text only.
Score: 5 = every claim holds in the image; 4 = one minor claim fails; 3 = the main claim holds
but some others fail; 2 = the main claim fails; 1 = the image and the text describe different
things. {_SCALE_NOTE}"""),
)

BY_METRIC = {r.metric: r for r in RUBRICS}

#: 1-5 judge scores to ParaBench's 0-100 tables (the paper does not say which; pick with --scale)
SCALES = {"x20": lambda s: 20.0 * s,               # 1..5 -> 20..100 (default)
          "from1": lambda s: 25.0 * (s - 1)}        # 1..5 -> 0..100
