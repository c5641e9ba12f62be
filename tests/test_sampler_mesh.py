"""Samplers on the model's mesh: the batch is split over (data, fsdp), the weights keep their rules.

A small step function of our own (guided forward of cond/uncond prefixes [G, B, P], per-row
Gumbel noise from the PRNG keys, a replayed tape stream, image-position logits, float64
confidences) is run through :func:`run_scan` on the 8 fake CPU devices of tests/conftest.py. The
evidence that the batch is sharded is taken from the COMPILED program: its input shardings and
the per-device shapes of its parameters in the partitioned HLO.
"""

from __future__ import annotations

import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from conftest import golden_path
from mmada_jax import load_model, make_mesh
from mmada_jax.sampling.common import Randomness, as_randomness
from mmada_jax.sampling import runner
from mmada_jax.sampling.runner import compile_scan, lower_scan, model_mesh, report_compiles, run_scan
from mmada_jax.sharding import logical_to_spec, param_names

pytestmark = [pytest.mark.golden,
              pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 (fake) devices: see tests/conftest.py")]

PREFIX, OUT, N, STEPS, G = 6, 8, 8, 4, 2      # N == 8 == B on purpose: image_positions must stay replicated


@dataclasses.dataclass(frozen=True)
class _Static:
    prefix_len: int
    cfg: float
    mask_id: int
    offset: int
    codebook_size: int
    exact: bool


def _step(model, carry, i, consts, rnd: Randomness, st: _Static):
    """One guided step: fill the masked output positions (p % STEPS == i) with a noisy argmax."""
    x, last, j = carry
    b, length = x.shape
    p = st.prefix_len
    prefixes = consts["prefixes"]                                     # [G, B, P]: batch on axis 1
    rows = jnp.concatenate([jnp.concatenate([prefixes[g], x[:, p:]], axis=1) for g in range(G)], axis=0)
    mask = jnp.concatenate([consts["attention_mask"]] * G, axis=0)
    position_ids = jnp.concatenate([consts["position_ids"]] * G, axis=0)
    hidden, _ = model.encode(rows, mask, mask_mode="hard", position_ids=position_ids)
    logits = model.head(hidden, positions=p + jnp.arange(length - p)).astype(jnp.float32)
    cond, uncond = logits[:b], logits[b:]
    guided = cond + st.cfg * (cond - uncond)
    noisy = guided + _gumbel(rnd.uniform("u_text_gumbel", i, guided.shape))
    wide = jnp.float64 if st.exact else jnp.float32
    confidence = jnp.max(jax.nn.softmax(noisy.astype(wide), axis=-1), axis=-1)          # [B, OUT]
    candidate = jnp.argmax(noisy, axis=-1).astype(jnp.int32)
    region = x[:, p:]
    fill = (region == st.mask_id) & ((jnp.arange(length - p) % STEPS) == i) & (confidence > 0)
    x = x.at[:, p:].set(jnp.where(fill, candidate, region))
    image = model.head(hidden[:b], positions=p + consts["image_positions"],
                       vocab_range=(st.offset, st.offset + st.codebook_size)).astype(jnp.float32)
    u = rnd.uniform("u_gumbel", i, (b, N), wide)                       # replayed from the float64 tape
    sampled = jnp.where(u > 0.5, jnp.argmax(image, -1), jnp.argmin(image, -1)).astype(jnp.int32)
    return (x, sampled, j + 1), x


def _gumbel(u):
    return -jnp.log(-jnp.log(u))


@pytest.fixture(scope="module")
def unsharded():
    return load_model(golden_path("mmada_tiny"))[0]


def _text_bound(t) -> int:
    """Plain text ids of the checkpoint's layout lie below every special id and the mask."""
    return min(min(t.special.values()), t.mask_id)


def _inputs(model, b: int, seed: int = 0):
    """(static, init carry, steps_xs, consts, randomness, exact) for a batch of ``b`` rows of
    left-padded prompts of different lengths."""
    t = model.config.tokens
    rng = np.random.default_rng(seed)
    lengths = rng.integers(2, PREFIX + 1, b)
    prefixes = np.full((G, b, PREFIX), t.pad_id, np.int32)
    for g in range(G):
        for row, n in enumerate(lengths):
            prefixes[g, row, PREFIX - n:] = rng.integers(0, _text_bound(t), n)
    x = np.concatenate([prefixes[0], np.full((b, OUT), t.mask_id, np.int32)], axis=1)
    real = (np.arange(PREFIX + OUT)[None] >= (PREFIX - lengths)[:, None]).astype(np.int32)
    consts = {"prefixes": prefixes, "attention_mask": real,
              "position_ids": np.maximum(np.cumsum(real, 1) - 1, 0).astype(np.int32),
              "image_positions": np.arange(N, dtype=np.int32)}
    tape = {"u_gumbel": rng.uniform(1e-6, 1.0, (STEPS, b, N))}            # float64, replayed (replicated)
    rnd = as_randomness(jax.random.split(jax.random.key(seed + 1), b), b, tape)
    static = _Static(PREFIX, 1.5, t.mask_id, t.image_offset, t.codebook_size, True)
    init = (x, np.zeros((b, N), np.int32), np.int32(0))
    return static, init, np.arange(STEPS, dtype=np.int32), consts, rnd, True


BATCH_AXES = {"prefixes": 1, "image_positions": None}


def _run(model, args):
    return run_scan(model, _step, *args, batch_axes=BATCH_AXES)


def _assert_same(got, want):
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        assert isinstance(a, np.ndarray) and a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)


