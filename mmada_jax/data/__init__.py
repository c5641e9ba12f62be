"""Training data for MMaDA-Parallel-M SFT.

* :mod:`.synthetic` -- a simple-shapes editing dataset (tests, demos);
* :mod:`.pretokenize` -- JSONL examples -> tokenized, VQ-encoded ArrayRecord shards (a tfds
  dataset, readable without TensorFlow);
* :mod:`.pipeline` -- a grain pipeline over those shards giving fixed-shape numpy batches with
  a checkpointable iterator state.

Submodules are imported on use (``from mmada_jax.data import pipeline``) so that importing the
package stays cheap.
"""
