"""Entry point of the ``ecosnap`` console script."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

DEMO_SEED = 0
DEMO_IMAGES_PER_CLASS = 300


def _up(args: argparse.Namespace) -> int:
    from cli.up import up

    return up(args.port, args.workers, args.flower)


def _demo_data(args: argparse.Namespace) -> int:
    from training.synthetic import write_dataset

    write_dataset(args.output, args.per_class, seed=args.seed)
    print(f"Wrote {args.per_class} images per class under {args.output}")
    return 0


def _refuse(command: str, message: str) -> int:
    print(f"ecosnap {command}: {message}", file=sys.stderr)
    return 2


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive whole number")
    return value


def _train(args: argparse.Namespace) -> int:
    import time

    from common.datasets import DatasetError, ZipLimits
    from common.model_metadata import MetadataError, check_version_name
    from common.settings import Settings
    from training.train import report_dir_for, train

    version = args.version or time.strftime("%Y%m%d-%H%M%S")
    output = args.output or Path("var") / "trained" / version / "model.h5"
    try:
        check_version_name(version)
    except MetadataError as exc:
        return _refuse("train", f"--version: {exc.message}")
    if output.suffix != ".h5":
        return _refuse("train", "--output must name the .h5 file (the .keras twin goes beside it).")
    if args.weights is not None and not args.weights.is_file():
        return _refuse("train", f"--weights {args.weights}: no such file")
    try:
        metadata = train(
            args.data,
            output,
            version,
            architecture=args.architecture,
            epochs=args.epochs,
            batch_size=args.batch_size,
            patience=args.patience,
            seed=args.seed,
            weights=args.weights,
            augment=args.augment,
            description=args.description,
            limits=ZipLimits.from_settings(Settings.from_env()),
        )
    except DatasetError as exc:
        return _refuse("train", exc.message)
    except ValueError as exc:  # initial weights that do not fit the network
        return _refuse("train", str(exc))
    test = metadata.extra["test_metrics"]
    print(
        f"Saved {output} and {output.with_suffix('.keras')} (version {metadata.version}), "
        f"report in {report_dir_for(output)}/\n"
        f"Test split ({test['images']} images): accuracy {test['accuracy']}%, "
        f"macro F1 {test['f1_score']}%"
    )
    return 0


def _export(args: argparse.Namespace) -> int:
    from worker.conversion import export

    output, difference = export(args.model, args.to, args.output)
    print(f"Wrote {output} (largest probability difference from the source: {difference:.1e})")
    return 0


def _models_add(args: argparse.Namespace) -> int:
    from cli.models import add

    return add(args.model, args.preset, args.version, args.description, tuple(args.classes),
               args.upload, args.activate, os.environ.get("ADMIN_API_KEY"))  # fmt: skip


def _evaluate(args: argparse.Namespace) -> int:
    from cli.evaluate import evaluate

    return evaluate(args.dataset, args.api, args.split, args.output, args.key)


def _predict(args: argparse.Namespace) -> int:
    from cli.predict import predict

    return predict(args.paths, args.api, args.key, args.concurrency, args.output, args.lang)


def _bench(args: argparse.Namespace) -> int:
    from bench.run import main as bench_main

    return bench_main(args.bench_args)


def build_parser() -> argparse.ArgumentParser:
    from cli.up import default_port
    from common.labels import CLASSES
    from common.preprocessing import PRESETS
    from training.architectures import ARCHITECTURES

    parser = argparse.ArgumentParser(prog="ecosnap", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    up = commands.add_parser("up", help="run Redis (if REDIS_URL is unset), a worker and the API")
    up.add_argument("--port", type=int, default=default_port())
    up.add_argument("--workers", type=positive_int, default=1,
                    help="photo workers (one per GPU where GPUs are visible)")  # fmt: skip
    up.add_argument("--flower", type=int, metavar="PORT", default=None,
                    help="also run Flower, Celery's monitor, on this loopback port")  # fmt: skip
    up.set_defaults(run=_up)

    demo = commands.add_parser("demo-data", help="draw the synthetic demo dataset")
    demo.add_argument("output", type=Path)
    demo.add_argument("--per-class", type=int, default=DEMO_IMAGES_PER_CLASS)
    demo.add_argument("--seed", type=int, default=DEMO_SEED)
    demo.set_defaults(run=_demo_data)

    train = commands.add_parser(
        "train", help="train a model on a folder or zip of class folders, or kaggle:OWNER/DATASET"
    )
    train.add_argument("data", help="a folder, a .zip, or kaggle:OWNER/DATASET[/versions/N]")
    train.add_argument(
        "--output", type=Path, default=None, help="the .h5 path (default var/trained/VERSION/)"
    )
    train.add_argument("--architecture", choices=sorted(ARCHITECTURES), default="small_cnn")
    train.add_argument("--epochs", type=positive_int, default=30)
    train.add_argument("--batch-size", type=positive_int, default=32)
    train.add_argument("--patience", type=positive_int, default=5, help="early stopping, in epochs")
    train.add_argument("--seed", type=int, default=DEMO_SEED)
    train.add_argument("--weights", type=Path, default=None, help="start from a local file")
    train.add_argument(
        "--no-augment", dest="augment", action="store_false", help="train without augmentation"
    )
    train.add_argument("--version", default=None)
    train.add_argument("--description", default=None, help="for /model-info")
    train.set_defaults(run=_train)

    export = commands.add_parser("export", help="convert a Keras model, checked for parity")
    export.add_argument("model", type=Path)
    export.add_argument("--to", required=True, choices=["savedmodel", "onnx", "tflite"])
    export.add_argument("--output", type=Path, default=None)
    export.set_defaults(run=_export)

    models = commands.add_parser("models", help="models trained elsewhere")
    model_commands = models.add_subparsers(dest="models_command", required=True)
    add = model_commands.add_parser(
        "add", help="write a model file's metadata from the file itself, optionally upload it"
    )
    add.add_argument("model", type=Path, help="a .h5, .keras, .onnx or .tflite file")
    add.add_argument("--preset", required=True, choices=sorted(PRESETS),
                     help="how the model's training fed it its images")  # fmt: skip
    add.add_argument("--classes", type=lambda text: text.split(","), default=list(CLASSES),
                     help=f"the model's output order (default {','.join(CLASSES)})")  # fmt: skip
    add.add_argument("--version", default=None, help="default: the file's name and sha256")
    add.add_argument("--description", default=None, help="for /model-info")
    add.add_argument(
        "--upload",
        metavar="API",
        default=None,
        help="send it to this service (with ADMIN_API_KEY) and wait for validation",
    )
    add.add_argument("--activate", action="store_true", help="with --upload: serve it")
    add.set_defaults(run=_models_add)

    api = f"http://127.0.0.1:{default_port()}"
    key_help = "the API key, when the service has keys on (default: $ECOSNAP_API_KEY)"
    predict = commands.add_parser("predict", help="classify photos, folders or bucket URLs")
    predict.add_argument("paths", nargs="+", help="photo files, folders, gs:// or https:// URLs")
    predict.add_argument("--api", default=api)
    predict.add_argument("--key", default=os.environ.get("ECOSNAP_API_KEY"), help=key_help)
    predict.add_argument("--concurrency", type=positive_int, default=8)
    predict.add_argument("--output", default=None,
                         help="FILE.csv, FILE.jsonl, or - for JSON lines on stdout")  # fmt: skip
    predict.add_argument("--lang", choices=["id", "en"], default="id")
    predict.set_defaults(run=_predict)

    evaluate = commands.add_parser("evaluate", help="evaluate the served model on a zip")
    evaluate.add_argument("dataset", help="a local .zip or gs://BUCKET/key.zip")
    evaluate.add_argument("--api", default=api)
    evaluate.add_argument("--key", default=os.environ.get("ECOSNAP_API_KEY"), help=key_help)
    evaluate.add_argument("--split", default=None)
    evaluate.add_argument("--output", type=Path, default=None, help="confusion matrix PNG")
    evaluate.set_defaults(run=_evaluate)

    bench = commands.add_parser("bench", help="run the benchmark (python -m bench --help)")
    bench.add_argument("bench_args", nargs=argparse.REMAINDER)
    bench.set_defaults(run=_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run a command; a refusal (a model without metadata, a model the service cannot
    serve, a bad version name) is one line on stderr and exit code 2, not a traceback."""
    from common.errors import Refusal

    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except Refusal as exc:
        return _refuse(args.command, exc.message)
    except FileNotFoundError as exc:
        return _refuse(args.command, f"{exc.filename}: no such file")
