"""Training on a small real EBHI subset: learning, resume, DDP on CPU, OOM halving, bad input."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from ebhi_subset import write_subset

from crc_core.errors import CheckpointError, ConfigError, DatasetError
from crc_core.jobs import EpochEnded, JobWarning, Progress, TrainingStep, run_job
from crc_core.models import load_checkpoint
from crc_core.training import (
    PRESETS,
    DistInfo,
    balanced_order,
    class_weights,
    compute_loss,
    fit,
    lr_at,
    make_config,
)

torch.set_num_threads(2)
ROOT = Path(__file__).resolve().parents[2]


def _into(messages: list[str]):
    """``run_job``'s ``on_progress`` that collects the job's warnings into ``messages``."""
    return lambda ev: messages.append(ev.message) if isinstance(ev, JobWarning) else None


DATA_OPTS = {"label_column": "ebhi_class", "group_column": "case_id"}


def tiny_config(**kw):
    base = dict(epochs=1, batch_size=8, image_size=64, device="cpu", data=dict(DATA_OPTS),
                val_fraction=0.25)
    base.update(kw)
    return make_config("resnet50", "quick", **base)


@pytest.fixture(scope="module")
def subset(ebhi_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_subset(ebhi_dir, tmp_path_factory.mktemp("sub") / "sub.csv",
                        ["Normal", "Adenocarcinoma"], 12)


@pytest.fixture(scope="module")
def run2(subset: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """One uninterrupted two-epoch run shared by the tests that only read it."""
    out = tmp_path_factory.mktemp("run2") / "run"
    return out, run_job(fit(subset, out, tiny_config(epochs=2)))


def test_paper_preset_is_the_papers_schedule() -> None:
    cfg = make_config("resnet50", "paper")
    assert (cfg.batch_size, cfg.epochs, cfg.lr, cfg.optimizer) == (32, 200, 1e-3, "adam")
    # 1e-3 for epochs 1-80, then 1e-4, 1e-5, 1e-6, 1e-7 after 80, 120, 160, 180.
    got = [lr_at(cfg, e) for e in (0, 79, 80, 119, 120, 160, 180, 199)]
    want = [1e-3, 1e-3, 1e-4, 1e-4, 1e-5, 1e-6, 1e-7, 1e-7]
    assert got == pytest.approx(want, rel=1e-9)
    inc = make_config("inception_v3", "paper")
    assert inc.optimizer == "rmsprop" and inc.label_smoothing > 0
    assert PRESETS["quick"]["epochs"] < 20


def test_every_preset_value_can_be_overridden() -> None:
    cfg = make_config("densenet121", "paper", epochs=3, batch_size=4, lr=0.01, optimizer="sgd",
                      milestones=[2])
    assert (cfg.epochs, cfg.batch_size, cfg.lr, cfg.optimizer, cfg.milestones) == (
        3, 4, 0.01, "sgd", [2])


def test_learns_on_a_small_real_subset(subset: Path, tmp_path: Path) -> None:
    cfg = tiny_config(epochs=6, val_fraction=0.0, augment={"flip": True, "rot90": True,
                                                             "color": 0.0, "hed": 0.0})
    summary = run_job(fit(subset, tmp_path / "run", cfg))
    hist = summary["history"]
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    # Two balanced classes: chance is 0.5.
    assert max(r["train_acc"] for r in hist[-2:]) > 0.7


def test_history_csv_has_one_row_per_epoch(run2) -> None:
    with open(run2[0] / "history.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert set(rows[0]) == {"epoch", "train_loss", "train_acc", "val_loss", "val_acc",
                            "val_bal_acc", "lr", "seconds", "images_per_s"}
    assert float(rows[0]["images_per_s"]) > 0


def test_checkpoint_holds_what_resume_and_prediction_need(run2) -> None:
    ck = load_checkpoint(run2[0] / "last.pt", expect_arch="resnet50",
                         expect_classes=["Adenocarcinoma", "Normal"])
    assert ck["input_size"] == 64 and ck["epoch"] == 2
    assert ck["optimizer"]["state"] and ck["scheduler"]["last_epoch"] == 2
    assert ck["config"]["data"]["group_column"] == "case_id"
    assert (run2[0] / "best.pt").is_file()


def test_resume_equals_an_uninterrupted_run(subset: Path, tmp_path: Path, run2) -> None:
    straight = run2[1]
    run_job(fit(subset, tmp_path / "b", tiny_config(epochs=1)))
    resumed = run_job(fit(subset, tmp_path / "b", tiny_config(epochs=2), resume=True))
    assert [r["epoch"] for r in resumed["history"]] == [1, 2]
    a = load_checkpoint(run2[0] / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "b" / "last.pt")["model"]
    for k in a:
        if a[k].is_floating_point():
            torch.testing.assert_close(a[k], b[k], rtol=1e-3, atol=1e-4, msg=k)
    assert resumed["history"][-1]["train_loss"] == pytest.approx(
        straight["history"][-1]["train_loss"], rel=1e-3)


def test_simulated_cuda_oom_halves_the_batch_and_finishes(subset: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from crc_core.training import loop

    real = loop._train_micro
    sizes: list[int] = []

    def fake(model, x, y, cfg, autocast, scale, weight=None):
        sizes.append(x.shape[0])
        if x.shape[0] > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(model, x, y, cfg, autocast, scale, weight)

    monkeypatch.setattr(loop, "_train_micro", fake)
    messages: list[str] = []
    summary = run_job(fit(subset, tmp_path / "run", tiny_config()), _into(messages))
    assert summary["micro_batch"] == 2
    assert sum("batch halved to 4" in m for m in messages) == 1
    assert sum("batch halved to 2" in m for m in messages) == 1
    assert (tmp_path / "run" / "last.pt").is_file()


def test_inception_loss_adds_the_auxiliary_head() -> None:
    from torchvision.models.inception import InceptionOutputs

    cfg = make_config("inception_v3", "paper", label_smoothing=0.0)
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    aux = torch.tensor([[0.0, 3.0], [1.0, 0.0]])
    y = torch.tensor([0, 1])
    ce = torch.nn.functional.cross_entropy
    got = compute_loss(InceptionOutputs(logits, aux), y, cfg)
    assert float(got) == pytest.approx(float(ce(logits, y) + 0.4 * ce(aux, y)))
    assert float(compute_loss(logits, y, cfg)) == pytest.approx(float(ce(logits, y)))


def test_inception_trains_below_299_px_without_the_auxiliary_head(subset: Path,
                                                                  tmp_path: Path) -> None:
    cfg = make_config("inception_v3", "quick", epochs=1, batch_size=8, image_size=80,
                      device="cpu", data=dict(DATA_OPTS), val_fraction=0.25)
    messages: list[str] = []
    run_job(fit(subset, tmp_path / "run", cfg), _into(messages))
    assert any("auxiliary head" in m for m in messages)
    ck = load_checkpoint(tmp_path / "run" / "last.pt", expect_arch="inception_v3")
    assert not any(k.startswith("AuxLogits.") for k in ck["model"])


def test_ddp_on_the_cpu_with_two_gloo_processes(subset: Path, tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", "29517", "-m", "crc_core.cli", "train", "--data", str(subset),
           "--label-column", "ebhi_class", "--group-column", "case_id", "--arch", "resnet50",
           "--epochs", "1", "--batch-size", "8", "--image-size", "64", "--device", "cpu",
           "--out", str(out), "--quiet"]
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2
    load_checkpoint(out / "last.pt", expect_arch="resnet50")


# ----------------------------------------------------------------------------- class balance
def test_class_weights_are_inverse_frequency_and_weigh_the_loss() -> None:
    w = class_weights([0, 0, 0, 1], 3)
    # n / (K_present * n_c): 4 / (2 * 3) and 4 / (2 * 1); an absent class weighs nothing.
    assert w.tolist() == pytest.approx([2 / 3, 2.0, 0.0])
    assert class_weights([0, 1, 2, 0, 1, 2], 3).tolist() == pytest.approx([1.0, 1.0, 1.0])
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.5, 0.5, 0.0], [0.0, 3.0, 0.0]])
    y = torch.tensor([0, 0, 0, 1])
    per = -torch.log_softmax(logits, 1)[torch.arange(4), y]
    by_hand = float((w[y] * per).sum() / w[y].sum())
    cfg = make_config("resnet50", "quick")
    assert float(compute_loss(logits, y, cfg, w)) == pytest.approx(by_hand, rel=1e-6)
    assert float(compute_loss(logits, y, cfg)) == pytest.approx(float(per.mean()), rel=1e-6)


def test_balanced_sampling_draws_each_class_equally_and_shards_by_rank() -> None:
    labels = [0] * 900 + [1] * 100
    one = balanced_order(labels, DistInfo(0, 1, 0), seed=3, epoch=0)
    assert len(one) == 1000
    share = sum(labels[i] for i in one) / len(one)
    assert 0.43 < share < 0.57          # 0.1 without balancing; binomial sd 0.016
    assert one == balanced_order(labels, DistInfo(0, 1, 0), seed=3, epoch=0)
    assert one != balanced_order(labels, DistInfo(0, 1, 0), seed=3, epoch=1)
    r0 = balanced_order(labels, DistInfo(0, 2, 0), seed=3, epoch=0)
    r1 = balanced_order(labels, DistInfo(1, 2, 1), seed=3, epoch=0)
    assert len(r0) == len(r1) == 500
    assert sorted(r0 + r1) == sorted(one)       # the same global draw, split between ranks


@pytest.mark.parametrize("balance", ["loss", "sampler"])
def test_balanced_training_records_balanced_accuracy(subset: Path, tmp_path: Path,
                                                     balance: str) -> None:
    messages: list[str] = []
    cfg = tiny_config(epochs=2, balance=balance, best_metric="balanced_acc")
    summary = run_job(fit(subset, tmp_path / "run", cfg), _into(messages))
    assert any(f"class balance by {balance}" in m for m in messages)
    hist = summary["history"]
    assert all(0.0 <= r["val_bal_acc"] <= 1.0 for r in hist)
    best = max(hist, key=lambda r: (r["val_bal_acc"], -r["val_loss"]))
    assert summary["best_metric"] == "balanced_acc"
    assert summary["best_epoch"] == best["epoch"]
    assert summary["best_score"] == pytest.approx(best["val_bal_acc"])
    ck = load_checkpoint(tmp_path / "run" / "best.pt")
    assert ck["config"]["balance"] == balance and ck["epoch"] == best["epoch"]


def test_save_every_writes_last_pt_every_n_epochs_and_after_the_last(subset: Path,
                                                                   tmp_path: Path) -> None:
    out = tmp_path / "run"
    seen: dict[int, int | None] = {}
    steps: list[tuple[int, int]] = []  # (epoch of each batch event, epoch ended so far)
    job = fit(subset, out, tiny_config(epochs=3, save_every=2))
    try:
        while True:
            ev = next(job)
            if isinstance(ev, Progress) and isinstance(ev.payload, TrainingStep):
                assert ev.payload.epochs == 3
                steps.append((ev.payload.epoch, len(seen)))
            if isinstance(ev, Progress) and isinstance(ev.payload, EpochEnded):
                last = out / "last.pt"
                seen[ev.payload.row["epoch"]] = (load_checkpoint(last)["epoch"] if last.is_file()
                                             else None)
    except StopIteration:
        pass
    assert seen == {1: None, 2: 2, 3: 3}
    # every batch names its epoch: epoch k's batches come after k - 1 epochs ended
    assert {e for e, _ in steps} == {1, 2, 3} and all(done == e - 1 for e, done in steps)
    with open(out / "history.csv") as fh:
        assert len(list(csv.DictReader(fh))) == 3
    with pytest.raises(ConfigError, match="--save-every"):
        make_config("resnet50", "quick", save_every=0)


def test_test_groups_are_kept_out_and_evaluate_reports_on_them(subset: Path,
                                                              tmp_path: Path) -> None:
    from crc_core.data import load_table, split_by_group
    from crc_core.evaluation import evaluate

    summary = run_job(fit(subset, tmp_path / "run", tiny_config(test_fraction=0.25)))
    t = load_table(subset, **DATA_OPTS)
    sp = split_by_group(t, 0.25, 0, test_fraction=0.25)
    assert summary["test_images"] == len(sp.test) > 0
    assert summary["train_images"] == len(sp.train) and summary["val_images"] == len(sp.val)
    res = run_job(evaluate(tmp_path / "run" / "best.pt", subset, tmp_path / "eval"))
    assert res["subset"] == "test" and res["n"] == len(sp.test)
    with open(tmp_path / "eval" / "predictions.csv") as fh:
        names = {Path(r["image"]).name for r in csv.DictReader(fh)}
    assert names == {t.samples[i].path.name for i in sp.test}


def test_unknown_balance_mode_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="--balance"):
        make_config("resnet50", "quick", balance="oversample")
    with pytest.raises(ConfigError, match="--best-metric"):
        make_config("resnet50", "quick", best_metric="f1")


# ----------------------------------------------------------------------------- bad input
def test_existing_run_is_not_overwritten_without_resume(subset: Path, run2) -> None:
    before = (run2[0] / "last.pt").read_bytes()
    with pytest.raises(ConfigError, match="--resume"):
        run_job(fit(subset, run2[0], tiny_config()))
    assert (run2[0] / "last.pt").read_bytes() == before


def test_resume_without_a_checkpoint_is_refused(subset: Path, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="nothing to resume"):
        run_job(fit(subset, tmp_path / "none", tiny_config(), resume=True))


def test_resume_with_another_architecture_is_refused(subset: Path, run2) -> None:
    cfg = make_config("densenet121", "quick", epochs=3, device="cpu", data=dict(DATA_OPTS))
    with pytest.raises(CheckpointError, match="resnet50"):
        run_job(fit(subset, run2[0], cfg, resume=True))


def test_single_class_data_is_refused(ebhi_dir: Path, tmp_path: Path) -> None:
    csv_path = write_subset(ebhi_dir, tmp_path / "one.csv", ["Normal"], 6)
    with pytest.raises(DatasetError, match="one class"):
        run_job(fit(csv_path, tmp_path / "run", tiny_config()))
    assert not (tmp_path / "run").exists()


def test_unknown_architecture_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="resnet50, densenet121, inception_v3"):
        make_config("vgg16", "quick")


def test_too_small_image_size_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="75"):
        make_config("inception_v3", "quick", image_size=64)


def test_ema_weights_are_validated_released_and_resumed(ebhi_dir, tmp_path):
    """--ema: best.pt holds the moving average (not the raw weights) and resume continues it."""
    from ebhi_subset import write_subset

    from crc_core.models import load_checkpoint

    data = tmp_path / "sub.csv"
    write_subset(ebhi_dir, data, ["Normal", "Adenocarcinoma"], 8, per_case=2)
    cfg = tiny_config(epochs=1, ema=0.5, image_size=32)
    run_job(fit(data, tmp_path / "run", cfg))
    last = load_checkpoint(tmp_path / "run" / "last.pt")
    best = load_checkpoint(tmp_path / "run" / "best.pt")
    assert last["ema"] is not None and int(last["ema"]["n_averaged"]) > 0
    key = "fc.weight"
    assert torch.equal(best["model"][key], last["ema"]["module." + key])
    assert not torch.equal(best["model"][key], last["model"][key])
    cfg2 = tiny_config(epochs=2, ema=0.5, image_size=32)
    run_job(fit(data, tmp_path / "run", cfg2, resume=True))
    again = load_checkpoint(tmp_path / "run" / "last.pt")
    assert int(again["ema"]["n_averaged"]) > int(last["ema"]["n_averaged"])


def test_augmentation_resolution_2_runs_at_twice_the_input_size(
        subset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from crc_core.data import Augment
    from crc_core.training import loop

    seen: list[tuple[int, ...]] = []
    real = loop._train_micro

    def spy(model, x, *args, **kw):
        seen.append(tuple(x.shape[-2:]))
        return real(model, x, *args, **kw)

    monkeypatch.setattr(loop, "_train_micro", spy)
    aug = {**Augment.recommended().to_json(), "resolution": 2}   # --augment-resolution 2
    run_job(fit(subset, tmp_path / "a", tiny_config(augment=aug)))
    # The 224 px tiles are decoded at 128 px, augmented, and reach the network at 64 px.
    assert seen and set(seen) == {(64, 64)}
    notes = json.loads((tmp_path / "a" / "config.json").read_text())["notes"]
    assert any("decoded at 128 px" in n for n in notes), notes
    # At 160 px the tiles have fewer than 2x its pixels: augmented at the input size, and said.
    seen.clear()
    run_job(fit(subset, tmp_path / "b", tiny_config(augment=aug, image_size=160)))
    assert set(seen) == {(160, 160)}
    notes = json.loads((tmp_path / "b" / "config.json").read_text())["notes"]
    assert any("augmentation at the input size (160 px)" in n for n in notes), notes


def test_an_unaugmented_training_image_is_what_evaluation_sees(ebhi_dir: Path) -> None:
    import numpy as np

    from crc_core.data import decode_image
    from crc_core.training.loop import _prep

    path = sorted(ebhi_dir.glob("normal/*.jpg"))[0]
    big = torch.from_numpy(decode_image(path, 224))[None]           # decoded at 2x the input
    train = _prep(big, None, None, [0.0] * 3, [1.0] * 3, 112)[0]
    evaluated = torch.from_numpy(decode_image(path, 112)).float().div(255)  # evaluation's path
    assert train.shape == evaluated.shape == (3, 112, 112)
    # Pillow's box filter rounds to uint8 (half a grey level up on average); the float area
    # average does not: otherwise the two are the same average of the same file pixels.
    assert float((train - evaluated).abs().max()) <= 1 / 255 + 1e-6
    assert np.isclose(float(train.mean()), float(evaluated.mean()), atol=0.75 / 255)
