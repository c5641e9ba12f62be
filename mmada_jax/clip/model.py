"""CLIP (both towers) in Flax NNX, numerically the transformers ``CLIPModel``.

Image tower: patches (a convolution without bias, stride = kernel = patch size, written as a
matmul over flattened patches) -> class token prepended -> + position embedding ->
``pre_layrnorm`` (HF's spelling) -> N x [LN -> multi-head attention (biases) -> residual, LN ->
fc1 -> activation -> fc2 -> residual] -> ``post_layernorm`` of the class token ->
``visual_projection`` (no bias).

Text tower: token + position embedding -> N x the same layer with causal attention (and the
attention mask on the keys) -> ``final_layer_norm`` -> the hidden state at the EOS position
(``argmax(input_ids)`` when ``eos_token_id == 2``, as transformers does for the OpenAI
checkpoints; else the first position holding ``eos_token_id``) -> ``text_projection`` (no bias).

The parameter tree mirrors the HF module names (``vision_model.encoder.layers.self_attn.q_proj
.kernel``, ...) so the checkpoint mapping is a renaming (:mod:`.checkpoint`); the layers of a tower
are stacked on a leading axis and run by one ``jax.lax.scan`` (compile time independent of
depth). Layer norms and the attention softmax compute in float32 whatever the compute dtype, so
a bfloat16 model stays close to the float32 one.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from .config import CLIPConfig, CLIPTextConfig, CLIPVisionConfig

INIT_STD = 0.02   # random init only (tests, shapes); real weights come from a checkpoint


def _normal(rngs: nnx.Rngs, shape, dtype, std: float = INIT_STD):
    return (jax.random.normal(rngs.params(), shape, jnp.float32) * std).astype(dtype)


# ------------------------------------------------------------------------------ parameters

class LayerNorm(nnx.Module):
    """LayerNorm parameters (``stack``: leading layer axes)."""

    def __init__(self, dim: int, *, dtype, stack: tuple[int, ...] = ()):
        self.scale = nnx.Param(jnp.ones(stack + (dim,), dtype))
        self.bias = nnx.Param(jnp.zeros(stack + (dim,), dtype))


class Linear(nnx.Module):
    """A dense layer's ``kernel`` [in, out] (torch's weight transposed) and optional ``bias``."""

    def __init__(self, din: int, dout: int, *, rngs: nnx.Rngs, dtype, bias: bool = True,
                 stack: tuple[int, ...] = ()):
        self.kernel = nnx.Param(_normal(rngs, stack + (din, dout), dtype))
        if bias:
            self.bias = nnx.Param(jnp.zeros(stack + (dout,), dtype))


class Embedding(nnx.Module):
    def __init__(self, num: int, dim: int, *, rngs: nnx.Rngs, dtype):
        self.embedding = nnx.Param(_normal(rngs, (num, dim), dtype))


class Attention(nnx.Module):
    def __init__(self, dim: int, *, rngs: nnx.Rngs, dtype, stack: tuple[int, ...]):
        for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
            setattr(self, name, Linear(dim, dim, rngs=rngs, dtype=dtype, stack=stack))


class MLP(nnx.Module):
    def __init__(self, dim: int, hidden: int, *, rngs: nnx.Rngs, dtype, stack: tuple[int, ...]):
        self.fc1 = Linear(dim, hidden, rngs=rngs, dtype=dtype, stack=stack)
        self.fc2 = Linear(hidden, dim, rngs=rngs, dtype=dtype, stack=stack)


class EncoderLayers(nnx.Module):
    """The ``num_hidden_layers`` encoder layers of a tower, each parameter stacked on axis 0."""

    def __init__(self, cfg: CLIPTextConfig | CLIPVisionConfig, *, rngs: nnx.Rngs, dtype):
        stack = (cfg.num_hidden_layers,)
        d = cfg.hidden_size
        self.layer_norm1 = LayerNorm(d, dtype=dtype, stack=stack)
        self.self_attn = Attention(d, rngs=rngs, dtype=dtype, stack=stack)
        self.layer_norm2 = LayerNorm(d, dtype=dtype, stack=stack)
        self.mlp = MLP(d, cfg.intermediate_size, rngs=rngs, dtype=dtype, stack=stack)


class PatchEmbedding(nnx.Module):
    """The patch convolution's ``kernel`` [p, p, channels, d] (HWIO; no bias)."""

    def __init__(self, patch: int, channels: int, dim: int, *, rngs: nnx.Rngs, dtype):
        self.kernel = nnx.Param(_normal(rngs, (patch, patch, channels, dim), dtype))