def _check(model, mesh, args, *, rows_per_device: int, batch_spec):
    """The input shardings of the compiled program that run_scan runs: batch axis of carry /
    per-row constants / keys as ``batch_spec`` with ``rows_per_device`` rows on each device, the
    rest replicated, the parameters as the rules say; returns the compiled program."""
    compiled = compile_scan(model, _step, *args, batch_axes=BATCH_AXES)
    state, carry, xs, consts, keys, tape = compiled.input_shardings[0]
    print(f"\n{dict(mesh.shape)}, B={args[1][0].shape[0]}: carry {[s.spec for s in carry]}, "
          f"consts { {k: v.spec for k, v in consts.items()} }, keys {keys.spec}, "
          f"tape { {k: v.spec for k, v in tape.items()} }, steps {xs.spec}")
    x, last, j = carry
    b = args[1][0].shape[0]
    for sharding, shape in [(x, (b, PREFIX + OUT)), (last, (b, N)), (consts["attention_mask"], (b, PREFIX + OUT)),
                            (consts["position_ids"], (b, PREFIX + OUT)), (keys, (b,))]:
        assert isinstance(sharding, NamedSharding) and sharding.mesh == mesh
        assert sharding.spec[0] == batch_spec and all(s is None for s in sharding.spec[1:]), sharding.spec
        assert sharding.shard_shape(shape)[0] == rows_per_device
    prefixes = consts["prefixes"]                   # batch on axis 1
    assert prefixes.spec == P(None, batch_spec, None)
    assert prefixes.shard_shape((G, b, PREFIX)) == (G, rows_per_device, PREFIX)
    for replicated in (j, xs, consts["image_positions"], tape["u_gumbel"]):
        assert replicated.is_fully_replicated, replicated
    # the parameters: their logical-rule shardings, unchanged
    params = dict(nnx.to_flat_state(nnx.state(model, nnx.Param)))
    compiled_params = dict(nnx.to_flat_state(state))
    for path, var in params.items():
        want = logical_to_spec(param_names(var), mesh, var[...].shape)
        assert var[...].sharding.spec == want
        assert compiled_params[path].get_value().spec == want, path
    # the partitioned program really sees its rows only: the carry's sequences are s32[rows, L]
    assert re.search(rf"s32\[{rows_per_device},{PREFIX + OUT}\]", compiled.as_text())
    return compiled


def test_batch_of_8_split_over_data8(unsharded):
    mesh = make_mesh({"data": 8})
    model, _ = load_model(golden_path("mmada_tiny"), mesh=mesh)
    assert model_mesh(model) == mesh and model_mesh(unsharded) is None
    args = _inputs(unsharded, 8)
    runner._COMPILED.clear()
    compiles = []
    with report_compiles(compiles.append):
        want = _run(unsharded, args)
        assert len(compiles) == 1
        compiled = _check(model, mesh, args, rows_per_device=1, batch_spec="data")
        assert len(compiles) == 2                  # same shapes, other shardings: not the unsharded program
        got = _run(model, args)
        again = _run(unsharded, args)
    assert len(compiles) == 2                      # run_scan ran the very program checked above
    # the model's constrain() calls applied: the guided forward's activations are [G*B/8, L, d] per device
    assert re.search(rf"f32\[{G},{PREFIX + OUT},{model.config.d_model}\]", compiled.as_text())
    _assert_same(got, want)
    _assert_same(again, want)


