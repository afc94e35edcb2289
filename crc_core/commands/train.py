"""`crc train`: train ResNet50, DenseNet121 or InceptionV3 on a patch dataset or CSV manifest.

Runs under ``torchrun --nproc_per_node N -m crc_core.cli train ...`` too (DistributedDataParallel;
gloo on the CPU, nccl on GPUs); only rank 0 prints and writes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from crc_core.errors import ConfigError


def add_data_options(p: argparse.ArgumentParser) -> None:
    """Options that say how to read a CSV manifest (shared with `crc evaluate`)."""
    g = p.add_argument_group("data")
    g.add_argument("--image-column", help="CSV column with image paths (relative to the CSV)")
    g.add_argument("--label-column", help="CSV column with class labels (default: label)")
    g.add_argument("--group-column", help="CSV column with the slide/case: the split is by group")
    g.add_argument("--group-pattern",
                   help=r"regular expression whose first match in the group value is the group, "
                   r"e.g. '\d{7}' (EBHI case numbers inside GTDC file names)")
    g.add_argument("--split-column", help="CSV column with a given split (train/val/test)")
    g.add_argument("--classes", help='keep only these labels, comma-separated, e.g. "A,B,C"')
    g.add_argument("--map", dest="map", help='merge labels, e.g. "Low-grade IN=Adenoma,C=B"')


def data_options(args: argparse.Namespace) -> dict[str, Any]:
    return {"image_column": args.image_column, "label_column": args.label_column,
            "group_column": args.group_column, "group_pattern": args.group_pattern,
            "split_column": args.split_column,
            "classes": args.classes, "map": args.map}


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "train", help="train a CNN classifier on patches",
        description="Train a torchvision CNN (resnet50, densenet121, inception_v3) on a dataset "
        "folder from `crc extract` or a CSV manifest. Writes last.pt (every epoch), best.pt, "
        "history.csv, config.json and summary.json into --out.")
    p.add_argument("--data", required=True, help="dataset folder or CSV manifest")
    p.add_argument("--out", required=True,
                   help="run folder to write; {arch} and {time} are filled in")
    p.add_argument("--evaluate", action="store_true",
                   help="after training, evaluate each run's best.pt into RUN/eval (the report "
                   "the Train dialog shows: on the test split when there is one, else on the "
                   "validation split)")
    p.add_argument("--tta", action="store_true",
                   help="with --evaluate: average 8 flips and rotations (8x slower)")
    p.add_argument("--arch", type=_archs,
                   help="architecture: resnet50 (default; with --resume: the checkpoint's), "
                   "densenet121 or inception_v3; several, comma-separated (e.g. "
                   "resnet50,densenet121), are trained one after another, each into --out with "
                   "{arch} filled in (or into --out/ARCH)")
    p.add_argument("--preset", choices=["recommended", "paper", "quick"], default="recommended",
                   help="recommended (default): the strongest recipe measured on the CPU (30 "
                   "epochs, batch 32, AdamW lr 1e-3 with a cosine decay, balanced sampling when "
                   "the largest class has >= 3x the smallest's images, best.pt by validation "
                   "balanced accuracy, flips/rotations/zoom/colour/stain augmentation); paper: the "
                   "study exactly (batch 32, 200 epochs, lr 1e-3 lowered tenfold after epochs "
                   "80, 120, 160, 180, no augmentation, no balancing, best.pt by validation "
                   "accuracy); quick: 5 epochs, batch 16, for trying things. Any option below "
                   "overrides the preset's value")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int, help="global batch (split between torchrun processes)")
    p.add_argument("--lr", type=float, help="initial learning rate")
    p.add_argument("--milestones", help="epochs after which the rate drops tenfold, e.g. 80,120 "
                   "(with --schedule step)")
    p.add_argument("--schedule", choices=["step", "cosine"],
                   help="learning-rate schedule: step (milestones) or cosine (decays to 0)")
    p.add_argument("--optimizer", choices=["adam", "adamw", "rmsprop", "sgd"])
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--label-smoothing", type=float)
    p.add_argument("--image-size", type=int, help="network input side in pixels")
    p.add_argument("--mpp", type=float,
                   help="µm per pixel of the tiles when the dataset does not state it (a tile "
                   "folder or CSV): recorded in the checkpoint so prediction cuts windows at this "
                   "scale; without it, a pixel size every tile states in its resolution tags is "
                   "used, else the scale is recorded as unknown (with a warning)")
    p.add_argument("--stain-norm", choices=["none", "macenko", "reinhard"],
                   help="stain normalisation (default none): fitted on up to --stain-tiles "
                   "training tiles, stored in the checkpoint and applied to every image the model "
                   "sees (training at decode time, evaluation, prediction)")
    p.add_argument("--stain-tiles", type=int,
                   help="training tiles the stain normalisation is fitted on (default 64, seeded)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--weights", help="none (default), imagenet (from the local torch cache "
                   "only) or "
                   "a checkpoint/state_dict file whose backbone is loaded")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the model's initialisation, image order and augmentation, and "
                   "(without --split-seed) of the split")
    p.add_argument("--split-seed", type=int,
                   help="seed of the split and of the stain reference tiles (default: --seed); "
                   "runs with one --split-seed and different --seed are replicates on one split")
    p.add_argument("--val-fraction", type=float, default=0.2,
                   help="share of groups held out for validation (default 0.2)")
    p.add_argument("--test-fraction", type=float,
                   help="share of groups held out as a test set, used neither for training nor "
                   "to pick best.pt; `crc evaluate` reports on it (default 0)")
    p.add_argument("--workers", type=int, default=-1,
                   help="DataLoader workers when images are streamed (default automatic)")
    p.add_argument("--cache", choices=["auto", "gpu", "cpu", "none"], default="auto",
                   help="where decoded images are kept (default: GPU when it fits, else RAM)")
    _add_augment_options(p)
    p.add_argument("--balance", choices=["auto", "none", "loss", "sampler"],
                   help="class imbalance: loss = inverse-frequency class weights in the "
                   "cross-entropy; sampler = each epoch drawn with every class equally likely; "
                   "none = as the paper; auto = sampler when the largest class has >= 3x the "
                   "smallest's images (the recommended preset)")
    p.add_argument("--best-metric", choices=["acc", "balanced_acc"],
                   help="validation score that picks best.pt: accuracy (paper) or balanced "
                   "accuracy (mean per-class recall; recommended)")
    p.add_argument("--ema", type=float,
                   help="exponential moving average of the weights, decay per step (e.g. 0.99; "
                   "0 = off): validation, best.pt and the report use the averaged weights")
    p.add_argument("--half-checkpoint", action="store_true",
                   help="store best.pt weights in float16 (half the size)")
    p.add_argument("--save-every", type=int, metavar="N",
                   help="write last.pt every N epochs (default 1; always after the last); "
                   "--resume continues from the last one written")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from last.pt")
    p.add_argument("--init", metavar="CHECKPOINT",
                   help="fine-tune this model: its architecture, classes and input size are kept "
                   "(other classes in the data are refused), the rate defaults to a tenth of its "
                   "own, and it is compared with the new model on the held-out test images")
    p.add_argument("--refit-stain", action="store_true",
                   help="with --init: refit the model's stain normalisation on the new training "
                   "tiles (default: keep it as it was fitted, so the old weights see the inputs "
                   "they were trained on)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_data_options(p)
    p.set_defaults(func=run)


def _add_augment_options(p: argparse.ArgumentParser) -> None:
    """``crc train``'s augmentation options (see :class:`crc_core.data.Augment`)."""
    p.add_argument("--augment", action="store_true",
                   help="the recommended augmentation (the paper preset has none)")
    p.add_argument("--no-augment", action="store_true", help="no flips, rotations or jitter")
    p.add_argument("--color-jitter", type=float, help="brightness/contrast/saturation ±")
    p.add_argument("--hed-jitter", type=float, help="HED stain jitter ±")
    p.add_argument("--zoom-range", type=_zoom_range, metavar="LOW,HIGH",
                   help="random rescaling about the training scale, drawn log-uniformly per "
                   "image (recommended preset: 0.6,2; 1,1 = none)")
    p.add_argument("--augment-resolution", type=int, choices=(1, 2, 3, 4), metavar="N",
                   help="augment the training images at N times the input size (when the files "
                   "have the pixels), then area-average them to it: a zoom magnifies real detail "
                   "(recommended preset: 2; 1: at the input size)")


