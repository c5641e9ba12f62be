"""Text tokenizer: transformers' ``AutoTokenizer`` from a local directory, checked against the model.

MMaDA places image token ``c`` at ``len(tokenizer) + c``, so a tokenizer whose length is not the
checkpoint's image offset would silently shift every image code: :func:`load_tokenizer` refuses
it. :func:`build_char_tokenizer` writes a small offline character-level tokenizer whose special
ids sit where a (possibly shifted) MMaDA id layout puts them; the tests and the README's demo use
it with the tiny checkpoint. :func:`build_word_tokenizer` fits a word-level tokenizer to a corpus
(the synthetic world's texts) under the same layout rules, so a 500-character reasoning text is
about 100 tokens instead of 500.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from . import jsonl
from .config import ModelConfig, TokenIds
from .hf_io import CheckpointError

# token strings of the special ids (LLaDA tokenizer names; reserved MMaDA task tokens)
SPECIAL_STRINGS = {
    "bos": "<|startoftext|>", "eos": "<|endoftext|>", "soi": "<|soi|>", "eoi": "<|eoi|>", "sov": "<|sov|>",
    "eov": "<|eov|>", "t2i": "<|t2i|>", "mmu": "<|mmu|>", "t2v": "<|t2v|>", "v2v": "<|v2v|>", "lvg": "<|lvg|>",
    "ipad": "[iPAD]", "r2i": "<|r2i|>", "interleave": "<|interleave|>", "t2it": "<|t2it|>",
    "start_header": "<|start_header_id|>", "end_header": "<|end_header_id|>", "eot_id": "<|eot_id|>",
    "mask": "<|mdm_mask|>",
}
# MMaDA-Parallel-A / Lumina-DiMOO tag strings (spec mmada_a.md §3; the same names as ``dimoo_tokens``)
DIMOO_SPECIAL_STRINGS = {
    "bos": "<|startoftext|>", "eos": "<|endoftext|>", "newline": "<end-of-line>", "answer_pad": "<|answer_pad|>",
    "system": "<system>", "end_system": "</system>", "user": "<user>", "end_user": "</user>", "boi": "<IMAGE>",
    "eoi": "</IMAGE>", "uncondition": "<uncondition>", "boa": "<answer>", "eoa": "</answer>",
    "mask": "<|mdm_mask|>",
}
THINKING_PREFIX = ("You should first think about the reasoning process in the mind and then provide the user "
                   "with the answer. The reasoning process is enclosed within <think> </think> tags, i.e. "
                   "<think> reasoning process here </think> answer here\n")


class TextTokenizer:
    """Encode/decode text for a MMaDA checkpoint (ids only; prompt layouts add BOS/EOS)."""

    def __init__(self, hf_tokenizer, tokens: TokenIds, source: str = "tokenizer"):
        self.hf = hf_tokenizer
        self.tokens = tokens
        self.source = source

    def __len__(self) -> int:
        return len(self.hf)

    def encode(self, text: str) -> list[int]:
        return list(self.hf(text, add_special_tokens=False)["input_ids"])

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        ids = [int(i) for i in ids if 0 <= int(i) < len(self.hf) and int(i) != self.tokens.mask_id]
        return self.hf.decode(ids, skip_special_tokens=skip_special_tokens)

    def pieces(self, ids: Sequence[int]) -> list[str]:
        """The text of each id on its own (special tokens kept), in one batched decode call."""
        return list(self.hf.batch_decode([[int(i)] for i in ids], skip_special_tokens=False))

    def encode_prompt(self, text: str) -> list[int]:
        """``tokenizer(text)`` with its special tokens, as MMaDA-Parallel-A's scripts call it (BOS
        prepended when the tokenizer adds one; tags such as ``<system>`` are single special tokens)."""
        return list(self.hf(text)["input_ids"])

    def chat(self, question: str, thinking: bool = False) -> list[int]:
        """The MMaDA app/generate chat template with the generation prompt:
        ``BOS <|start_header_id|>user<|end_header_id|>\\n{q}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\\n``."""
        s = SPECIAL_STRINGS
        content = (THINKING_PREFIX if thinking else "") + question.strip()
        text = (f"{s['start_header']}user{s['end_header']}\n{content}{s['eot_id']}"
                f"{s['start_header']}assistant{s['end_header']}\n")
        return [self.tokens.bos_id] + self.encode(text)


def load_tokenizer(path: str | Path, config: ModelConfig) -> TextTokenizer:
    """A tokenizer from a local directory (a checkpoint's ``hf/`` folder or a HF checkpoint)."""
    path = Path(path)
    if (path / "hf").is_dir() and not (path / "tokenizer.json").exists():
        path = path / "hf"
    if not path.is_dir() or not any(path.glob("tokenizer*")):
        raise CheckpointError(f"no tokenizer files (tokenizer.json / tokenizer_config.json) in {path}")
    from transformers import AutoTokenizer
    try:
        hf = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except Exception as e:  # noqa: BLE001 - transformers raises many kinds
        raise CheckpointError(f"{path}: cannot load the tokenizer: {e}") from None
    tokens = config.tokens
    if config.kind == "dimoo" and len(hf) > tokens.image_offset:
        raise CheckpointError(
            f"tokenizer {path} has {len(hf)} tokens but the checkpoint's image codes start at id "
            f"{tokens.image_offset} (text_vocab_size): its ids would collide with image tokens")
    if config.kind == "mmada" and len(hf) != tokens.image_offset:
        raise CheckpointError(
            f"tokenizer {path} has {len(hf)} tokens but the checkpoint puts image code 0 at id "
            f"{tokens.image_offset} (= len(tokenizer) in MMaDA): the tokenizer and the checkpoint do not "
            f"fit together")
    for name in ("bos", "eos"):
        want = getattr(tokens, f"{name}_id")
        got = getattr(hf, f"{name}_token_id", None)
        if got is not None and got != want:
            raise CheckpointError(f"tokenizer {path}: {name} id {got} but the checkpoint expects {want}")
    return TextTokenizer(hf, tokens, str(path))


def _layout_vocab(tokens: TokenIds, size: int, strings: dict[str, str], pieces: Sequence[str]):
    """(vocab, special names) of a tokenizer with ``size`` entries: every special id of ``tokens``
    at its place (its string from ``strings``), ``pieces`` in the free ids from the lowest, the
    rest ``<|reserved_i|>``. ValueError when the pieces do not fit."""
    special = {name: tokens.mask_id if name == "mask" else tokens.special[name]
               for name in strings if name == "mask" or name in tokens.special}
    vocab: dict[str, int] = {strings[name]: i for name, i in special.items() if i < size}
    free = [i for i in range(size) if i not in set(vocab.values())]
    if len(pieces) > len(free):
        raise ValueError(f"{len(pieces)} pieces do not fit in the {len(free)} free ids below {size}")
    vocab.update(zip(pieces, free))
    for i in free[len(pieces):]:
        vocab[f"<|reserved_{i}|>"] = i
    return vocab, list(special)


def _save_fast(tok, strings: dict[str, str], special: list[str], unk: str, out_dir: str | Path, readme: str) -> Path:
    """Wrap a ``tokenizers.Tokenizer`` as a transformers fast tokenizer and save it with a README."""
    from transformers import PreTrainedTokenizerFast
    extra = [strings[n] for n in special if n not in ("bos", "eos", "mask")]
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=strings["bos"], eos_token=strings["eos"],
                                   pad_token=strings["eos"], mask_token=strings["mask"], unk_token=unk,
                                   additional_special_tokens=extra, clean_up_tokenization_spaces=False)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(out_dir))
    (out_dir / "README.md").write_text(readme + "\n")
    return out_dir


