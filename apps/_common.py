"""What the search apps (``wpl-enas-search``, ``wpl-nao-search``) share: the config from
``--config`` / the run / a preset with the command-line overrides, the data arguments, the data
of a stage (``--data-dir`` / ``--verify``, else the run's record, else
``$WPL_DATA_DIR/<space's folder>``), the stage dispatch for train-best/export, and the report
of a data error as one paragraph with exit status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Callable, Dict, Optional

ENV_DATA_DIR = "WPL_DATA_DIR"
DATA_ERROR_STATUS = 2
# The strategy kinds of `wpl_keras.nas.search.distribute.KINDS` (not imported here: it loads
# TensorFlow, and the apps parse their arguments before that).
STRATEGY_KINDS = ("auto", "default", "mirrored", "multi_worker")


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds ``--data-dir`` and ``--verify/--no-verify``."""
    parser.add_argument("--data-dir", default=None,
                        help="the space's data folder (e.g. ../shared/data/ptb); default: the "
                             "one the search of --out used (DIR/data_source.json), else "
                             f"${ENV_DATA_DIR}/<ptb|cifar10> when {ENV_DATA_DIR} is set, else "
                             "the loader's download")
    parser.add_argument("--verify", action=argparse.BooleanOptionalAction, default=None,
                        help="check local data files against their standard checksums "
                             "(--no-verify: accept variants of the files); default: the "
                             "search's choice, else on")


# (flag, loop config field, type, help): the loop settings every search app overrides the same
# way (`wpl_keras.nas.search.schedule.LoopConfig`); each app adds its controller's.
LOOP_OVERRIDES = (
    ("--epochs", "epochs", int, "search epochs"),
    ("--shared-steps", "shared_steps_per_epoch", int,
     "architectures trained per epoch (each on --batches-per-arch batches)"),
    ("--batches-per-arch", "batches_per_arch", int, "training batches per architecture"),
    ("--wpl-start-epoch", "wpl_start_epoch", int, "first epoch (0-based) with WPL on"),
    ("--alpha", "strength", float, "WPL strength alpha0"),
    ("--flush-every", "flush_every", int,
     "reset the Fisher every this many epochs after WPL turns on (0: never)"),
    ("--checkpoint-every", "checkpoint_every", int,
     "also checkpoint every this many units of work (0: each epoch and on signals only)"),
)


def add_search_app_arguments(parser: argparse.ArgumentParser, *, commands, config_name: str,
                             plain: str, overrides) -> None:
    """The arguments every search app has: the stage, space, preset, config file, data, output,
    WPL on/off, resume, seed, the loop and controller overrides, quiet, and the later stages'
    architecture and export folder."""
    parser.add_argument("command", nargs="?", default="search", choices=commands,
                        help="stage to run")
    parser.add_argument("--space", default=None,
                        help="search space: rnn (PTB, ENAS recurrent cell) or cnn (CIFAR-10, "
                             f"micro cell); default rnn, or the one in DIR/{config_name}")
    parser.add_argument("--preset", default=None,
                        help="preset: paper (reference sizes, for a GPU), cpu-small (minutes on "
                             "2 CPU cores) or tiny (tests); default cpu-small, or the config in "
                             f"DIR/{config_name} for later stages")
    parser.add_argument("--config", default=None,
                        help=f"a {config_name} to use instead of a preset")
    add_data_arguments(parser)
    parser.add_argument("--out", required=True, help="output directory of the experiment")
    parser.add_argument("--wpl", action=argparse.BooleanOptionalAction, default=None,
                        help=f"use the Weight Plasticity Loss (--no-wpl: plain {plain}); default "
                             "from the preset/config (on)")
    parser.add_argument("--resume", action="store_true",
                        help="search / train-best: continue from the latest checkpoint in "
                             "--out (train-best: the recorded run, with its architecture, "
                             "epochs and config; a finished one is not trained again)")
    parser.add_argument("--train-checkpoint-every", type=int, default=None,
                        help="train-best: also checkpoint every this many training batches "
                             "(0: at epoch ends and on SIGINT/SIGTERM only); default 100")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: preset's)")
    add_override_arguments(parser, overrides)
    parser.add_argument("--strategy", default=None, choices=STRATEGY_KINDS,
                        help="tf.distribute strategy of the supernet task, either space: "
                             "default (one device), mirrored (the GPUs of this machine), "
                             "multi_worker (the workers TF_CONFIG lists; run the same command "
                             "on each) or auto (multi_worker when TF_CONFIG lists several "
                             "workers, else mirrored on several GPUs, else default); default: "
                             "the preset's/config's")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--arch", default=None,
                        help="train-best/export: architecture string (space.to_string form) "
                             "instead of DIR/derived.json")
    parser.add_argument("--export-dir", default=None,
                        help="export: the TensorFlow Serving model base path; each export "
                             "writes its next version folder <n>/ there (default DIR/export)")


def add_override_arguments(parser: argparse.ArgumentParser, table) -> None:
    """Adds one ``--flag`` per ``(flag, config field, type, help)`` row of ``table``."""
    for flag, _, kind, text in table:
        parser.add_argument(flag, type=kind, default=None, help=f"override: {text}")