def _augment(args: argparse.Namespace) -> dict[str, Any] | None:
    """The augmentation options given on the command line (``None``: the preset's)."""
    from crc_core.data import Augment
    from crc_core.training import NO_AUGMENT, PRESETS

    if args.no_augment and args.augment:
        raise ConfigError("--augment and --no-augment exclude each other")
    if args.no_augment:
        return dict(NO_AUGMENT)
    if args.augment:
        aug = Augment.recommended().to_json()
    elif (args.color_jitter is not None or args.hed_jitter is not None
          or args.zoom_range is not None or args.augment_resolution is not None):
        aug = dict(PRESETS[args.preset].get("augment") or Augment().to_json())
    else:
        return None
    if args.color_jitter is not None:
        aug["color"] = args.color_jitter
    if args.hed_jitter is not None:
        aug["hed"] = args.hed_jitter
    if args.zoom_range is not None:
        aug["scale_range"] = list(args.zoom_range)
    if args.augment_resolution is not None:
        aug["resolution"] = args.augment_resolution
    return aug


def _zoom_range(text: str) -> tuple[float, float]:
    """``--zoom-range LOW,HIGH``: two zoom factors, 0 < LOW <= 1 <= HIGH."""
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give two factors, e.g. 0.75,1.5") from None
    if not 0 < lo <= 1 <= hi <= 4:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give 0 < LOW <= 1 <= HIGH <= 4 (zoom factors about the training scale)")
    return lo, hi


