"""python -m evaluate --benchmark BENCH --judge synthetic|vlm|clip --out OUT [options]
python -m evaluate compare RUN_A RUN_B ... [--out DIR]

Sample every benchmark item with `sample parallel` (same model and sampler flags), judge each sample
with ParaBench's metrics and write OUT/results.jsonl, OUT/summary.json, OUT/summary.md and
OUT/report.html (see mmada_jax.evaluation.run). BENCH: our JSONL, a ParaBench-style folder or
RISEBench's data_total.json (mmada_jax.evaluation.benchmarks). A rerun with the same --out samples
and judges only what is missing. Without --checkpoint it runs the demo MMaDA-Parallel-M of the
synthetic world (demo/parallel_m_shapes_pararl; with --model a: the tiny random -A test checkpoint).

--task t2i|mmu samples base MMaDA's text-to-image or understanding task instead of the joint one.

Judges: synthetic (the demo world's programmatic judge; synthetic_base for its base-task
benchmarks: Scene Accuracy), vlm (ParaBench's six rubrics asked of an
OpenAI-compatible VLM endpoint, e.g. GPT-4.1 as in the paper, with answers cached in
OUT/judge_cache so a rerun is free), clip (CLIP scores). --samples-from RUN judges the samples of an
earlier evaluation without a model. `compare` puts runs side by side (evaluate/compare.py).

  python -m evaluate --benchmark parabench/ --judge vlm --checkpoint CKPT --out runs/eval_vlm
  python -m evaluate --benchmark parabench/ --judge vlm --base-url http://localhost:8000/v1 \\
      --judge-model Qwen/Qwen2.5-VL-72B-Instruct --samples-from runs/eval_vlm --out runs/eval_qwen
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def parse(argv=None) -> argparse.Namespace:
    from mmada_jax.app.cli import add_settings, subcommand_tasks
    p = argparse.ArgumentParser(prog="python -m evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--benchmark", type=Path, required=True, help="benchmark: JSONL, ParaBench-style folder or "
                   "RISEBench data_total.json (input images relative to it)")
    p.add_argument("--judge", default="synthetic", help="judge name: synthetic (default), vlm, clip, or one "
                   "registered with mmada_jax.evaluation.register_judge")
    p.add_argument("--out", type=Path, required=True, help="output folder (a rerun resumes)")
    p.add_argument("--samples-from", type=Path, default=None, help="judge the samples of this earlier evaluation "
                   "folder (same benchmark; no model is loaded)")
    v = p.add_argument_group("--judge vlm")
    v.add_argument("--base-url", default=None, help="OpenAI-compatible endpoint (default: https://api.openai.com/v1)")
    v.add_argument("--judge-model", default=None, help="judge model name (default: gpt-4.1)")
    v.add_argument("--api-key-env", default="OPENAI_API_KEY", help="environment variable holding the API key")
    v.add_argument("--concurrency", type=int, default=8, help="requests in flight (default: 8)")
    v.add_argument("--scale", choices=["x20", "from1"], default="x20", help="1-5 scores to 0-100: x20 = 20 x "
                   "score (default), from1 = 25 x (score - 1)")
    v.add_argument("--judge-cache", type=Path, default=None, help="answer cache folder (default: OUT/judge_cache)")
    v.add_argument("--judge-timeout", type=float, default=120.0, help="seconds per request (default: 120)")
    v.add_argument("--judge-retries", type=int, default=6, help="retries on 429/5xx/timeouts (default: 6)")
    v.add_argument("--no-json-mode", action="store_true", help="do not send response_format=json_object "
                   "(for servers that reject it)")
    v.add_argument("--price", default=None, metavar="IN,OUT", help="USD per million input,output tokens "
                   "(known for gpt-4.1, gpt-4.1-mini, gpt-4o)")
    c = p.add_argument_group("--judge clip")
    c.add_argument("--clip-checkpoint", type=Path, default=None, help="converted clip checkpoint or HF "
                   "CLIPModel directory")
    p.add_argument("--checkpoint", type=Path, help="model checkpoint (default: the demo model)")
    p.add_argument("--vq", "--vae_ckpt", type=Path, help="image tokenizer checkpoint (default: the checkpoint's)")
    p.add_argument("--tokenizer", type=Path, help="tokenizer directory (default: the checkpoint's)")
    p.add_argument("--dtype", default=None, help="float32 or bfloat16 (default: as stored)")
    p.add_argument("--mesh", default=None, help="e.g. data=2,fsdp=4 (default: one device)")
    p.add_argument("--model", choices=["a", "m"], default=None, help="m: MMaDA-Parallel-M, a: -A (default: the "
                   "checkpoint's kind; without --checkpoint, m)")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=None, help="only the first N items")
    p.add_argument("--task", choices=["parallel", "t2i", "mmu"], default="parallel",
                   help="what to sample: the joint text-and-image task (default), or base MMaDA's text-to-image "
                        "or understanding task (e.g. the demo world's --base-task benchmarks, --judge synthetic_base); "
                        "the sampler flags are that task's, as `python -m sample TASK`")
    task = argparse.ArgumentParser(add_help=False)
    task.add_argument("--task", choices=["parallel", "t2i", "mmu"], default="parallel")
    add_settings(p, subcommand_tasks(task.parse_known_args(argv)[0].task))
    return p.parse_args(argv)


def judge_options(args, root: Path) -> dict:
    """The keyword arguments of the chosen judge's class, from the command line."""
    if args.judge == "vlm":
        price = None
        if args.price:
            try:
                price = tuple(float(x) for x in args.price.split(","))
                assert len(price) == 2
            except (ValueError, AssertionError):
                raise ValueError(f"--price {args.price!r}: expected IN,OUT (USD per million tokens)") from None
        from mmada_jax.evaluation.vlm_client import DEFAULT_BASE_URL, DEFAULT_MODEL
        return dict(root=root, base_url=args.base_url or DEFAULT_BASE_URL, model=args.judge_model or DEFAULT_MODEL,
                    api_key_env=args.api_key_env, concurrency=args.concurrency, scale=args.scale,
                    cache_dir=args.judge_cache or args.out / "judge_cache", timeout=args.judge_timeout,
                    max_retries=args.judge_retries, json_mode=not args.no_json_mode, price=price)
    if args.judge == "clip":
        return dict(root=root, checkpoint=args.clip_checkpoint, dtype=args.dtype)
    return dict(root=root)


