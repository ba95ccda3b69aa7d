"""Using a trained model: `archbench sample | translate | tag | score | evaluate`.

Each takes an experiment (its best trained seed, or ``--seed N``) or a model URI such as
``models:/archbench-words_lstm@champion`` (see checkpoints.py). A model asked for what it cannot do (an image
generator asked to translate) gets one line naming the command it can serve.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from benchmarks.core.errors import ArchbenchError

KIND_COMMANDS = {"text": "sample, score", "translate": "translate", "tag": "tag", "images": "sample"}


def _chosen(args: argparse.Namespace, wants: tuple[str, ...], command: str) -> Any:
    from benchmarks.core.params import load_params
    from benchmarks.run.model_logging import model_kind
    from benchmarks.use.checkpoints import choose

    chosen = choose(load_params(args.params), args.target, args.seed)
    kind = model_kind(chosen.model)
    if kind not in wants:
        can = KIND_COMMANDS.get(kind)
        raise ArchbenchError(f"{chosen.experiment} is a {chosen.model_name} model"
                             + (f" ({kind}): use `archbench {can}`" if can else ", which has no inference command")
                             + f"; `archbench {command}` needs " + {"translate": "a translation model (seq2seq)",
                                                                    "tag": "a tagger",
                                                                    "score": "a char LM"}.get(command, "a char LM or an image generator"))
    print(f"# {chosen.source}", file=sys.stderr)
    return chosen


def _lines(texts: list[str]) -> list[str]:
    """The texts given, or one per line of stdin when none (or "-") is given; blank lines skipped."""
    if texts and texts != ["-"]:
        return texts
    found = [line.strip() for line in sys.stdin.read().splitlines()]
    return [line for line in found if line]


def cmd_sample(args: argparse.Namespace) -> int:
    chosen = _chosen(args, ("text", "images"), "sample")
    model = chosen.model
    if hasattr(model, "continue_text"):
        if args.label is not None or args.out:
            raise ArchbenchError(f"{chosen.experiment} makes text: --label and --out are for image generators")
        try:
            for i in range(args.count or 1):
                print(model.continue_text(args.prime, args.length, args.temperature, seed=args.noise_seed + i))
        except ValueError as exc:
            raise ArchbenchError(f"{chosen.experiment}: {exc}") from None
        return 0
    from benchmarks.use.images import write_samples

    label = None if args.label is None else _label(args, model, chosen.experiment)
    out = write_samples(model, args.count or 16, args.noise_seed, label, Path(args.out or "samples.png"), args.scale,
                        chosen.experiment)
    print(out)
    return 0


def _label(args: argparse.Namespace, model: Any, experiment: str) -> int:
    """--label as a class number: a number, or a class name of the data the experiment trains on."""
    from benchmarks.core.params import experiment_from_params, load_params
    from benchmarks.use.class_names import CLASS_NAMES, resolve_label
    from benchmarks.use.images import check_conditional

    check_conditional(model, experiment)
    try:  # a model URI from another project may name an experiment this params file lacks: numbers only then
        data = experiment_from_params(load_params(args.params), experiment).data
    except ArchbenchError:
        data = None
    names = CLASS_NAMES.get(data) if data else None
    label = resolve_label(args.label, names, int(model.hparams.num_classes), experiment)
    print(f"# class {label}" + (f" ({names[label]})" if names and label < len(names) else ""), file=sys.stderr)
    return label


def cmd_translate(args: argparse.Namespace) -> int:
    chosen = _chosen(args, ("translate",), "translate")
    sentences = _lines(args.text)
    if not sentences:
        raise ArchbenchError("nothing to translate: give a sentence, or lines on stdin")
    looks = args.alignment or args.attention_png
    if looks:
        from benchmarks.use.alignment import align, check_attention, describe, plot, summarise

        check_attention(chosen.model, chosen.experiment)
    try:
        unknown = sorted({t for s in sentences for t in chosen.model.encode_source(s)[1]})
        # with --alignment the translations are the aligned ones (one decode, the same text as translate_text's)
        alignments = align(chosen.model, sentences, args.beam_size) if looks else []
        translations = ([a.text for a in alignments] if looks
                        else chosen.model.translate_text(sentences, beam_size=args.beam_size))
    except ValueError as exc:
        raise ArchbenchError(f"{chosen.experiment}: {exc}") from None
    if unknown:
        print(f"# {len(unknown)} source words not in the vocabulary, read as <unk>: {', '.join(unknown[:12])}",
              file=sys.stderr)
    for i, line in enumerate(translations):
        print(line)
        if args.alignment:  # on stderr, so stdout stays one translation per line
            print(f"# attention: {describe(alignments[i])}", file=sys.stderr)
    if args.alignment:
        s = summarise(alignments)
        print(f"# attention over {s.sentences} sentences: mean largest weight {s.max_weight:.3f}; "
              f"{s.distinct:.2f} distinct most-attended source positions per sentence of {s.source_length:.2f} "
              "source tokens (a collapsed attention: a largest weight near 1 on about one position)", file=sys.stderr)
    if args.attention_png:
        print(f"# attention heatmaps: {plot(alignments, Path(args.attention_png))}", file=sys.stderr)
    return 0


def cmd_tag(args: argparse.Namespace) -> int:
    chosen = _chosen(args, ("tag",), "tag")
    sentences = [chosen.model.tokenize(s) for s in _lines(args.text)]
    sentences = [s for s in sentences if s]
    if not sentences:
        raise ArchbenchError("nothing to tag: give a sentence, or lines on stdin")
    try:
        tagged = chosen.model.tag_tokens(sentences)
    except ValueError as exc:
        raise ArchbenchError(f"{chosen.experiment}: {exc}") from None
    for words, tags in zip(sentences, tagged):
        print(" ".join(f"{w}/{t}" for w, t in zip(words, tags)))
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from benchmarks.use.scoring import score_text, window_length

    chosen = _chosen(args, ("text",), "score")
    path = Path(args.text)
    if not path.is_file():
        raise ArchbenchError(f"--text {path}: no such file; give a UTF-8 text file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ArchbenchError(f"--text {path}: not UTF-8 ({exc.reason} at byte {exc.start}); convert it first") from None
    score = score_text(chosen.model, text, window_length(chosen.checkpoint))
    if not score.targets:
        raise ArchbenchError(f"--text {path}: no character of it is in {chosen.experiment}'s vocabulary; nothing to score")
    print(f"nats/char {score.nats_per_char:.6f}  bits/char {score.bits_per_char:.6f}  "
          f"({score.targets} targets scored from {score.characters} characters of {path.name})")
    if score.outside:
        shown = ", ".join(f"{c!r} x{n}" for c, n in score.outside.most_common(10))
        print(f"outside the vocabulary: {sum(score.outside.values())} characters ({len(score.outside)} distinct: "
              f"{shown}), taken out before scoring")
    else:
        print("outside the vocabulary: none")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from benchmarks.core.params import load_params
    from benchmarks.use.checkpoints import choose, recorded_metrics
    from benchmarks.use.evaluation import compare, evaluate

    params = load_params(args.params)
    if args.target.startswith(("models:/", "runs:/")):
        raise ArchbenchError("evaluate reads the experiment's data and recorded metrics: give the experiment name "
                             "and --seed N, not a model URI")
    chosen = choose(params, args.target, args.seed)
    print(f"# {chosen.source}, {args.split} split", file=sys.stderr)
    rows = compare(recorded_metrics(params, chosen), evaluate(params, chosen, args.split), args.split, chosen.model)
    width = max(len(r[0]) for r in rows)
    print(f"{'metric':<{width}}  {'recorded':>14}  {'recomputed':>14}  equal")
    for key, old, new in rows:
        same = "yes" if old == new else ("n/a" if old is None else "NO")
        print(f"{key:<{width}}  {_num(old):>14}  {_num(new):>14}  {same}")
    differ = [r[0] for r in rows if r[1] is not None and r[1] != r[2]]
    if differ:
        print(f"{len(differ)} metric(s) differ from the record: {', '.join(differ)} (another CPU, thread count or code?)",
              file=sys.stderr)
        return 1
    return 0


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.8g}"


def add_parsers(sub: Any, seed_type: Any) -> None:
    """The five commands, on the CLI's subparsers."""

    def target(p: argparse.ArgumentParser) -> None:
        p.add_argument("target", metavar="EXP", help="an experiment (its best trained seed) or a model URI, e.g. "
                                                     "models:/archbench-words_lstm@champion")
        p.add_argument("--seed", type=seed_type, default=None, help="the experiment's seed (default: the best trained one)")

    p = sub.add_parser("sample", help="text from a char LM, or an image grid (PNG) from an image generator")
    target(p)
    p.add_argument("--prime", default="", help="char LM: text to start from (printed first)")
    p.add_argument("--length", type=int, default=200, help="char LM: characters to sample after the prime")
    p.add_argument("--temperature", type=float, default=1.0, help="char LM: softmax temperature (lower is safer)")
    p.add_argument("--count", type=int, default=None, help="texts to print, or images in the grid (default 1; 16 for images)")
    p.add_argument("--label", default=None, metavar="CLASS",
                   help="class-conditional generator: the class to draw, a number or a name (e.g. 'ankle boot')")
    p.add_argument("--out", default=None, help="image generators: the PNG to write (default samples.png)")
    p.add_argument("--scale", type=int, default=2, help="image generators: pixels per image pixel in the PNG")
    p.add_argument("--noise-seed", type=int, default=0, help="seed of the sampling noise (same seed, same output)")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("translate", help="translate sentences with a seq2seq experiment (stdin: one per line)")
    target(p)
    p.add_argument("text", nargs="*", help="source sentences (none or '-': read lines from stdin)")
    p.add_argument("--beam-size", type=int, default=None, help="beam width (default: the model's; 1 is greedy)")
    p.add_argument("--alignment", action="store_true",
                   help="attention models: print (stderr) each target word with the source word it weighted most, "
                        "and a summary that shows a collapsed attention")
    p.add_argument("--attention-png", metavar="PATH", default=None,
                   help="attention models: heatmaps of the attention weights of the first 4 sentences, as a PNG")
    p.set_defaults(func=cmd_translate)

    p = sub.add_parser("tag", help="tag sentences with a tagger experiment: token/TAG (stdin: one per line)")
    target(p)
    p.add_argument("text", nargs="*", help="sentences (none or '-': read lines from stdin)")
    p.set_defaults(func=cmd_tag)

    p = sub.add_parser("score", help="a char LM's nats/char and bits/char on a UTF-8 text file")
    target(p)
    p.add_argument("--text", required=True, metavar="FILE", help="the text to score")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("evaluate", help="recompute a trained seed's metrics and compare them with the recorded ones")
    target(p)
    p.add_argument("--split", choices=["test", "val"], default="test")
    p.set_defaults(func=cmd_evaluate)