def _archs(text: str) -> list[str]:
    """``--arch``: one architecture or several, comma-separated."""
    from crc_core.models import MODELS

    names = [a.strip() for a in text.split(",") if a.strip()]
    bad = [a for a in names if a not in MODELS]
    if bad or not names:
        raise argparse.ArgumentTypeError(
            f"{', '.join(bad) or repr(text)}: choose from {', '.join(MODELS)} (comma-separated "
            f"for several)")
    return list(dict.fromkeys(names))


def _config(args: argparse.Namespace, arch: str, say: Any) -> Any:
    """The :class:`~crc_core.training.TrainConfig` of one architecture from the options."""
    from crc_core.training import make_config

    milestones = None
    if args.milestones is not None:
        try:
            milestones = [int(m) for m in args.milestones.split(",") if m.strip()]
        except ValueError:
            raise ConfigError(
                f"--milestones {args.milestones!r}: give epochs like 80,120") from None
    weights = None if args.weights in (None, "none") else args.weights
    cfg = make_config(
        arch, args.preset, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        milestones=milestones, optimizer=args.optimizer, label_smoothing=args.label_smoothing,
        schedule=args.schedule, weight_decay=args.weight_decay, mpp=args.mpp,
        image_size=args.image_size, device=args.device, weights=weights, seed=args.seed,
        split_seed=args.split_seed,
        val_fraction=args.val_fraction, test_fraction=args.test_fraction,
        workers=args.workers, compile=args.compile,
        cache=args.cache, half_checkpoint=args.half_checkpoint, augment=_augment(args),
        balance=args.balance, best_metric=args.best_metric, save_every=args.save_every,
        stain_norm=args.stain_norm, stain_tiles=args.stain_tiles,
        ema=args.ema,
        data={k: v for k, v in data_options(args).items() if v is not None})
    if args.init:
        from crc_core.finetune import finetune_config

        cfg = finetune_config(cfg, args.init, lr=args.lr, refit_stain=args.refit_stain)
        say(cfg.notes[-1])
    return cfg