class VisionEmbeddings(nnx.Module):
    def __init__(self, cfg: CLIPVisionConfig, *, rngs: nnx.Rngs, dtype):
        d = cfg.hidden_size
        self.class_embedding = nnx.Param(_normal(rngs, (d,), dtype, d ** -0.5))
        self.patch_embedding = PatchEmbedding(cfg.patch_size, cfg.num_channels, d, rngs=rngs, dtype=dtype)
        self.position_embedding = Embedding(cfg.num_positions, d, rngs=rngs, dtype=dtype)


class TextEmbeddings(nnx.Module):
    def __init__(self, cfg: CLIPTextConfig, *, rngs: nnx.Rngs, dtype):
        self.token_embedding = Embedding(cfg.vocab_size, cfg.hidden_size, rngs=rngs, dtype=dtype)
        self.position_embedding = Embedding(cfg.max_position_embeddings, cfg.hidden_size, rngs=rngs, dtype=dtype)


class Encoder(nnx.Module):
    def __init__(self, cfg: CLIPTextConfig | CLIPVisionConfig, *, rngs: nnx.Rngs, dtype):
        self.layers = EncoderLayers(cfg, rngs=rngs, dtype=dtype)


# ------------------------------------------------------------------------------ math

def layer_norm(x: jax.Array, p: dict, eps: float) -> jax.Array:
    """LayerNorm computed in float32 (biased variance, as torch), cast back to ``x.dtype``."""
    x32 = x.astype(jnp.float32)
    mean = x32.mean(-1, keepdims=True)
    var = jnp.square(x32 - mean).mean(-1, keepdims=True)
    y = (x32 - mean) * jax.lax.rsqrt(var + eps)
    return (y * p["scale"].astype(jnp.float32) + p["bias"].astype(jnp.float32)).astype(x.dtype)


def activation(name: str, x: jax.Array) -> jax.Array:
    """``quick_gelu`` (x * sigmoid(1.702 x), OpenAI CLIP) or ``gelu`` (the exact, erf one)."""
    if name == "quick_gelu":
        return x * jax.nn.sigmoid(1.702 * x)
    return jax.nn.gelu(x, approximate=False)


def dense(p: dict, x: jax.Array, precision) -> jax.Array:
    y = jnp.einsum("...d,de->...e", x, p["kernel"].astype(x.dtype), precision=precision)
    return y + p["bias"].astype(x.dtype) if "bias" in p else y


def _attention(p: dict, x: jax.Array, bias: jax.Array | None, heads: int, precision) -> jax.Array:
    b, l, d = x.shape
    hd = d // heads
    q, k, v = (dense(p[n], x, precision).reshape(b, l, heads, hd) for n in ("q_proj", "k_proj", "v_proj"))
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, precision=precision).astype(jnp.float32) * hd ** -0.5
    if bias is not None:
        logits = logits + bias
    probs = jax.nn.softmax(logits, axis=-1).astype(x.dtype)
    out = jnp.einsum("bhqk,bkhd->bqhd", probs, v, precision=precision).reshape(b, l, d)
    return dense(p["out_proj"], out, precision)


def encoder(layers: EncoderLayers, cfg, x: jax.Array, bias: jax.Array | None, precision) -> jax.Array:
    """The tower's layers over ``x`` [B, L, d] (one scan over the stacked parameters);
    ``bias``: additive float32 attention bias broadcastable to [B, heads, L, L], or None."""
    params = nnx.to_pure_dict(nnx.state(layers, nnx.Param))

    def layer(x, p):
        h = layer_norm(x, p["layer_norm1"], cfg.layer_norm_eps)
        x = x + _attention(p["self_attn"], h, bias, cfg.num_attention_heads, precision)
        h = layer_norm(x, p["layer_norm2"], cfg.layer_norm_eps)
        h = activation(cfg.hidden_act, dense(p["mlp"]["fc1"], h, precision))
        return x + dense(p["mlp"]["fc2"], h, precision), None

    x, _ = jax.lax.scan(layer, x, params)
    return x


def text_attention_bias(attention_mask: jax.Array | None, length: int, batch: int) -> jax.Array:
    """Causal bias [B, 1, L, L] (0 allowed, float32 min masked) also masking the keys whose
    ``attention_mask`` is 0 (what transformers' ``create_causal_mask`` builds)."""
    allowed = jnp.tril(jnp.ones((length, length), bool))[None, None]
    if attention_mask is not None:
        allowed = allowed & (jnp.asarray(attention_mask) > 0)[:, None, None, :]
    allowed = jnp.broadcast_to(allowed, (batch, 1, length, length))
    return jnp.where(allowed, 0.0, jnp.finfo(jnp.float32).min).astype(jnp.float32)


