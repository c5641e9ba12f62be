"""The LLaDA / MMaDA transformer in Flax NNX (spec mmada_m.md §1).

embedding -> n_layers x LLaMA block (RMSNorm, q/k/v, half-split RoPE, bidirectional attention,
attn_out, RMSNorm, SwiGLU with ``ff_proj`` as the gate) -> final RMSNorm -> untied head.

The blocks' parameters are stacked on a leading ``layers`` axis and the forward pass is one
``jax.lax.scan`` over them (compile time independent of depth), each step optionally wrapped in
``jax.checkpoint`` with the configured remat policy. Every parameter carries logical axis names
(see :mod:`mmada_jax.sharding`). The head can run on a subset of positions and a slice of the
vocabulary, so samplers never build full ``[B, L, V]`` logits.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx
from jax.ad_checkpoint import checkpoint_name

from .config import ModelConfig
from .layers import apply_rope, attention, attention_bias, rms_norm, rope_tables
from .sharding import constrain

# name -> (logical axes without 'layers', shape as a function of the config)
BLOCK_PARAMS = {
    "attn_norm": (("norm",), lambda c: (c.d_model,)),
    "q_proj": (("embed", "heads"), lambda c: (c.d_model, c.n_heads * c.head_dim)),
    "k_proj": (("embed", "kv_heads"), lambda c: (c.d_model, c.n_kv_heads * c.head_dim)),
    "v_proj": (("embed", "kv_heads"), lambda c: (c.d_model, c.n_kv_heads * c.head_dim)),
    "attn_out": (("heads", "embed"), lambda c: (c.n_heads * c.head_dim, c.d_model)),
    "ff_norm": (("norm",), lambda c: (c.d_model,)),
    "ff_proj": (("embed", "mlp"), lambda c: (c.d_model, c.mlp_hidden_size)),
    "up_proj": (("embed", "mlp"), lambda c: (c.d_model, c.mlp_hidden_size)),
    "ff_out": (("mlp", "embed"), lambda c: (c.mlp_hidden_size, c.d_model)),
}

REMAT_POLICIES = {
    "full": jax.checkpoint_policies.nothing_saveable,
    "save_dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "save_qkv_proj": jax.checkpoint_policies.save_only_these_names("query_proj", "key_proj", "value_proj"),
    "save_out_proj": jax.checkpoint_policies.save_only_these_names(
        "query_proj", "key_proj", "value_proj", "attention_out", "mlp_out"),
}


def _precision(c: ModelConfig):
    return jax.lax.Precision.HIGHEST if c.matmul_precision == "highest" else None


def _dtype(name: str):
    return jnp.dtype(name)


def _mitchell_init(rngs: nnx.Rngs, shape, std, dtype):
    """Truncated normal cut at +-3 std (the reference 'mitchell' init); ``std`` broadcasts."""
    x = jax.random.truncated_normal(rngs.params(), -3.0, 3.0, shape, jnp.float32)
    return (x * std).astype(dtype)


class KV(NamedTuple):
    """Every block's keys and values (RoPE applied): k, v [n_layers, B, L, n_kv_heads, head_dim]."""
    k: jax.Array
    v: jax.Array


class Output(NamedTuple):
    logits: jax.Array
    hidden_states: jax.Array | None = None