def _architectures(args: argparse.Namespace, world: int) -> list[str]:
    """The architectures to train: ``--arch``, else the resumed or fine-tuned checkpoint's."""
    from pathlib import Path

    from crc_core.models import load_checkpoint

    archs = list(args.arch or [])
    if args.resume and "{time}" in str(args.out):
        raise ConfigError(f"--resume --out {args.out}: {{time}} names a new folder at every start; "
                          f"give the run folder to resume itself")
    if args.resume and not archs:
        archs = [load_checkpoint(Path(args.out) / "last.pt")["arch"]]
    if args.refit_stain and not args.init:
        raise ConfigError("--refit-stain refits the stain normalisation of the --init model: "
                          "give --init CHECKPOINT, or leave it out")
    if args.init:  # fine-tuning (crc_core.finetune)
        from crc_core.finetune import check_init_args

        if len(archs) > 1:
            raise ConfigError("--init fine-tunes one model: give one architecture (or none: "
                              "the checkpoint's)")
        args.arch = archs[0] if archs else None
        archs = [check_init_args(args)]
    if world > 1 and (len(archs) > 1 or args.evaluate):
        raise ConfigError("under torchrun, train one architecture without --evaluate (evaluate "
                          "the run afterwards with crc evaluate)")
    if args.tta and not args.evaluate:
        raise ConfigError("--tta applies to --evaluate: give both or neither")
    return archs or ["resnet50"]


def _brief(res: Any) -> dict[str, Any]:
    summary = res.summary
    last = summary["history"][-1] if summary["history"] else {}
    brief = {k: summary[k] for k in ("out", "arch", "epochs", "best_epoch", "best_val_acc",
                                     "best_metric", "best_score", "notes",
                                     "train_images", "val_images", "test_images",
                                     "skipped", "device")}
    brief["last_epoch"] = last
    if res.metrics is not None:
        m = res.metrics
        brief["evaluation"] = {"out": m.get("out"), "subset": m.get("subset"), "n": m.get("n"),
                               "accuracy": m.get("accuracy"),
                               "balanced_accuracy": m.get("balanced_accuracy")}
    return brief


def run(args: argparse.Namespace) -> int:
    import torch

    from crc_core.cli import warn
    from crc_core.cli_progress import drive_with_bar
    from crc_core.train_eval import EvalOptions, RunPlan, run_folders, train_and_evaluate

    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    if os.environ.get("OMP_NUM_THREADS") is None and world > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 2) // world))
    archs = _architectures(args, world)
    say = warn if rank == 0 else (lambda msg: None)
    plans = [RunPlan(a, out, _config(args, a, say)) for a, out in run_folders(args.out, archs)]
    options = EvalOptions(device=args.device, batch_size=plans[0].config.batch_size,
                          tta=args.tta)
    job = train_and_evaluate(args.data, plans, options, evaluate=args.evaluate,
                             compare=rank == 0, resume=args.resume)
    desc = f"train {','.join(archs)}" + (" and evaluate" if args.evaluate else "")
    results = drive_with_bar(job, desc=desc, quiet=args.quiet or rank != 0)
    if rank == 0:
        from crc_core.finetune import comparison_text

        for res in results:
            if res.comparison is not None:
                sys.stderr.write(comparison_text(res.comparison) + "\n")
        briefs = [_brief(r) for r in results]
        out = briefs[0] if len(briefs) == 1 else briefs
        sys.stdout.write(json.dumps(out, indent=2) + "\n")
    return 0