def build_char_tokenizer(tokens: TokenIds, out_dir: str | Path, size: int | None = None) -> Path:
    """Write a character-level tokenizer of ``size`` (default: ``tokens.image_offset``) entries
    with every special id of ``tokens`` at its place; printable ASCII fills the free low ids.

    For a MMaDA-Parallel-A layout (``tokens`` has the ``system`` tag) the special strings are
    the -A tags and ``tokenizer(text)`` prepends BOS, as the -A scripts assume."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    size = size or tokens.image_offset
    dimoo = "system" in tokens.special
    strings = DIMOO_SPECIAL_STRINGS if dimoo else SPECIAL_STRINGS
    vocab, special = _layout_vocab(tokens, size, strings, [chr(c) for c in range(32, 127)] + ["\n", "\t"])
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="?"))
    tok.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    tok.decoder = decoders.Fuse()
    if dimoo:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{strings['bos']} $A", pair=f"{strings['bos']} $A $B", special_tokens=[(strings["bos"], tokens.bos_id)])
    return _save_fast(tok, strings, special, "?", out_dir,
                      "Character-level test tokenizer built offline by mmada_jax.tokenizer.build_char_tokenizer; "
                      f"{size} entries, special ids as in the checkpoint's token layout.")


#: pieces of a word-level tokenizer: a word, a digit or a punctuation mark, each with the space
#: before it (so that concatenating the pieces gives the text back exactly), or a run of spaces
WORD_PIECES = r"\s?[A-Za-z]+|\s?[0-9]|\s?[^\sA-Za-z0-9]|\s+"
WORD_UNK = "<|unk|>"


def word_pieces(text: str) -> list[str]:
    """The pieces :func:`build_word_tokenizer`'s tokenizer splits ``text`` into."""
    import re
    return re.findall(WORD_PIECES, text)