def eos_positions(input_ids: jax.Array, cfg: CLIPTextConfig) -> jax.Array:
    """[B] positions whose hidden state is the text embedding (see the module docstring)."""
    ids = jnp.asarray(input_ids).astype(jnp.int32)
    if cfg.legacy_pooling:
        return jnp.argmax(ids, axis=-1)
    return jnp.argmax((ids == cfg.eos_token_id).astype(jnp.int32), axis=-1)


def normalize(x: jax.Array) -> jax.Array:
    """x / ||x|| over the last axis (computed in float32)."""
    x = x.astype(jnp.float32)
    return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


# ------------------------------------------------------------------------------ towers

class VisionTransformer(nnx.Module):
    def __init__(self, cfg: CLIPVisionConfig, *, rngs: nnx.Rngs, dtype):
        d = cfg.hidden_size
        self.embeddings = VisionEmbeddings(cfg, rngs=rngs, dtype=dtype)
        self.pre_layrnorm = LayerNorm(d, dtype=dtype)
        self.encoder = Encoder(cfg, rngs=rngs, dtype=dtype)
        self.post_layernorm = LayerNorm(d, dtype=dtype)

    def __call__(self, pixels: jax.Array, cfg: CLIPVisionConfig, dtype, precision) -> jax.Array:
        """Pooled (``post_layernorm`` of the class token) features [N, d] of normalised pixels
        [N, image_size, image_size, channels]."""
        n, h, w, c = pixels.shape
        if (h, w, c) != (cfg.image_size, cfg.image_size, cfg.num_channels):
            raise ValueError(f"CLIP image tower takes [N, {cfg.image_size}, {cfg.image_size}, "
                             f"{cfg.num_channels}] pixels, got {list(pixels.shape)} (use preprocess)")
        p, g = cfg.patch_size, cfg.grid
        x = pixels[:, :g * p, :g * p].astype(dtype)
        patches = x.reshape(n, g, p, g, p, c).transpose(0, 1, 3, 2, 4, 5).reshape(n, g * g, p * p * c)
        kernel = self.embeddings.patch_embedding.kernel[...].reshape(p * p * c, -1).astype(dtype)
        x = jnp.einsum("npk,kd->npd", patches, kernel, precision=precision)
        cls = jnp.broadcast_to(self.embeddings.class_embedding[...].astype(dtype), (n, 1, x.shape[-1]))
        x = jnp.concatenate([cls, x], axis=1) + self.embeddings.position_embedding.embedding[...].astype(dtype)
        x = layer_norm(x, _pure(self.pre_layrnorm), cfg.layer_norm_eps)
        x = encoder(self.encoder.layers, cfg, x, None, precision)
        return layer_norm(x[:, 0], _pure(self.post_layernorm), cfg.layer_norm_eps)


class TextTransformer(nnx.Module):
    def __init__(self, cfg: CLIPTextConfig, *, rngs: nnx.Rngs, dtype):
        d = cfg.hidden_size
        self.embeddings = TextEmbeddings(cfg, rngs=rngs, dtype=dtype)
        self.encoder = Encoder(cfg, rngs=rngs, dtype=dtype)
        self.final_layer_norm = LayerNorm(d, dtype=dtype)

    def __call__(self, input_ids: jax.Array, attention_mask: jax.Array | None, cfg: CLIPTextConfig,
                 dtype, precision) -> jax.Array:
        """Pooled (EOS position) features [B, d] of token ids [B, L] (L <= max_position_embeddings)."""
        input_ids = jnp.asarray(input_ids)
        b, l = input_ids.shape
        if l > cfg.max_position_embeddings:
            raise ValueError(f"CLIP text of {l} tokens; the model takes at most {cfg.max_position_embeddings}")
        x = jnp.take(self.embeddings.token_embedding.embedding[...], input_ids, axis=0).astype(dtype)
        x = x + self.embeddings.position_embedding.embedding[...][:l].astype(dtype)
        x = encoder(self.encoder.layers, cfg, x, text_attention_bias(attention_mask, l, b), precision)
        x = layer_norm(x, _pure(self.final_layer_norm), cfg.layer_norm_eps)
        return x[jnp.arange(b), eos_positions(input_ids, cfg)]


def _pure(module: nnx.Module) -> dict:
    return nnx.to_pure_dict(nnx.state(module, nnx.Param))