def search_overrides(args: argparse.Namespace, table) -> Dict[str, Any]:
    """The search-config fields given on the command line: the flags of ``table`` that are
    set, ``wpl`` from ``--wpl/--no-wpl`` and ``verbose=0`` from ``--quiet``."""
    search = {field: getattr(args, flag[2:].replace("-", "_")) for flag, field, _, _ in table}
    search = {k: v for k, v in search.items() if v is not None}
    if args.wpl is not None:
        search["wpl"] = bool(args.wpl)
    if args.quiet:
        search["verbose"] = 0
    return search


def with_task_strategy(task_config, args: argparse.Namespace):
    """``task_config`` (a frozen task config of either space) with its ``strategy`` set to
    ``--strategy`` when given; unchanged otherwise.

    Raises:
        SystemExit: the task config has no ``strategy`` field.
    """
    from wpl_keras.utils.config_fields import find_field, replace_fields

    if args.strategy is None:
        return task_config
    if find_field(task_config, ["strategy"]) != ("strategy",):
        raise SystemExit(f"--strategy: the task config {type(task_config).__name__} has no "
                         "strategy field; this space's task runs on one device only.")
    return replace_fields(task_config, {"strategy": args.strategy}, where="--strategy")


def load_config(args: argparse.Namespace, config_type, saved_name: str,
                preset: Callable[[str, str], Any]):
    """``--config`` if given; else ``--out/saved_name`` when no ``--preset`` is given and the
    file exists (a later stage); else ``preset(--space or "rnn", --preset or "cpu-small")``."""
    saved = os.path.join(args.out, saved_name)
    if args.config:
        return config_type.load(args.config)
    if args.preset is None and os.path.exists(saved):
        return config_type.load(saved)
    return preset(args.space or "rnn", args.preset or "cpu-small")


def default_data_dir(args: argparse.Namespace, spec) -> Optional[str]:
    """``--data-dir``, else ``$WPL_DATA_DIR/<spec.data_subdir>`` when set, else None."""
    if args.data_dir:
        return args.data_dir
    root = os.environ.get(ENV_DATA_DIR)
    return os.path.join(root, spec.data_subdir) if root else None


def stage_data(args: argparse.Namespace, spec):
    """The :class:`~wpl_keras.experiments.data_source.DataSource` of this stage: the explicit
    ``--data-dir`` / ``--verify``, else what the run in ``--out`` recorded, else the defaults
    (:func:`default_data_dir`, verify on)."""
    from wpl_keras.experiments.data_source import resolve_data_source

    env_default = None if args.data_dir else default_data_dir(args, spec)
    return resolve_data_source(args.out, data_dir=args.data_dir, verify=args.verify,
                               default_dir=env_default)


def run_stage(prog: str, spec, stage: Callable[[], int]) -> int:
    """Runs ``stage()``; a data error of the loaders is printed as one paragraph on stderr
    (what failed, which files ``--data-dir`` needs) and gives exit status 2, and so does a
    train-best/export stage that cannot run on what ``--out`` holds
    (:class:`~wpl_keras.experiments.enas.TrainBestError`: the message says what to run)."""
    from wpl_keras.experiments.data_source import data_error_message, data_error_types
    from wpl_keras.experiments.enas import TrainBestError

    try:
        return stage()
    except data_error_types() as error:
        print(data_error_message(prog, error, dataset=spec.dataset, files=spec.data_files),
              file=sys.stderr)
        return DATA_ERROR_STATUS
    except TrainBestError as error:
        print(f"{prog}: {error}", file=sys.stderr)
        return DATA_ERROR_STATUS


def train_best_or_export(args: argparse.Namespace, base, source) -> None:
    """The ``train-best`` / ``export`` stages of the ENAS experiment ``base`` (an
    :class:`~wpl_keras.experiments.enas.ENASExperimentConfig`) on the data ``source``; prints
    the stage's JSON line (train-best: the record of ``train_best.json`` without its config;
    export: the version folder written and the seconds it took). ``export`` loads the model
    train-best kept and never trains."""
    import time

    from wpl_keras.experiments import enas

    arch = enas.build_space(base).from_string(args.arch) if args.arch else None
    if args.command == "train-best":
        every = args.train_checkpoint_every
        if every is not None and every < 0:
            raise SystemExit(f"--train-checkpoint-every {every}: must be >= 0 (0 checkpoints "
                             "at epoch ends and on SIGINT/SIGTERM only).")
        _, record = enas.run_train_best(
            base, source.data_dir, args.out, arch=arch, epochs=args.train_epochs,
            verify=source.verify, resume=args.resume,
            checkpoint_every=enas.TRAIN_CHECKPOINT_EVERY if every is None else every)
        shown = {k: v for k, v in record.items() if k != "config"}
        print(json.dumps({"command": "train-best", **shown}, default=float))
    else:
        start = time.time()
        path = enas.run_export(args.out, args.export_dir, arch=arch)
        print(json.dumps({"command": "export", "path": path,
                          "seconds": round(time.time() - start, 2)}))
