"""grain input pipeline over pretokenized SFT records: fixed-shape numpy batches, exact resume.

``make_dataset(data_dir, split, batch_size=B, text_len=L, seed=s)`` returns a
``grain.IterDataset``; ``iter(ds)`` gives a ``grain.DatasetIterator`` of dicts::

    input_image_codes   int32 [B, N]  raw VQ codes (no image offset)
    output_image_codes  int32 [B, N]
    input_text          int32 [B, I]  BOS + instruction + EOS, right-padded with EOS (I = instruction_len,
                                      default L)
    output_text         int32 [B, L]  BOS + reasoning + EOS, right-padded with EOS
    input_text_len      int32 [B]     length before padding (BOS and EOS included)
    output_text_len     int32 [B]
    has_input_image     bool  [B]
    has_instruction     bool  [B]
    id                  str   [B]     only with ``with_ids=True`` (for debugging; not jit-able)

With ``base_text_len`` M (data pretokenized with ``--base-tasks``; base MMaDA's tasks about the
output image, :mod:`mmada_jax.mmada.sft`), also::

    t2i_text            int32 [B, M]  BOS + drawing request + EOS, right-padded with EOS
    t2i_text_len        int32 [B]
    mmu_text            int32 [B, M]  chat-templated question (BOS first) + answer + EOS, right-padded with EOS
    mmu_prompt_len      int32 [B]     the question's length (never masked)

A base-task text over M is an error naming the example (training checks every record first).

A text longer than L is cut to its first L-1 tokens plus EOS (the reference's rule); pretokenize
rejects such examples for its own ``--text-len``, so this only happens with a smaller L here. An
instruction longer than a separate ``instruction_len`` I allows is an error naming the example (a
cut instruction would ask for something else).
An example without instruction gets ``[BOS, EOS, EOS, ...]`` (``input_text_len`` 2). Condition
dropout and masking are NOT done here: the train step draws them (and records the draws).

Order of operations (all lazy, random access over the ArrayRecord source), ``shard="records"``
(the default):

1. per-process sharding: process ``i`` of ``P`` takes records ``i, i+P, i+2P, ...`` of the split,
   cut to ``floor(n / P)`` each so that every process sees the same number of examples (at most
   ``P - 1`` records of the split are unused);
2. a seeded global shuffle (grain ``MapDataset.shuffle``; a new permutation per epoch);
3. repeat for ``num_epochs`` (None: forever);
4. formatting (padding) and batching with ``drop_remainder=True`` (batches may span epochs).

``shard="batch"`` (the SFT loop's): the global batches do not depend on the number of processes.
Every process shuffles and repeats the WHOLE split with the same seed (steps 2-3: one global
stream of examples, cut into global batches of ``batch_size * P``), and process ``i`` reads only
its rows of each global batch (:class:`~.process_rows.ProcessRows`): with ``micro_batches`` A, global batch
``[B]`` is A micro-batches of ``B / A`` rows, and process ``i`` takes the ``i``-th of ``P`` equal
blocks of each, in micro-batch order (its local batch, reshaped ``[A, B / (A P)]``, is its block
of the ``[A, B / A]`` global batch, as ``jax.make_array_from_process_local_data`` assembles it
over a mesh whose batch axes are process-major). With one process both modes give the same
batches.

Resuming: the iterator's ``get_state()`` / ``set_state()`` round-trip exactly (a small dict), and
``grain.checkpoint.CheckpointSave(it)`` / ``CheckpointRestore(it)`` store it inside an Orbax
``ocp.args.Composite`` next to the model state; the restored iterator yields exactly the batches
the saved one would have.

Worker processes: ``worker_count=0`` (default) reads in the calling process with a few prefetch
threads (``read_options``); the records are small and need no decoding, so this is usually
enough. ``worker_count=k`` adds ``mp_prefetch`` with ``k`` processes. Outside ``absl.app.run``
grain then fails with ``UnparsedFlagAccessError: ... --grain_enable_multiprocess_worker_profiling
before flags were parsed``: call ``absl.flags.FLAGS.mark_as_parsed()`` first (this module does it
when ``worker_count > 0`` and the flags are unparsed), keep the entry point under
``if __name__ == "__main__":`` (workers are spawned and re-import the main module), and close the
iterator (or expect harmless "leaked shared_memory" warnings at exit). The state round trip stays
exact with workers.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from . import records


class FormatRecord:
    """record -> padded fixed-shape example (a module-level class, so it pickles for workers)."""

    def __init__(self, bos_id: int, eos_id: int, text_len: int, num_image_tokens: int | None,
                 with_ids: bool = False, instruction_len: int | None = None, base_text_len: int | None = None):
        if text_len < 2:
            raise ValueError(f"text_len must be >= 2 (BOS and EOS), got {text_len}")
        if instruction_len is not None and instruction_len < 3:
            raise ValueError(f"instruction_len must be >= 3 (BOS, instruction, EOS), got {instruction_len}")
        self.bos_id, self.eos_id, self.text_len = int(bos_id), int(eos_id), int(text_len)
        self.instruction_len = None if instruction_len is None else int(instruction_len)
        self.num_image_tokens = num_image_tokens
        self.with_ids = with_ids
        self.base_text_len = None if base_text_len is None else int(base_text_len)

    def pad_text(self, ids: np.ndarray, length: int | None = None) -> tuple[np.ndarray, int]:
        """``BOS + ids + EOS`` right-padded with EOS to ``length`` (default ``text_len``; cut to
        length-2 ids + EOS)."""
        L = length or self.text_len
        out = np.full((L,), self.eos_id, dtype=np.int32)
        out[0] = self.bos_id
        n = min(len(ids), L - 2)
        out[1:1 + n] = ids[:n]
        # the EOS after the text is already there (the padding is EOS)
        return out, n + 2

    def __call__(self, rec: dict) -> dict:
        ex_id = rec["id"].decode() if isinstance(rec["id"], bytes) else str(rec["id"])
        in_codes = np.asarray(rec["input_image_codes"], dtype=np.int32)
        out_codes = np.asarray(rec["output_image_codes"], dtype=np.int32)
        n = self.num_image_tokens
        if n is not None and (in_codes.shape != (n,) or out_codes.shape != (n,)):
            raise ValueError(f"record {ex_id!r}: image codes of shapes {in_codes.shape} and {out_codes.shape}, "
                             f"expected ({n},)")
        instruction = np.asarray(rec["instruction_ids"], dtype=np.int32)
        if self.instruction_len is not None and len(instruction) > self.instruction_len - 2:
            raise ValueError(f"record {ex_id!r}: its instruction has {len(instruction)} tokens, more than "
                             f"instruction_len={self.instruction_len} holds (BOS and EOS included)")
        in_text, in_len = self.pad_text(instruction, self.instruction_len)
        out_text, out_len = self.pad_text(np.asarray(rec["reasoning_ids"], dtype=np.int32))
        ex = {
            "input_image_codes": in_codes,
            "output_image_codes": out_codes,
            "input_text": in_text,
            "output_text": out_text,
            "input_text_len": np.int32(in_len),
            "output_text_len": np.int32(out_len),
            "has_input_image": np.bool_(rec["has_input_image"]),
            "has_instruction": np.bool_(rec["has_instruction"]),
        }
        if self.base_text_len is not None:
            ex.update(self.base_tasks(rec, ex_id))
        if self.with_ids:
            ex["id"] = np.asarray(ex_id)
        return ex

    def base_tasks(self, rec: dict, ex_id: str) -> dict:
        """The base-task texts of a record, padded to ``base_text_len`` (module docstring)."""
        m = self.base_text_len
        prompt = np.asarray(rec["t2i_prompt_ids"], np.int32)
        question = np.asarray(rec["mmu_prompt_ids"], np.int32)
        answer = np.asarray(rec["mmu_answer_ids"], np.int32)
        if len(prompt) + 2 > m or len(question) + len(answer) + 1 > m:
            raise ValueError(f"record {ex_id!r}: its t2i prompt ({len(prompt)} + BOS/EOS) or mmu question + answer "
                             f"({len(question)} + {len(answer)} + EOS) tokens do not fit base_text_len={m}")
        t2i, t2i_len = self.pad_text(prompt, m)
        mmu = np.full((m,), self.eos_id, np.int32)
        mmu[:len(question)] = question
        mmu[len(question):len(question) + len(answer)] = answer
        return {"t2i_text": t2i, "t2i_text_len": np.int32(t2i_len), "mmu_text": mmu,
                "mmu_prompt_len": np.int32(len(question))}


def token_ids(tokens=None, checkpoint: str | Path | None = None, meta: dict | None = None,
              where: str = "") -> tuple[int, int]:
    """(BOS, EOS) from ``tokens`` (a TokenIds), else the checkpoint's config, else the data's
    metadata; a disagreement with the metadata is an error (the data was made for another
    token layout)."""
    meta = meta or {}
    if tokens is None and checkpoint is not None:
        from ..config import load_config
        tokens = load_config(checkpoint).tokens
    if tokens is not None:
        bos, eos = int(tokens.bos_id), int(tokens.eos_id)
        for name, value in (("bos_id", bos), ("eos_id", eos)):
            if name in meta and int(meta[name]) != value:
                raise ValueError(f"{where}: pretokenized with {name}={meta[name]} but the model's token ids "
                                 f"have {name}={value}")
        return bos, eos
    if "bos_id" not in meta or "eos_id" not in meta:
        raise ValueError(f"{where}: no bos_id/eos_id in the dataset metadata; pass tokens= or checkpoint=")
    return int(meta["bos_id"]), int(meta["eos_id"])


def load_split(data_dir: str | Path, split: str):
    """(tfds ArrayRecord data source of ``split``, metadata dict). The shards are checked first
    (:func:`records.check_shards`: a damaged one is an error naming its file) and read errors of
    the source name the shard (:class:`records.NamedShardSource`)."""
    builder = records.open_pretokenized(data_dir)
    splits = list(builder.info.splits.keys())
    if split not in splits:
        raise ValueError(f"{records.dataset_dir(data_dir)}: no split {split!r}; it has {splits}")
    records.check_shards(builder, split)
    try:
        source = builder.as_data_source(split)
    except Exception as e:  # noqa: BLE001 - name the folder
        raise records.DatasetError(f"{records.dataset_dir(data_dir)}: cannot open split {split!r} "
                                   f"({type(e).__name__}: {e})") from None
    return records.NamedShardSource(source, records.shard_files(builder, split)), records.metadata(builder)


def make_dataset(data_dir: str | Path, split: str = "train", *, batch_size: int, text_len: int, seed: int,
                 shuffle: bool = True, num_epochs: int | None = None, process_index: int | None = None,
                 process_count: int | None = None, tokens=None, checkpoint: str | Path | None = None,
                 worker_count: int = 0, read_options=None, with_ids: bool = False,
                 instruction_len: int | None = None, shard: str = "records", micro_batches: int = 1,
                 base_text_len: int | None = None):
    """The batched SFT pipeline (see the module docstring) as a ``grain.IterDataset``.

    ``tokens`` (a :class:`mmada_jax.TokenIds`) or ``checkpoint`` give BOS/EOS; by default they come
    from the dataset's metadata (the checkpoint it was pretokenized for). ``process_index`` /
    ``process_count`` default to ``jax.process_index()`` / ``jax.process_count()``.
    ``batch_size`` is per process (the global batch is ``batch_size * process_count``).
    ``read_options``: a ``grain.ReadOptions`` (default 2 threads, 16 prefetched elements).
    ``instruction_len``: pad instructions to this many tokens instead of ``text_len``.
    ``shard``: ``"records"`` (each process its own records) or ``"batch"`` (each process its rows
    of global batches that do not depend on the process count; ``micro_batches`` per global
    batch): see the module docstring. ``base_text_len``: add the base-task texts (data pretokenized
    with ``--base-tasks``).
    """
    import grain

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if num_epochs is not None and num_epochs < 1:
        raise ValueError(f"num_epochs must be >= 1 or None (forever), got {num_epochs}")
    if process_index is None or process_count is None:
        import jax
        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} not in [0, process_count={process_count})")

    source, meta = load_split(data_dir, split)
    where = f"{records.dataset_dir(data_dir)}[{split}]"
    bos, eos = token_ids(tokens, checkpoint, meta, where)
    if "text_len" in meta and text_len < int(meta["text_len"]):
        warnings.warn(f"{where}: text_len={text_len} is shorter than the --text-len {meta['text_len']} the data "
                      f"was checked against; longer texts are cut to text_len-1 tokens + EOS", stacklevel=2)
    if base_text_len is not None and not meta.get("base_tasks"):
        raise ValueError(f"{where}: base_text_len={base_text_len} needs the base-task fields, but this data was "
                         f"pretokenized without --base-tasks")
    fmt = FormatRecord(bos, eos, text_len, meta.get("num_image_tokens"), with_ids, instruction_len, base_text_len)

    ds = grain.MapDataset.source(source)
    n = len(ds)
    if shard == "records":
        per_process = n // process_count
        if per_process == 0:
            raise ValueError(f"{where}: {n} examples cannot be shared by {process_count} processes")
        ds = ds[process_index:per_process * process_count:process_count]
        if num_epochs is not None and per_process * num_epochs < batch_size:
            raise ValueError(f"{where}: {per_process} examples per process x {num_epochs} epoch(s) make no full "
                             f"batch of {batch_size}")
    elif shard == "batch":
        if micro_batches < 1 or batch_size % micro_batches:
            raise ValueError(f"batch_size {batch_size} (per process) is not a multiple of micro_batches "
                             f"{micro_batches}")
        if num_epochs is not None and n * num_epochs < batch_size * process_count:
            raise ValueError(f"{where}: {n} examples x {num_epochs} epoch(s) make no full global batch of "
                             f"{batch_size * process_count}")
    else:
        raise ValueError(f"shard must be 'records' or 'batch', got {shard!r}")
    if shuffle:
        ds = ds.shuffle(seed=seed)
    if num_epochs != 1:
        ds = ds.repeat(num_epochs)
    if shard == "batch" and process_count > 1:
        from .process_rows import ProcessRows
        ds = ProcessRows(ds, batch_size, process_index, process_count, micro_batches)
    ds = ds.map(fmt).batch(batch_size, drop_remainder=True)
    if read_options is None:
        read_options = grain.ReadOptions(num_threads=2, prefetch_buffer_size=16)
    it_ds = ds.to_iter_dataset(read_options)
    if worker_count > 0:
        _mark_flags_parsed()
        it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
    return it_ds


def _mark_flags_parsed() -> None:
    """grain's worker processes read absl flags; outside absl.app.run they are unparsed (see above)."""
    from absl import flags
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()
