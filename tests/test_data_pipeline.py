"""The grain SFT pipeline: exact padding, seeded order, process sharding, exact resume (incl. Orbax)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mmada_jax.config import TokenIds
from mmada_jax.data.builder import write_records
from mmada_jax.data.pipeline import FormatRecord, make_dataset

from conftest import golden_path

BOS, EOS = 128, 129      # TokenIds.mmada(shift=125952)'s layout (the README's small layout); data-only tests
L = 8
N_TOK = 4


def _record(i: int) -> dict:
    n_instr = [0, 1, 3, 6, 20][i % 5]          # 6 = exactly L-2 (fits), 20 = over-long (truncated)
    return {
        "id": f"ex{i:02d}",
        "input_image_codes": np.full((N_TOK,), i, np.int32),
        "output_image_codes": np.arange(N_TOK, dtype=np.int32) + 100 * i,
        "instruction_ids": np.arange(1, n_instr + 1, dtype=np.int32) + 1000 * i,
        "reasoning_ids": np.full((i % 4 + 1,), 7, np.int32),
        "has_input_image": i % 3 != 0,
        "has_instruction": n_instr > 0,
    }


def _write(path, n, bos=BOS, eos=EOS):
    write_records(path, {"train": [_record(i) for i in range(n)], "validation": [_record(100)]},
                  num_image_tokens=N_TOK, metadata={"bos_id": bos, "eos_id": eos, "text_len": L,
                                                    "num_image_tokens": N_TOK}, examples_per_shard=4)
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return _write(tmp_path_factory.mktemp("sft10"), 10)


def _ds(data, **kw):
    args = dict(batch_size=2, text_len=L, seed=0, process_index=0, process_count=1, with_ids=True)
    args.update(kw)
    return make_dataset(data, "train", **args)


def _ids(batches):
    return [str(x) for b in batches for x in b["id"]]


def test_batch_shapes_and_padding_exact(data):
    batches = list(_ds(data, batch_size=5, shuffle=False, num_epochs=1))
    assert len(batches) == 2
    b = batches[0]
    want = {"input_image_codes": ((5, N_TOK), np.int32), "output_image_codes": ((5, N_TOK), np.int32),
            "input_text": ((5, L), np.int32), "output_text": ((5, L), np.int32),
            "input_text_len": ((5,), np.int32), "output_text_len": ((5,), np.int32),
            "has_input_image": ((5,), np.bool_), "has_instruction": ((5,), np.bool_)}
    for key, (shape, dtype) in want.items():
        assert b[key].shape == shape and b[key].dtype == dtype, key
    assert _ids(batches) == [f"ex{i:02d}" for i in range(10)]      # no shuffle: source order
    for bb in batches:
        for j, ex_id in enumerate(bb["id"]):
            rec = _record(int(str(ex_id)[2:]))
            for key, text_key, len_key in (("instruction_ids", "input_text", "input_text_len"),
                                           ("reasoning_ids", "output_text", "output_text_len")):
                ids = list(rec[key])
                seq = [BOS] + ids + [EOS]
                if len(seq) > L:
                    seq = seq[:L - 1] + [EOS]
                np.testing.assert_array_equal(bb[text_key][j], seq + [EOS] * (L - len(seq)))
                assert bb[len_key][j] == len(seq)
            np.testing.assert_array_equal(bb["input_image_codes"][j], rec["input_image_codes"])
            np.testing.assert_array_equal(bb["output_image_codes"][j], rec["output_image_codes"])
            assert bb["has_input_image"][j] == rec["has_input_image"]
            assert bb["has_instruction"][j] == rec["has_instruction"]
    # no instruction -> [BOS, EOS, EOS, ...], length 2; exactly L-2 ids -> full, EOS last; over-long cut
    first = batches[0]
    np.testing.assert_array_equal(first["input_text"][0], [BOS] + [EOS] * (L - 1))
    assert list(first["input_text_len"]) == [2, 3, 5, 8, 8]
    assert first["input_text"][4][-1] == EOS and first["input_text"][4][L - 2] == 4000 + L - 2


def test_seeded_shuffle(data):
    def first(ds, k):
        it = iter(ds)
        return _ids([next(it) for _ in range(k)])

    a, b, c = first(_ds(data, seed=0), 10), first(_ds(data, seed=0), 10), first(_ds(data, seed=1), 10)
    assert a == b and a != c
    assert sorted(a[:10]) == [f"ex{i:02d}" for i in range(10)]     # one epoch = a permutation
    assert a[:10] != sorted(a[:10])
    two = first(_ds(data, seed=0, num_epochs=2), 10)
    assert sorted(two[10:]) == sorted(two[:10]) and two[10:] != two[:10]   # reshuffled per epoch
    assert len(list(_ds(data, num_epochs=2, batch_size=3))) == 6          # 20 examples, drop remainder


def test_process_sharding(data, tmp_path):
    per = [set(_ids(_ds(data, num_epochs=1, batch_size=1, process_index=i, process_count=2))) for i in range(2)]
    assert not per[0] & per[1]
    assert per[0] | per[1] == {f"ex{i:02d}" for i in range(10)}
    odd = _write(tmp_path / "odd", 11)
    sizes = [len(_ids(_ds(odd, num_epochs=1, batch_size=1, process_index=i, process_count=3))) for i in range(3)]
    assert sizes == [3, 3, 3]          # equal shares: floor(11 / 3); 2 records unused
    with pytest.raises(ValueError, match="process_index"):
        _ds(data, process_index=2, process_count=2)


def test_state_round_trip(data):
    it = iter(_ds(data, batch_size=3))
    for _ in range(4):                 # into the second epoch
        next(it)
    state = it.get_state()
    json.dumps(state)                  # a small JSON-able dict
    expect = [next(it) for _ in range(5)]
    it2 = iter(_ds(data, batch_size=3))
    it2.set_state(state)
    got = [next(it2) for _ in range(5)]
    for e, g in zip(expect, got):
        assert e.keys() == g.keys()
        for k in e:
            np.testing.assert_array_equal(e[k], g[k])


def test_orbax_composite_checkpoint(data, tmp_path):
    import grain
    import orbax.checkpoint as ocp
    it = iter(_ds(data, batch_size=3, seed=5))
    for _ in range(3):
        next(it)
    params = {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}
    with ocp.CheckpointManager(tmp_path / "ckpt", options=ocp.CheckpointManagerOptions(create=True)) as mngr:
        mngr.save(3, args=ocp.args.Composite(state=ocp.args.StandardSave(params),
                                             data=grain.checkpoint.CheckpointSave(it)))
        mngr.wait_until_finished()
    expect = [next(it) for _ in range(4)]

    it2 = iter(_ds(data, batch_size=3, seed=5))
    with ocp.CheckpointManager(tmp_path / "ckpt") as mngr:
        restored = mngr.restore(3, args=ocp.args.Composite(state=ocp.args.StandardRestore(params),
                                                           data=grain.checkpoint.CheckpointRestore(it2)))
    np.testing.assert_array_equal(restored["state"]["w"], params["w"])
    got = [next(it2) for _ in range(4)]
    assert _ids(got) == _ids(expect)
    for e, g in zip(expect, got):
        for k in e:
            np.testing.assert_array_equal(e[k], g[k])


def test_token_ids_and_errors(data):
    tokens = TokenIds.mmada(shift=125952, codebook_size=64)
    assert (tokens.bos_id, tokens.eos_id) == (BOS, EOS)
    a = next(iter(_ds(data, tokens=tokens, shuffle=False)))
    assert (a["input_text"][:, 0] == BOS).all() and a["input_text"][0, 1] == EOS
    with pytest.raises(ValueError, match="bos_id"):
        _ds(data, tokens=TokenIds())           # the real layout: data was made for another one
    with pytest.raises(ValueError, match="no split 'test'"):
        make_dataset(data, "test", batch_size=1, text_len=L, seed=0, process_index=0, process_count=1)
    assert len(list(make_dataset(data, "validation", batch_size=1, text_len=L, seed=0, num_epochs=1,
                                 process_index=0, process_count=1))) == 1
    with pytest.raises(ValueError, match="no full batch"):
        _ds(data, batch_size=11, num_epochs=1)
    with pytest.raises(FileNotFoundError, match="no pretokenized dataset"):
        make_dataset(data / "nope", batch_size=1, text_len=L, seed=0, process_index=0, process_count=1)
    with pytest.raises(ValueError, match="text_len"):
        FormatRecord(BOS, EOS, 1, None)
    with pytest.warns(UserWarning, match="shorter than the --text-len"):
        b = next(iter(_ds(data, text_len=L - 2, shuffle=False, batch_size=5)))
    assert b["input_text"].shape == (5, L - 2) and list(b["input_text_len"]) == [2, 3, 5, 6, 6]


@pytest.mark.golden
def test_checkpoint_gives_its_token_ids(tmp_path):
    """``checkpoint=`` reads bos/eos from the checkpoint: the same batches as its ``tokens``; data made
    for the golden tiny checkpoint's layout (ids taken from it) is accepted."""
    from mmada_jax import load_config
    ckpt = golden_path("mmada_tiny")
    tokens = load_config(ckpt).tokens
    data = _write(tmp_path / "g", 6, bos=tokens.bos_id, eos=tokens.eos_id)
    a = next(iter(_ds(data, tokens=tokens, shuffle=False)))
    b = next(iter(_ds(data, checkpoint=ckpt, shuffle=False)))
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert (b["input_text"][:, 0] == tokens.bos_id).all() and b["input_text"][0, 1] == tokens.eos_id
    if (tokens.bos_id, tokens.eos_id) != (BOS, EOS):
        with pytest.raises(ValueError, match="bos_id"):
            _ds(data, tokens=TokenIds.mmada(shift=125952, codebook_size=64))