# ------------------------------------------------------------------------------ the model

class CLIPModel(nnx.Module):
    """Both CLIP towers and their projections.

    ``image_features`` / ``text_features``: projected, not normalised (HF ``get_image_features``
    / ``get_text_features``); ``image_embeds`` / ``text_embeds``: normalised (float32);
    ``cosine``: paired cosine similarity of row i's image and row i's text; ``logits``:
    (logits_per_image [N, B], logits_per_text [B, N]) = exp(logit_scale) * cosines, as HF.
    Pixels are the normalised [N, image_size, image_size, 3] of :func:`.preprocess.preprocess`.
    """

    def __init__(self, config: CLIPConfig, *, rngs: nnx.Rngs):
        self.config = config
        pdt = jnp.dtype(config.param_dtype)
        self.text_model = TextTransformer(config.text, rngs=rngs, dtype=pdt)
        self.vision_model = VisionTransformer(config.vision, rngs=rngs, dtype=pdt)
        self.visual_projection = Linear(config.vision.hidden_size, config.projection_dim, rngs=rngs,
                                        dtype=pdt, bias=False)
        self.text_projection = Linear(config.text.hidden_size, config.projection_dim, rngs=rngs,
                                      dtype=pdt, bias=False)
        self.logit_scale = nnx.Param(jnp.asarray(config.logit_scale_init, pdt))

    def _run(self):
        c = self.config
        precision = jax.lax.Precision.HIGHEST if c.matmul_precision == "highest" else None
        return jnp.dtype(c.dtype), precision

    def image_features(self, pixels: jax.Array) -> jax.Array:
        dtype, precision = self._run()
        pooled = self.vision_model(pixels, self.config.vision, dtype, precision)
        return dense(_pure(self.visual_projection), pooled, precision)

    def text_features(self, input_ids: jax.Array, attention_mask: jax.Array | None = None) -> jax.Array:
        dtype, precision = self._run()
        pooled = self.text_model(input_ids, attention_mask, self.config.text, dtype, precision)
        return dense(_pure(self.text_projection), pooled, precision)

    def image_embeds(self, pixels: jax.Array) -> jax.Array:
        """Normalised image embeddings [N, projection_dim] (float32)."""
        return normalize(self.image_features(pixels))

    def text_embeds(self, input_ids: jax.Array, attention_mask: jax.Array | None = None) -> jax.Array:
        """Normalised text embeddings [B, projection_dim] (float32)."""
        return normalize(self.text_features(input_ids, attention_mask))

    def cosine(self, pixels: jax.Array, input_ids: jax.Array, attention_mask: jax.Array | None = None) -> jax.Array:
        """[N] cosine similarity of image i and text i (the CLIP score before scaling)."""
        return jnp.sum(self.image_embeds(pixels) * self.text_embeds(input_ids, attention_mask), axis=-1)

    def logits(self, pixels: jax.Array, input_ids: jax.Array,
               attention_mask: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        """(logits_per_image [N, B], logits_per_text [B, N]) = exp(logit_scale) * cosines."""
        img = self.image_embeds(pixels)
        txt = self.text_embeds(input_ids, attention_mask)
        per_text = jnp.einsum("bd,nd->bn", txt, img, precision=jax.lax.Precision.HIGHEST)
        per_text = per_text * jnp.exp(self.logit_scale[...].astype(jnp.float32))
        return per_text.T, per_text


def clip_score(cosine, scale: float = 100.0):
    """torchmetrics' CLIPScore of paired cosines: max(scale * cos, 0)."""
    return jnp.maximum(scale * jnp.asarray(cosine), 0.0)


def build_model(config: CLIPConfig, seed: int = 0) -> CLIPModel:
    """A CLIP with random weights (normal(0.02) matrices, unit norms): for tests and shapes."""
    with nnx.use_eager_sharding(False):
        return CLIPModel(config, rngs=nnx.Rngs(seed))


def abstract_model(config: CLIPConfig) -> CLIPModel:
    """The model with ShapeDtypeStruct parameters (nothing allocated): ``nnx.eval_shape``."""
    with nnx.use_eager_sharding(False):
        return nnx.eval_shape(lambda: CLIPModel(config, rngs=nnx.Rngs(0)))


def num_params(config: CLIPConfig) -> int:
    """Parameter count of the architecture (logit_scale included), from the abstract model."""
    state = nnx.state(abstract_model(config), nnx.Param)
    return sum(int(np.prod(v.shape)) for v in jax.tree.leaves(nnx.to_pure_dict(state)))
