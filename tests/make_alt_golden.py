"""Build an ALTERNATIVE golden directory (same layout as tests/golden, other sizes) to check that the
golden tests take every size from the data.

    .venv/bin/python tests/make_alt_golden.py /tmp/alt_golden [--src tests/golden] [--seed 1]
    MMADA_GOLDEN_DIR=/tmp/alt_golden .venv/bin/python -m pytest -m golden \
        tests/test_config.py tests/test_convert.py tests/test_model.py \
        tests/test_sampling_a.py::test_layout_of_the_sampler_inputs_is_prompting_a \
        tests/test_sampling_a.py::test_batch_of_prompts_equals_single_runs
    (``--mmada-layers 2`` makes a variant with fewer transformer blocks than the visible set)

Without the PyTorch reference only some parts can be regenerated; everything else is copied:

* ``mmada_tiny/`` and ``dimoo_tiny/``: new random checkpoints with other sizes (d_model, head count,
  layer count, MLP width, codebook and vocabulary), written directly in the reference layout
  described in the README (two float32 safetensors shards + index, ``config.json`` = the golden
  file with the size keys changed, ``generation_config.json`` copied). ``inputs.npz`` holds the
  same keys with other lengths; ``outputs.npz`` the same keys computed by OUR model on the new
  weights. So on these two folders the logits tests check only self-consistency and that no size is
  assumed, NOT parity with the reference.
* ``samplers_a/ti2ti_readme.npz``: only the input side of the run (``params``, ``input_ids``,
  ``uncon_text``, ``uncon_image``, ``image_position_mapping``, ``image_steps``, ``system_ids``,
  ``instruction_ids``, ``input_image_codes``), rebuilt by hand from the README (§7, §8) for a
  NON-SQUARE 2 x 3 input image, a 3 x 2 output grid, other text length and step counts. The
  recorded outputs of the reference cannot be regenerated, so the replay tests must not be run
  on this folder (their keys are absent).
* everything else (VQ models, prompting, samplers, losses) is copied unchanged; the tests reading
  them together with the resized models (samplers, losses, the sample CLI, training) are not
  meaningful on this folder.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

ROOT = Path(__file__).resolve().parent.parent

# other sizes than the visible set; d_model divisible by n_heads, head_dim even (RoPE half split)
MMADA_SIZES = dict(d_model=48, n_heads=6, n_kv_heads=6, n_layers=4, mlp_hidden_size=100, codebook_size=48,
                   num_vq_tokens=9)
DIMOO_SIZES = dict(d_model=40, n_heads=5, n_kv_heads=5, n_layers=2, mlp_hidden_size=120, codebook_size=48)

# small-layout ids (README "Token-id layouts"; every real id - 125952)
M = dict(bos=128, eos=129, soi=132, eoi=133, ipad=141, t2i=136, interleave=143, mask=384, offset=397, llm_vocab=512)
A = dict(bos=128, newline=132, mask=384, system=388, end_system=389, user=390, end_user=391, boi=397, eoi=398,
         uncondition=399, boa=402, eoa=403, offset=404)


def random_weights(rng, d, heads, kv_heads, layers, hidden, vocab) -> dict[str, np.ndarray]:
    hd = d // heads
    w = lambda *shape: (rng.standard_normal(shape) * 0.05).astype(np.float32)  # noqa: E731
    gain = lambda: (1 + 0.2 * rng.standard_normal(d)).astype(np.float32)  # noqa: E731
    out = {"model.transformer.wte.weight": w(vocab, d)}
    for layer in range(layers):
        p = f"model.transformer.blocks.{layer}."
        out.update({p + "attn_norm.weight": gain(), p + "q_proj.weight": w(d, d),
                    p + "k_proj.weight": w(kv_heads * hd, d), p + "v_proj.weight": w(kv_heads * hd, d),
                    p + "attn_out.weight": w(d, d), p + "ff_norm.weight": gain(), p + "ff_proj.weight": w(hidden, d),
                    p + "up_proj.weight": w(hidden, d), p + "ff_out.weight": w(d, hidden)})
    out["model.transformer.ln_f.weight"] = gain()
    out["model.transformer.ff_out.weight"] = w(vocab, d)
    return out


def write_checkpoint(dst: Path, config: dict, tensors: dict[str, np.ndarray]) -> None:
    """Two shards + index, as ``save_pretrained(..., max_shard_size=...)`` wrote the goldens."""
    for f in dst.glob("model*.safetensors*"):
        f.unlink()
    keys = sorted(tensors)
    half = len(keys) // 2
    weight_map = {}
    for i, part in enumerate((keys[:half], keys[half:])):
        name = f"model-0000{i + 1}-of-00002.safetensors"
        save_file({k: tensors[k] for k in part}, str(dst / name), metadata={"format": "pt"})
        weight_map.update({k: name for k in part})
    total = sum(v.nbytes for v in tensors.values())
    (dst / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    (dst / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))


def model_outputs(dst: Path, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Our model's outputs for ``inputs`` (self-consistency data, not reference parity)."""
    from mmada_jax import load_model
    model, _ = load_model(dst)
    out = {}
    for key, ids in inputs.items():
        if key.endswith("__input_ids") or key.endswith("__input_ids_padded"):
            case = key.split("__")[0]
            out[f"{case}__logits"] = np.asarray(model(ids), np.float32)
            if f"{case}__attention_mask" in inputs:
                out[f"{case}_with_attention_mask__logits"] = np.asarray(
                    model(ids, inputs[f"{case}__attention_mask"], mask_mode="additive"), np.float32)
    h = model(inputs["random__input_ids"], return_hidden_states=True)
    out["random__hidden_states"] = np.asarray(h.hidden_states, np.float32)
    return out