def build_word_tokenizer(tokens: TokenIds, texts, out_dir: str | Path, size: int | None = None,
                         min_count: int = 1) -> Path:
    """Write a word-level tokenizer fitted to ``texts`` (an iterable of strings) with every special
    id of ``tokens`` at its place, ``size`` entries (default ``tokens.image_offset``: MMaDA's
    ``len(tokenizer)`` rule). Each piece (:data:`WORD_PIECES`) seen at least ``min_count`` times
    gets an id, the most frequent first; an unseen piece encodes as ``<|unk|>``. Decoding joins the
    pieces, so ``decode(encode(t)) == t`` for every text made of known pieces.

    Raises ValueError (naming the counts) when the pieces do not fit in the free ids."""
    from collections import Counter

    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    size = size or tokens.image_offset
    if "system" in tokens.special:
        raise ValueError("build_word_tokenizer: MMaDA layouts only (this one has MMaDA-Parallel-A tags)")
    counts = Counter(p for t in texts for p in word_pieces(t))
    pieces = sorted((p for p, c in counts.items() if c >= min_count), key=lambda p: (-counts[p], p))
    try:
        vocab, special = _layout_vocab(tokens, size, SPECIAL_STRINGS, [WORD_UNK] + pieces)
    except ValueError as e:
        raise ValueError(f"build_word_tokenizer: {e} (the corpus has {len(pieces)} distinct pieces + "
                         f"{WORD_UNK}); raise min_count (now {min_count})") from None
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=WORD_UNK))
    tok.pre_tokenizer = pre_tokenizers.Split(pattern=Regex(WORD_PIECES), behavior="isolated")
    tok.decoder = decoders.Fuse()
    return _save_fast(tok, SPECIAL_STRINGS, special, WORD_UNK, out_dir,
                      f"Word-level tokenizer built by mmada_jax.tokenizer.build_word_tokenizer: {len(pieces)} "
                      f"pieces (words, digits and punctuation, each with its leading space) fitted to a corpus, "
                      f"{size} entries, special ids as in the checkpoint's token layout.")


def corpus_texts(path: str | Path, fields: Sequence[str] = ("instruction", "reasoning")) -> list[str]:
    """The strings under ``fields`` of every line of a JSONL corpus (``examples.jsonl`` of
    ``train.synthetic`` or of any editing dataset); a line that is not a JSON object, or a field
    that is not a string, is a ValueError naming the file and the line."""
    path = Path(path)
    texts = []
    try:
        for n, rec in jsonl.objects(path):
            for f in fields:
                value = rec.get(f)
                if value is not None and not isinstance(value, str):
                    raise ValueError(f"{path}:{n}: {f!r} must be a string, got {type(value).__name__}")
                if value:
                    texts.append(value)
    except (FileNotFoundError, IsADirectoryError, UnicodeDecodeError) as e:
        raise ValueError(f"corpus {path}: cannot read it ({e})") from None
    if not texts:
        raise ValueError(f"corpus {path}: no texts under {list(fields)}")
    return texts


def fit_word_tokenizer(corpus: str | Path, model_config: str | Path, out_dir: str | Path, *,
                       min_count: int = 1, overwrite: bool = False) -> Path:
    """``python -m train.tokenizer``: a word-level tokenizer (:func:`build_word_tokenizer`) of the
    texts of ``corpus`` in the token layout of ``model_config`` (a YAML config or a checkpoint),
    written to ``out_dir`` through a staging folder (an existing ``out_dir`` is replaced only with
    ``overwrite``, and only once the new one is complete)."""
    import shutil
    import tempfile

    from .config import load_config
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise ValueError(f"{out_dir} exists: pass --overwrite to replace it")
    config = load_config(model_config)
    if not isinstance(config, ModelConfig):
        raise ValueError(f"{model_config}: not a transformer config")
    texts = corpus_texts(corpus)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        build_word_tokenizer(config.tokens, texts, stage, min_count=min_count)
        load_tokenizer(stage, config)   # the layout check every loader applies
        if out_dir.exists():
            shutil.rmtree(out_dir)
        stage.rename(out_dir)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return out_dir