def _run(args) -> int:
    from mmada_jax.evaluation import get_judge
    from mmada_jax.evaluation.benchmarks import load_benchmark
    from mmada_jax.evaluation.run import evaluate

    bench = load_benchmark(args.benchmark)          # a bad benchmark fails before any model is loaded
    try:
        judge = get_judge(args.judge, **judge_options(args, bench.root))
    except KeyError as e:
        raise ValueError(e.args[0]) from None
    if args.samples_from is not None:
        if args.checkpoint is not None:
            raise ValueError("--samples-from judges stored samples: it takes no --checkpoint")
        evaluate(bench, args.out, judge, samples_from=args.samples_from, limit=args.limit)
        return 0

    from mmada_jax import make_mesh, open_checkpoint
    from mmada_jax.app import load_pipeline
    from mmada_jax.app.cli import DEMO, TINY_A, choose_task
    from mmada_jax.sharding import parse_mesh
    if args.checkpoint is None and args.model == "a":
        print(f"no --checkpoint: using the tiny test checkpoint {TINY_A['checkpoint']} (RANDOM weights)")
        args.checkpoint, args.vq = TINY_A["checkpoint"], args.vq or TINY_A["vq"]
        args.tokenizer = args.tokenizer or TINY_A["tokenizer"]
    elif args.checkpoint is None:
        print(f"no --checkpoint: using the demo model {DEMO['checkpoint']}")
        args.checkpoint = DEMO["checkpoint"]
    ckpt = open_checkpoint(args.checkpoint)
    task, settings, options = choose_task(args.task, args, ckpt.kind)
    vq = args.vq or ckpt.vq_dir
    if vq is None:
        raise ValueError("evaluate needs --vq (the image tokenizer checkpoint)")

    def pipeline():
        mesh = make_mesh(parse_mesh(args.mesh)) if args.mesh else None
        return load_pipeline(ckpt, vq, args.tokenizer, dtype=args.dtype, mesh=mesh)

    evaluate(bench, args.out, judge, task, pipeline, settings, options, batch_size=args.batch_size,
             seed=args.seed, limit=args.limit,
             run_info={k: str(Path(v).resolve()) if v is not None else None
                       for k, v in (("checkpoint", args.checkpoint), ("vq", vq), ("tokenizer", args.tokenizer))})
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["compare"]:
        from evaluate.compare import main as compare
        return compare(argv[1:])
    args = parse(argv)
    from mmada_jax.cli_utils import quiet_logs, run_guarded
    quiet_logs()
    return run_guarded(lambda: _run(args))


if __name__ == "__main__":
    sys.exit(main())