def test_batch_split_over_data_and_fsdp_with_tensor_parallel_weights(unsharded):
    mesh = make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    model, _ = load_model(golden_path("mmada_tiny"), mesh=mesh)
    assert model.wte[...].sharding.spec == P("tensor", "fsdp")          # weights really split
    args = _inputs(unsharded, 8, seed=1)
    _check(model, mesh, args, rows_per_device=2, batch_spec=("data", "fsdp"))
    _assert_same(_run(model, args), _run(unsharded, args))


@pytest.mark.parametrize("shape,b,batch_spec", [({"data": 8}, 3, None),
                                                 ({"data": 2, "fsdp": 2, "tensor": 2}, 6, "data")])
def test_batch_the_mesh_does_not_divide(unsharded, shape, b, batch_spec):
    """B = 3 on data=8: replicated. B = 6 on data=2,fsdp=2: split over the axes of the rule that
    divide it (data), as constrain() would split the activations; no error either way."""
    mesh = make_mesh(shape)
    model, _ = load_model(golden_path("mmada_tiny"), mesh=mesh)
    args = _inputs(unsharded, b, seed=2)
    _check(model, mesh, args, rows_per_device=3, batch_spec=batch_spec)
    _assert_same(_run(model, args), _run(unsharded, args))


def test_default_batch_axis_and_bad_declarations(unsharded):
    mesh = make_mesh({"data": 8})
    model, _ = load_model(golden_path("mmada_tiny"), mesh=mesh)
    static, init, xs, consts, rnd, exact = _inputs(unsharded, 8, seed=4)
    # without a declaration, a constant whose leading dimension is B counts as per-row
    # (image_positions [N] with N == B), one whose batch is elsewhere does not
    lowered = lower_scan(model, _step, static, init, xs, consts, rnd, exact)
    shardings = lowered.compile().input_shardings[0][3]
    assert shardings["image_positions"].spec == P("data") and shardings["prefixes"].is_fully_replicated
    for m in (model, unsharded):                   # checked with and without a mesh
        with pytest.raises(ValueError, match="is not the batch"):
            lower_scan(m, _step, static, init, xs, consts, rnd, exact, batch_axes={"prefixes": 0})
        with pytest.raises(ValueError, match="not given"):
            lower_scan(m, _step, static, init, xs, consts, rnd, exact, batch_axes={"prefix": 1})
        with pytest.raises(ValueError, match="2 batch axes for 3 arrays"):
            lower_scan(m, _step, static, init, xs, consts, rnd, exact, carry_batch_axes=(0, 0))


def test_parallel_sampler_on_a_mesh_equals_unsharded(unsharded):
    """The real MMaDA-Parallel-M sampler, a batch of 8 left-padded rows: on data=8 its compiled
    program holds one row per device (sequences, unconditional rows, padding masks, keys); on
    data=2,fsdp=2,tensor=2 and data=8 it samples what one device samples."""
    from mmada_jax.parallel_m import generate
    from mmada_jax.parallel_m import sampler as par
    from mmada_jax.sampling.runner import compile_scan
    t = unsharded.config.tokens
    rng = np.random.default_rng(5)
    rows = [rng.integers(0, _text_bound(t), n) for n in (3, 7, 5, 4, 6, 3, 2, 8)]
    unconds = [np.full(len(r), t.pad_id) for r in rows]
    # 16 image tokens: a free choice of the sampler (any count fits the transformer)
    kw = dict(num_image_tokens=16, text_len=8, text_steps=8, image_steps=4, text_cfg=0.5, image_cfg=2.0,
              text_temperature=0.7, image_temperature=1.0, seed=jax.random.split(jax.random.key(9), 8))
    want = generate(unsharded, rows, unconds, **kw)
    for axes in ({"data": 8}, {"data": 2, "fsdp": 2, "tensor": 2}):
        model, _ = load_model(golden_path("mmada_tiny"), mesh=make_mesh(axes))
        got = generate(model, rows, unconds, **kw)
        np.testing.assert_array_equal(got.ids, want.ids)
        np.testing.assert_array_equal(got.image_codes, want.image_codes)
        if axes == {"data": 8}:
            args = par.prepare(model, rows, unconds, **kw)[:-1]
            static, init, xs, consts, rnd, exact = args
            compiled = compile_scan(model, par._step, *args)
            (_, carry, _, const_shardings, keys, _), _ = compiled.input_shardings
            sequences = init[0]
            assert carry[0].shard_shape(sequences.shape) == (1, sequences.shape[1])       # one row per device
            for name in ("uncond", "attention_mask", "position_ids"):
                assert const_shardings[name].shard_shape(consts[name].shape)[0] == 1, name
            assert keys.shard_shape((8,)) == (1,)