class LLaDAModel(nnx.Module):
    """The MMaDA / LLaDA transformer. ``model(input_ids, attention_mask=None)`` -> logits [B, L, V]."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        c = self.config = config
        pdt = _dtype(c.param_dtype)
        d, f, n = c.d_model, c.mlp_hidden_size, c.n_layers
        layer = jnp.arange(1, n + 1, dtype=jnp.float32)
        std_in = d ** -0.5
        stds = {
            "q_proj": std_in, "k_proj": std_in, "v_proj": std_in, "ff_proj": std_in, "up_proj": std_in,
            "attn_out": std_in / jnp.sqrt(2.0 * layer)[:, None, None],
            "ff_out": f ** -0.5 / jnp.sqrt(2.0 * layer)[:, None, None],
        }
        self.wte = nnx.Param(_mitchell_init(rngs, (c.vocab_size, d), std_in, pdt),
                             out_sharding=("vocab", "embed"))
        for name, (axes, shape) in BLOCK_PARAMS.items():
            full = (n,) + shape(c)
            value = (jnp.ones(full, pdt) if name.endswith("norm")
                     else _mitchell_init(rngs, full, stds[name], pdt))
            setattr(self, name, nnx.Param(value, out_sharding=("layers",) + axes))
        self.ln_f = nnx.Param(jnp.ones((d,), pdt), out_sharding=("norm",))
        self.lm_head = nnx.Param(_mitchell_init(rngs, (d, c.vocab_size), std_in, pdt),
                                 out_sharding=("embed", "vocab"))

    # ----------------------------------------------------------------- forward

    def __call__(self, input_ids: jax.Array, attention_mask: jax.Array | None = None, *,
                 mask_mode: str | None = None, positions: jax.Array | None = None,
                 vocab_range: tuple[int, int] | None = None, return_hidden_states: bool = False,
                 position_ids: jax.Array | None = None):
        """Logits [B, L, V] (or [B, P, V'] with ``positions`` / ``vocab_range``).

        Args:
          input_ids: int [B, L].
          attention_mask: optional [B, L] 0/1 key mask; what it does is ``mask_mode``
            (default ``config.attention_mask_mode``: ``hard`` or ``additive``).
          positions: optional int [P] or [B, P]: compute logits only at these positions.
          vocab_range: optional static (start, stop): compute only these vocabulary columns.
          return_hidden_states: also return [n_layers + 1, B, L, d]: the input of every block
            and, last, the output after the final norm (the reference's ``hidden_states``).
          position_ids: optional int [B, L] RoPE positions (default 0..L-1 for every row, as the
            reference); with a hard mask on left padding, ``cumsum(mask) - 1`` makes a padded
            row compute what the unpadded row computes alone.
        """
        hidden, per_layer = self.encode(input_ids, attention_mask, mask_mode=mask_mode,
                                        return_hidden_states=return_hidden_states,
                                        position_ids=position_ids)
        logits = self.head(hidden, positions=positions, vocab_range=vocab_range)
        if return_hidden_states:
            return Output(logits, jnp.concatenate([per_layer, hidden[None]], axis=0))
        return logits

    def encode(self, input_ids, attention_mask=None, *, mask_mode=None, return_hidden_states=False,
               position_ids=None, return_kv=False, inference=False):
        """Final-norm hidden states [B, L, d] and the per-block inputs (None unless asked); with
        ``return_kv`` also every block's keys and values (:class:`KV`, what the samplers' step
        cache keeps). ``inference``: no gradient will flow through this forward (the samplers'),
        which lets ``auto`` attention pick its CPU inference path (:func:`~mmada_jax.layers.attention`)."""
        c = self.config
        dt = _dtype(c.dtype)
        precision = _precision(c)
        input_ids = constrain(jnp.asarray(input_ids), ("batch", "length"))
        x = self._embed(input_ids)
        positions = input_ids.shape[1] if position_ids is None else position_ids
        cos, sin = rope_tables(positions, c.head_dim, c.rope_theta)
        bias, mask = attention_bias(attention_mask, mask_mode or c.attention_mask_mode, dt)
        params = {name: getattr(self, name)[...] for name in BLOCK_PARAMS}

        def block(x, p):
            y, kv = _block(c, x, p, cos, sin, bias, mask, precision, inference)
            return y, (x if return_hidden_states else None, kv if return_kv else None)

        if c.remat_policy != "none":
            block = jax.checkpoint(block, policy=REMAT_POLICIES[c.remat_policy], prevent_cse=False)
        x, (per_layer, kv) = jax.lax.scan(block, x, params)
        x = rms_norm(x, self.ln_f[...], c.rms_norm_eps)
        return (x, per_layer, KV(*kv)) if return_kv else (x, per_layer)

    def encode_at(self, input_ids, positions, kv: "KV", hidden, attention_mask=None, *, mask_mode=None,
                  position_ids=None):
        """Recompute only ``positions`` [B, R] of ``input_ids`` [B, L], every other position's keys,
        values and final hidden state taken from ``kv`` and ``hidden`` [B, L, d] (an earlier
        :meth:`encode` with ``return_kv``, partly updated since). Each block runs its projections and
        MLP on the R positions, writes their keys and values into the cached ones and lets their
        queries attend over all L keys. Returns (hidden [B, L, d], kv) with the R positions
        replaced: exactly :meth:`encode` when nothing outside ``positions`` changed since ``kv``
        was computed, an approximation (the step cache's) otherwise."""
        c = self.config
        dt = _dtype(c.dtype)
        precision = _precision(c)
        input_ids = jnp.asarray(input_ids)
        positions = jnp.asarray(positions, jnp.int32)
        b, length = input_ids.shape
        rows = jnp.arange(b)[:, None]
        x = self._embed(jnp.take_along_axis(input_ids, positions, axis=1))
        ids = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (b, length)) if position_ids is None \
            else jnp.asarray(position_ids)
        cos, sin = rope_tables(jnp.take_along_axis(ids, positions, axis=1), c.head_dim, c.rope_theta)
        bias, mask = attention_bias(attention_mask, mask_mode or c.attention_mask_mode, dt)
        params = {name: getattr(self, name)[...] for name in BLOCK_PARAMS}

        def block(layer, carry):      # keys and values updated in place in the stacked cache
            x, k_all, v_all = carry
            w = {k: jax.lax.dynamic_index_in_dim(v, layer, keepdims=False).astype(x.dtype) for k, v in params.items()}
            q, k, v = _attention_inputs(c, x, w, cos, sin, precision)
            k_all = k_all.at[layer, rows, positions].set(k.astype(k_all.dtype))
            v_all = v_all.at[layer, rows, positions].set(v.astype(v_all.dtype))
            att = attention(q, k_all[layer], v_all[layer], bias=bias, mask=mask, impl=c.attention_impl,
                            precision=precision, inference=True)
            return _block_output(c, x, att, w, precision), k_all, v_all

        x, k_all, v_all = jax.lax.fori_loop(0, c.n_layers, block, (x, kv.k, kv.v))
        x = rms_norm(x, self.ln_f[...], c.rms_norm_eps)
        return hidden.at[rows, positions].set(x.astype(hidden.dtype)), KV(k_all, v_all)

    def _embed(self, input_ids):
        x = jnp.take(self.wte[...], input_ids, axis=0).astype(_dtype(self.config.dtype))
        return constrain(x, ("batch", "length", "act_embed"))

    def head(self, hidden: jax.Array, *, positions: jax.Array | None = None,
             vocab_range: tuple[int, int] | None = None) -> jax.Array:
        """Logits from final hidden states, optionally at ``positions`` / over ``vocab_range``."""
        c = self.config
        precision = _precision(c)
        if positions is not None:
            positions = jnp.asarray(positions)
            if positions.ndim == 1:
                hidden = hidden[:, positions]
            else:
                hidden = jnp.take_along_axis(hidden, positions[..., None], axis=1)
        kernel = self.lm_head[...]
        if vocab_range is not None:
            start, stop = vocab_range
            if not 0 <= start < stop <= c.vocab_size:
                raise ValueError(f"vocab_range {vocab_range} outside [0, {c.vocab_size})")
            kernel = kernel[:, start:stop]
        logits = jnp.einsum("bld,dv->blv", hidden, kernel.astype(hidden.dtype), precision=precision)
        return constrain(logits, ("batch", "length", "act_vocab"))

    def head_columns(self, hidden: jax.Array, start, size: int) -> jax.Array:
        """Logits of the vocabulary columns ``start .. start + size`` (``start`` may be traced, e.g.
        a chunk index inside a scan; ``size`` static): what samplers reduce chunk by chunk instead of
        holding the full vocabulary (:mod:`~mmada_jax.sampling.vocab_chunks`)."""
        kernel = jax.lax.dynamic_slice_in_dim(self.lm_head[...], start, size, axis=1)
        return jnp.einsum("bld,dv->blv", hidden, kernel.astype(hidden.dtype), precision=_precision(self.config))

    def head_at(self, hidden: jax.Array, ids: jax.Array) -> jax.Array:
        """The logit of token ``ids`` [B, T] at each position of ``hidden`` [B, T, d] (one column
        per position, not the vocabulary)."""
        rows = jnp.take(self.lm_head[...], ids, axis=1)                   # [d, B, T]
        return jnp.einsum("bld,dbl->bl", hidden, rows.astype(hidden.dtype), precision=_precision(self.config))


def _attention_inputs(c: ModelConfig, x, w, cos, sin, precision):
    """q [B, L, H, hd], k and v [B, L, Hkv, hd] of a block's input x [B, L, d] (RoPE applied)."""
    b, l, _ = x.shape
    mm = lambda a, k: jnp.einsum("bld,de->ble", a, k, precision=precision)
    h = rms_norm(x, w["attn_norm"], c.rms_norm_eps)
    q = checkpoint_name(mm(h, w["q_proj"]), "query_proj").reshape(b, l, c.n_heads, c.head_dim)
    k = checkpoint_name(mm(h, w["k_proj"]), "key_proj").reshape(b, l, c.n_kv_heads, c.head_dim)
    v = checkpoint_name(mm(h, w["v_proj"]), "value_proj").reshape(b, l, c.n_kv_heads, c.head_dim)
    q = constrain(apply_rope(q, cos, sin), ("batch", "length", "act_heads", None))
    k = constrain(apply_rope(k, cos, sin), ("batch", "length", "act_heads", None))
    return q, k, constrain(v, ("batch", "length", "act_heads", None))


def _block_output(c: ModelConfig, x, att, w, precision):
    """x + attn_out(att); then + ff_out(silu(ff_proj(n)) * up_proj(n)) with n the normed sum."""
    b, l, _ = x.shape
    mm = lambda a, k: jnp.einsum("bld,de->ble", a, k, precision=precision)
    att = att.reshape(b, l, c.n_heads * c.head_dim)
    x = x + checkpoint_name(mm(att, w["attn_out"]), "attention_out")
    x = constrain(x, ("batch", "length", "act_embed"))
    h = rms_norm(x, w["ff_norm"], c.rms_norm_eps)
    gate = constrain(mm(h, w["ff_proj"]), ("batch", "length", "act_mlp"))
    up = constrain(mm(h, w["up_proj"]), ("batch", "length", "act_mlp"))
    x = x + checkpoint_name(mm(jax.nn.silu(gate) * up, w["ff_out"]), "mlp_out")
    return constrain(x, ("batch", "length", "act_embed"))


def _block(c: ModelConfig, x, p, cos, sin, bias, mask, precision, inference=False):
    """One LLaMA block: x + attn(norm(x)); then the MLP. Returns (output, (k, v))."""
    w = {k: v.astype(x.dtype) for k, v in p.items()}
    q, k, v = _attention_inputs(c, x, w, cos, sin, precision)
    att = attention(q, k, v, bias=bias, mask=mask, impl=c.attention_impl, precision=precision, inference=inference)
    return _block_output(c, x, att, w, precision), (k, v)


def init_model(config: ModelConfig, seed: int = 0) -> LLaDAModel:
    """A randomly initialised (reference 'mitchell' init) model on the default device."""
    with nnx.use_eager_sharding(False):
        return LLaDAModel(config, rngs=nnx.Rngs(seed))


def abstract_model(config: ModelConfig) -> LLaDAModel:
    """The model with ShapeDtypeStruct leaves (no memory): for restoring and AOT compiling."""
    with nnx.use_eager_sharding(False):
        return nnx.eval_shape(lambda: LLaDAModel(config, rngs=nnx.Rngs(0)))
