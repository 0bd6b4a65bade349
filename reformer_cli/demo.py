"""`reformer demo`: train, convert, verify parity, generate in both frameworks, and write a report.

Stages, each timed in the report:

1. load the text (the standard library's *.py files unless --text is given)
   and hold out whole files;
2. train in --framework, checkpointing into OUT/run (Ctrl-C saves and exits
   130; `--resume` continues);
3. load the final weights into the other framework, save them back and check
   the tensors are bit-identical to the trained file;
4. compare the two frameworks layer by layer on a held-out passage, and
   evaluate held-out bits per byte in both;
5. continue a held-out prompt greedily and by sampling in both frameworks;
6. plot training curves and LSH buckets and write OUT/report.

The exit status is 0 when parity and the round trip hold, 1 when either
fails, and 130 after Ctrl-C. A greedy mismatch between frameworks is flagged
in the report and the log but does not fail the run: it can come from two
logits closer than float32 rounding.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
import numpy as np

from reformer_cli import backends, checkpoints
from reformer_cli.corpus import Corpus, load_corpus, unigram_cross_entropy_bits, unigram_entropy_bits
from reformer_cli.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, reports_errors
from reformer_cli.generate import Sampling, generate
from reformer_cli.options import (
    add_corpus_arguments,
    add_model_arguments,
    add_training_arguments,
    non_negative_float,
    non_negative_int,
    positive_int,
)
from reformer_cli.report import ReportData, SamplePair, write_report
from reformer_cli.train import bits, evaluate, plan_run, run_training, start_trainer
from reformer_spec.config import AttentionKind
from reformer_spec.hashing import portable_rotations

logger = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="train a byte-level Reformer, convert it, verify parity and write a report",
        description="Train a byte-level Reformer LM (LSH and local attention, reversible layers, axial "
        "positions, 4096-byte context by default) in one framework, convert it to the other, check "
        "parity on held-out text, generate from the same prompt in both, and write a report. The "
        "defaults take about 10 minutes on a 2-core CPU.",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("reports/demo"),
        help="output folder for the training run, the converted model and the report (default: %(default)s)",
    )
    parser.add_argument("--resume", action="store_true", help="continue the training run in OUT/run")
    parser.add_argument("--report", type=Path, help="report folder (default: OUT/report)")
    group = parser.add_argument_group("generation and checks")
    group.add_argument("--prompt-bytes", type=positive_int, default=160, help="bytes of held-out text used as the prompt (default: %(default)s)")
    group.add_argument("--generate-bytes", type=positive_int, default=160, help="bytes generated per sample (default: %(default)s)")
    group.add_argument("--temperature", type=non_negative_float, default=0.8, help="temperature of the sampled continuation (default: %(default)s)")
    group.add_argument("--top-k", type=non_negative_int, default=40, help="top-k of the sampled continuation (default: %(default)s)")
    group.add_argument("--parity-length", type=positive_int, help="bytes of held-out text for the parity check (default: the context)")
    add_corpus_arguments(parser)
    add_model_arguments(parser)
    add_training_arguments(parser)
    parser.set_defaults(func=run_command)


def held_out_passage(corpus: Corpus, length: int) -> np.ndarray:
    """(length,) bytes from the middle of the held-out text, which tends to be code rather than a header."""
    start = max(0, min(corpus.held_out.size // 2, corpus.held_out.size - length))
    return corpus.held_out[start : start + length]


def held_out_prompt(corpus: Corpus, length: int) -> bytes:
    """Return the first `length` bytes of the held-out text, cut back to whole UTF-8 characters."""
    prompt = corpus.held_out[:length].tobytes()
    return prompt.decode("utf-8", errors="ignore").encode("utf-8") or prompt


def run_parity(config, model_file: Path, passage: np.ndarray, seed: int) -> tuple[str | None, bool | None, str]:
    """Run the per-layer parity comparison on `passage`; returns (markdown table, passed, note).

    An exception inside the comparison is logged with its traceback and
    counted as a failure, so the report is still written.
    """
    from weights_convert import load_checkpoint
    from weights_convert.parity import compare_frameworks

    _, canonical = load_checkpoint(model_file)
    try:
        result = compare_frameworks(config, canonical, passage[None].astype(np.int32), seed)
    except Exception as error:  # noqa: BLE001  (a failed check must not lose the trained model's report)
        logger.exception("The parity check raised an error")
        return None, False, f"the parity check raised {type(error).__name__}: {error}"
    output, gradient = result.worst_output, result.worst_gradient
    note = (
        f"Input: {passage.size} held-out bytes, rotations from seed {seed}. Worst output error "
        f"{output.max_abs:.2e} (relative {output.max_rel:.2e}), worst gradient error {gradient.max_abs:.2e} "
        f"(relative {gradient.max_rel:.2e})."
    )
    return result.to_markdown(), bool(result.passed), note


def generate_samples(runners: tuple, prompt: bytes, args: argparse.Namespace, seed: int) -> list[SamplePair]:
    """Continue `prompt` greedily and by sampling with (trained, converted) runners."""
    samples = []
    for sampling in (Sampling(seed=seed), Sampling(args.temperature, args.top_k, seed)):
        trained, converted = (generate(runner, prompt, args.generate_bytes, sampling) for runner in runners)
        samples.append(SamplePair(sampling.describe(), sampling.greedy, trained, converted))
    return samples


def first_lsh_buckets(runner: "backends.Runner", passage: np.ndarray, seed: int) -> tuple[int | None, np.ndarray | None]:
    """Return the index of the first LSH layer and its (H, R, L_padded) buckets for `passage`, or (None, None)."""
    config = runner.config
    layer = next((i for i, kind in enumerate(config.attention_layers) if kind is AttentionKind.LSH), None)
    if layer is None:
        return None, None
    buckets = runner.buckets(passage[None].astype(np.int32), portable_rotations(config, seed))
    return layer, buckets[layer][0]


def tensors_identical(first: Path, second: Path) -> bool:
    from weights_convert import load_checkpoint

    config_a, tensors_a = load_checkpoint(first)
    config_b, tensors_b = load_checkpoint(second)
    if config_a != config_b or tensors_a.keys() != tensors_b.keys():
        return False
    return all(tensors_a[name].dtype == tensors_b[name].dtype and np.array_equal(tensors_a[name], tensors_b[name]) for name in tensors_a)


@reports_errors
def run_command(args: argparse.Namespace) -> int:
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[stage] = now - clock
        clock = now

    out: Path = args.out
    run_dir = out / "run"
    plan = plan_run(args, run_dir)
    settings = plan.settings
    trained_framework = settings.framework
    other_framework = trained_framework.other

    corpus = load_corpus(args.text, context=settings.context, held_out_fraction=args.held_out_fraction, pattern=args.glob)
    logger.info("Text: %s", corpus.describe())
    entropy = unigram_entropy_bits(corpus.train)
    lap("load text")

    trainer, state = start_trainer(plan, args, corpus)
    config = trainer.config
    logger.info(
        "Training in %s: %d layers (%s), d_model %d, context %d bytes, %d steps of %d bytes",
        trained_framework.label,
        config.n_layers,
        ",".join(kind.value for kind in config.attention_layers),
        config.d_model,
        config.max_length,
        settings.steps,
        settings.batch_size * settings.context,
    )
    resume_command = f"reformer demo --out {out} --resume"
    result = run_training(trainer, corpus, run_dir, state, progress=not args.no_progress, resume_command=resume_command)
    lap(f"train ({trained_framework.label})")
    if result.interrupted:
        return EXIT_INTERRUPTED
    if result.checkpoint is None:
        raise checkpoints.CheckpointError(f"Training in {run_dir} wrote no checkpoint; run the demo again without --resume.")
    model_file = result.checkpoint / checkpoints.MODEL_FILE

    # Conversion: the other framework loads the canonical file, and what it saves back must be identical.
    converted = backends.load_runner(other_framework, model_file)
    converted_file = out / f"model-{other_framework.value}.safetensors"
    converted.save_model(converted_file)
    round_trip_exact = tensors_identical(model_file, converted_file)
    lap(f"convert to {other_framework.label}")

    passage = held_out_passage(corpus, args.parity_length or settings.context)
    parity_markdown, parity_passed, parity_note = run_parity(config, model_file, passage, settings.seed)
    held_out_bits = {runner.framework.label: bits(evaluate(runner, corpus, settings)) for runner in (trainer, converted)}
    lap("parity and held-out evaluation")

    prompt = held_out_prompt(corpus, args.prompt_bytes)
    samples = generate_samples((trainer, converted), prompt, args, settings.seed)
    lap("generation")

    bucket_passage = held_out_passage(corpus, settings.context)
    bucket_layer, bucket_plot = first_lsh_buckets(trainer, bucket_passage, settings.seed)
    data = ReportData(
        trained_framework=trained_framework.label,
        converted_framework=other_framework.label,
        settings=settings.to_dict(),
        config=config.to_dict(),
        corpus=result.state.corpus,
        history=result.state.history,
        unigram_entropy_bits=entropy,
        unigram_held_out_bits=unigram_cross_entropy_bits(corpus.train, corpus.held_out),
        held_out_bits=held_out_bits,
        round_trip_exact=round_trip_exact,
        parity_markdown=parity_markdown,
        parity_passed=parity_passed,
        parity_note=parity_note,
        samples=samples,
        prompt=prompt,
        bucket_passage=bucket_passage.tobytes(),
        bucket_layer=bucket_layer,
        bucket_plot=bucket_plot,
        timings=timings,
    )
    report_dir = args.report or out / "report"
    lap("bucket plot")
    timings["total"] = sum(timings.values())
    write_report(report_dir, data)
    return summarize(data, report_dir)


def summarize(data: ReportData, report_dir: Path) -> int:
    """Print the demo's outcome and return its exit status."""
    trained_bits = data.held_out_bits[data.trained_framework]
    print(f"Held-out bits per byte: {trained_bits:.3f} ({data.trained_framework}), unigram entropy {data.unigram_entropy_bits:.3f}")
    for label, value in data.held_out_bits.items():
        if label != data.trained_framework:
            print(f"Held-out bits per byte after conversion to {label}: {value:.3f}")
    if trained_bits >= data.unigram_entropy_bits:
        logger.warning("The model is not below the unigram entropy; train longer (--steps) or check the learning rate (--lr).")
    print(f"Conversion round trip bit-identical: {'yes' if data.round_trip_exact else 'NO'}")
    print(f"Per-layer parity: {'passed' if data.parity_passed else 'FAILED'}. {data.parity_note}")
    for pair in data.samples:
        difference = pair.difference
        verdict = "identical in both frameworks" if difference is None else f"frameworks differ from byte {difference} on"
        print(f"Generation, {pair.description}: {verdict}")
        if difference is not None and pair.greedy:
            logger.warning("Greedy generation differs between frameworks at byte %d; see the report.", difference)
    print(f"Report: {report_dir / 'report.md'}")
    if not data.parity_passed or not data.round_trip_exact:
        return EXIT_FAILED
    return EXIT_OK