def make_mmada(src: Path, dst: Path, rng) -> None:
    s = MMADA_SIZES
    vocab = M["llm_vocab"] + s["codebook_size"]
    config = json.loads((src / "config.json").read_text())
    config.update({k: s[k] for k in ("d_model", "n_heads", "n_kv_heads", "n_layers", "mlp_hidden_size",
                                     "codebook_size", "num_vq_tokens")},
                  embedding_size=vocab, vocab_size=vocab, new_vocab_size=vocab)
    write_checkpoint(dst, config, random_weights(rng, s["d_model"], s["n_heads"], s["n_kv_heads"], s["n_layers"],
                                                 s["mlp_hidden_size"], vocab))
    n, k, off = s["num_vq_tokens"], s["codebook_size"], M["offset"]
    text = lambda m: rng.integers(0, 120, m).tolist()  # noqa: E731
    img = lambda: (rng.integers(0, k, n) + off).tolist()  # noqa: E731
    half_masked = img()
    for p in rng.choice(n, n // 2, replace=False):
        half_masked[p] = M["mask"]
    inter = ([M["interleave"], M["soi"]] + img() + [M["eoi"], M["bos"]] + text(4) + [M["eos"], M["soi"]]
             + half_masked + [M["eoi"], M["bos"]] + text(6) + [M["mask"]] * 5)
    padded = np.array([[M["bos"]] + text(11) + [M["eos"]],
                       [M["ipad"]] * 4 + [M["t2i"], M["bos"]] + text(6) + [M["eos"]],
                       [M["bos"]] + text(2) + [M["eos"]] * 10], np.int32)
    mask = np.ones_like(padded)
    mask[1, :4] = 0
    mask[2, 4:] = 0
    inputs = {"random__input_ids": rng.integers(0, vocab, (3, 9)).astype(np.int32),
              "padded__input_ids": padded, "padded__attention_mask": mask.astype(np.int32),
              "all_mask__input_ids": np.full((1, 5), M["mask"], np.int32),
              "interleave_like__input_ids": np.array([inter], np.int32)}
    np.savez(dst / "inputs.npz", **inputs)
    np.savez(dst / "outputs.npz", **model_outputs(dst, inputs))


def make_dimoo(src: Path, dst: Path, rng) -> None:
    s = DIMOO_SIZES
    vocab = A["offset"] + s["codebook_size"]
    config = json.loads((src / "config.json").read_text())
    config.update({k: s[k] for k in ("d_model", "n_heads", "n_kv_heads", "n_layers", "mlp_hidden_size",
                                     "codebook_size")}, embedding_size=vocab, vocab_size=vocab)
    write_checkpoint(dst, config, random_weights(rng, s["d_model"], s["n_heads"], s["n_kv_heads"], s["n_layers"],
                                                 s["mlp_hidden_size"], vocab))
    lengths = np.array([11, 7, 3], np.int32)
    ragged = np.zeros((3, 11), np.int32)
    for i, n in enumerate(lengths):
        ragged[i, :n] = rng.integers(1, vocab, n)
    grid, k = (2, 3), s["codebook_size"]
    def rows():
        return sum(([*(rng.integers(0, k, grid[1]) + A["offset"])] + [A["newline"]] for _ in range(grid[0])), [])
    ti2ti = ([A["bos"], A["system"], 5, 6, A["end_system"], A["user"], 7, A["boi"]] + rows() + [A["eoi"], A["end_user"],
             A["boa"], A["boi"]] + [A["mask"] if t != A["newline"] and rng.random() < 0.5 else t for t in rows()]
             + [A["eoi"]] + [A["mask"] if rng.random() < 0.4 else int(rng.integers(0, 120)) for _ in range(9)]
             + [A["eoa"]])
    inputs = {"random__input_ids": rng.integers(0, vocab, (3, 7)).astype(np.int32),
              "all_mask__input_ids": np.full((1, 6), A["mask"], np.int32),
              "ti2ti_like__input_ids": np.array([ti2ti], np.int32),
              "ragged__input_ids_padded": ragged, "ragged__lengths": lengths}
    np.savez(dst / "inputs.npz", **inputs)
    out = model_outputs(dst, inputs)
    np.savez(dst / "outputs.npz", **out)


def make_samplers_a_inputs(src: Path, dst: Path, rng) -> None:
    """Input side of ``ti2ti_readme.npz`` with a non-square input image, from README §7/§8 by hand."""
    k = DIMOO_SIZES["codebook_size"]
    system, instruction = [16, 25, 27], [46, 92]
    in_grid, out_grid, text_len, steps, timesteps, block = (2, 3), (3, 2), 10, 6, 3, 5
    codes = rng.integers(0, k, in_grid).astype(np.int32)
    img = [A["boi"]] + sum(([*(row + A["offset"])] + [A["newline"]] for row in codes), []) + [A["eoi"]]
    P = [A["bos"], A["system"], *system, A["end_system"], A["user"], *instruction, A["end_user"]]
    U = [A["bos"], A["system"], *system, A["end_system"], A["user"], A["uncondition"], A["end_user"]]
    con = P[:-1] + img + P[-1:]
    gh, gw = out_grid
    answer = ([A["boa"], A["boi"]] + ([A["mask"]] * gw + [A["newline"]]) * gh + [A["eoi"]]
              + [A["mask"]] * text_len + [A["eoa"]])
    full = np.array(con + answer, np.int32)
    code_start = len(con)
    image_start = code_start + 2
    image_end = image_start + gh * (gw + 1)
    text_start = image_end + 1
    text_end = text_start + text_len
    mapping = np.array([p for p in range(image_start, image_end) if full[p] != A["newline"]], np.int32)
    params = np.array([text_start, text_end, image_start, gh * gw, gw, steps, text_len, block, timesteps,
                       A["offset"], k, A["mask"], A["newline"]], np.int32)
    image_steps = np.round(np.linspace(steps // 4, steps - 1, timesteps, dtype=np.float32)).astype(np.int32)
    with np.load(src) as g:
        scales = g["scales"]
    np.savez(dst, params=params, scales=scales, input_ids=full, uncon_text=np.array(U[:-1] + img + U[-1:], np.int32),
             uncon_image=np.array(P, np.int32), image_position_mapping=mapping, image_steps=image_steps,
             system_ids=np.array(system, np.int32), instruction_ids=np.array(instruction, np.int32),
             input_image_codes=codes.ravel())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--src", type=Path, default=ROOT / "tests" / "golden")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--mmada-layers", type=int, default=MMADA_SIZES["n_layers"],
                    help="layer count of the new mmada_tiny (e.g. 2: fewer blocks than the visible set's 3)")
    args = ap.parse_args(argv)
    MMADA_SIZES["n_layers"] = args.mmada_layers
    if args.out.exists():
        shutil.rmtree(args.out)
    shutil.copytree(args.src, args.out)
    for p in args.out.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    rng = np.random.default_rng(args.seed)
    make_mmada(args.src / "mmada_tiny", args.out / "mmada_tiny", rng)
    make_dimoo(args.src / "dimoo_tiny", args.out / "dimoo_tiny", rng)
    run = Path("samplers_a") / "ti2ti_readme.npz"
    make_samplers_a_inputs(args.src / run, args.out / run, rng)
    (args.out / "ALT_README.txt").write_text(__doc__)
    print(f"alternative golden set written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