MP_SCRIPT = '''
import gc, json, sys
from mmada_jax.data.pipeline import make_dataset

def ids(b):
    return [str(x) for x in b["id"]]

if __name__ == "__main__":
    kw = dict(batch_size=2, text_len=8, seed=3, with_ids=True, process_index=0, process_count=1)
    ds = make_dataset(sys.argv[1], "train", worker_count=2, **kw)
    ref = iter(make_dataset(sys.argv[1], "train", **kw))
    it = iter(ds)
    a, b = [ids(next(it)) for _ in range(4)], [ids(next(ref)) for _ in range(4)]
    state = it.get_state()
    nxt = [ids(next(it)) for _ in range(3)]
    it2 = iter(ds)
    it2.set_state(state)
    print(json.dumps({"same": a == b, "resume": nxt == [ids(next(it2)) for _ in range(3)]}))
    del it, it2
    gc.collect()
'''


@pytest.mark.slow
def test_multiprocess_workers(data, tmp_path):
    """worker_count=2 (mp_prefetch, spawned workers): same batches as in-process, exact resume."""
    import subprocess
    import sys
    from conftest import ROOT
    script = tmp_path / "mp_check.py"
    script.write_text(MP_SCRIPT)
    r = subprocess.run([sys.executable, str(script), str(data)], capture_output=True, text=True, cwd=ROOT,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert result == {"same": True, "resume": True}


def test_instruction_len_pads_instructions_apart_from_the_text(data):
    """instruction_len I: instructions are padded to I (the reasoning still to L); one that does not
    fit is an error naming its example, never a silent cut."""
    longest = max(len(_record(i)["instruction_ids"]) for i in range(10))
    batch = next(iter(_ds(data, batch_size=10, shuffle=False, num_epochs=1, instruction_len=longest + 2)))
    assert batch["input_text"].shape == (10, longest + 2) and batch["output_text"].shape == (10, L)
    for j in range(10):
        ids = list(_record(j)["instruction_ids"])
        seq = [BOS] + ids + [EOS]
        np.testing.assert_array_equal(batch["input_text"][j], seq + [EOS] * (longest + 2 - len(seq)))
        assert batch["input_text_len"][j] == len(seq)
    with pytest.raises(ValueError, match=r"record 'ex04'.*instruction_len=21"):
        list(_ds(data, batch_size=10, shuffle=False, num_epochs=1, instruction_len=longest + 1))
    with pytest.raises(ValueError, match="instruction_len must be >= 3"):
        FormatRecord(BOS, EOS, L, N_TOK, instruction_len=2)
