"""Tests of crc_core.inference and crc_core.regions: geo-reference, tissue, cancel, schemes, files."""

from __future__ import annotations

import csv
import io
import json
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from shapely.geometry import box
from torch import nn

from crc_core.classes import ClassScheme
from crc_core.errors import ClassSchemeError, CrcError
from crc_core.inference import (
    LoadedModel,
    PredictionError,
    load_prediction,
    map_scheme,
    predict,
)
from crc_core.jobs import BatchPredicted, JobWarning, PredictionStarted, Progress, run_job
from crc_core.slide import open_slide

torch.set_num_threads(2)
TILE = 224
SCHEME = ClassScheme.from_names(["Normal", "Adenocarcinoma"])


# ------------------------------------------------------------------------------------- fixtures
class MeanColourNet(nn.Module):
    """Deterministic stand-in classifier: nearest class mean colour (GAP + linear, so CAM works).

    ``logit_k = 2 m_k . x_mean - |m_k|^2`` ranks classes like ``-|x_mean - m_k|^2``.
    """

    def __init__(self, means: np.ndarray) -> None:
        super().__init__()
        self.features = nn.Identity()
        self.classifier = nn.Linear(3, len(means))
        m = torch.tensor(means, dtype=torch.float32)
        with torch.no_grad():
            self.classifier.weight.copy_(2 * m)
            self.classifier.bias.copy_(-(m * m).sum(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).mean(dim=(2, 3)))


def _read(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def _pick_tiles(ebhi: Path) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
    """Six Normal and six Adenocarcinoma EBHI tiles far apart in mean colour, and the class means."""
    rows = list(csv.DictReader(open(ebhi / "labels.csv", encoding="utf-8")))
    by = {
        c: [ebhi / r["image"] for r in rows if r["ebhi_class"] == c][:40]
        for c in ("Normal", "Adenocarcinoma")
    }
    tiles = {c: [_read(p) for p in ps] for c, ps in by.items()}
    means = {c: np.array([t.reshape(-1, 3).mean(0) / 255 for t in ts]) for c, ts in tiles.items()}
    d = means["Normal"].mean(0) - means["Adenocarcinoma"].mean(0)
    a = np.argsort(means["Normal"] @ d)[::-1][:6]
    b = np.argsort(means["Adenocarcinoma"] @ d)[:6]
    na, nb = [tiles["Normal"][i] for i in a], [tiles["Adenocarcinoma"][i] for i in b]
    class_means = np.stack([means["Normal"][a].mean(0), means["Adenocarcinoma"][b].mean(0)])
    return na, nb, class_means


@pytest.fixture(scope="module")
def halves(ebhi_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A PNG slide: 3 x 4 EBHI tiles, Normal in columns 0-1, Adenocarcinoma in 2-3, white column 4."""
    na, nb, means = _pick_tiles(ebhi_dir)
    mosaic = np.full((3 * TILE, 5 * TILE, 3), 255, dtype=np.uint8)
    for r in range(3):
        for c in range(4):
            t = na[r * 2 + c] if c < 2 else nb[r * 2 + c - 2]
            mosaic[r * TILE : (r + 1) * TILE, c * TILE : (c + 1) * TILE] = t
    path = tmp_path_factory.mktemp("halves") / "halves.png"
    Image.fromarray(mosaic).save(path)
    return {"path": path, "mosaic": mosaic, "means": means}


def _model(
    means: np.ndarray, patch: int = TILE, level: int | None = 0, mpp: float | None = None
) -> LoadedModel:
    return LoadedModel(
        MeanColourNet(means).eval(),
        None,
        SCHEME.copy(),
        input_size=TILE,
        patch_size=patch,
        level=level,
        mpp=mpp,
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
        identity={"name": "mean-colour"},
    )


def _run(job):  # drive a job
    return run_job(job)


def _said(job) -> tuple[object, list[str]]:
    """Run ``job``: its result and the messages of its JobWarning events."""
    events: list = []
    result = run_job(job, events.append)
    return result, [e.message for e in events if isinstance(e, JobWarning)]


# ------------------------------------------------------------------------------------ geo-reference
def test_class_map_falls_in_the_tiles_of_each_half(halves: dict) -> None:
    pred = _run(predict(halves["path"], _model(halves["means"]), device="cpu", batch_size=5))
    g = pred.grid
    assert (g.origin, g.stride, g.window, g.rows, g.cols) == ((0, 0), TILE, TILE, 3, 5)
    cmap = pred.class_map()
    expected = np.array([[0, 0, 1, 1, -1]] * 3)
    assert cmap.tolist() == expected.tolist()


def test_pyramid_level_windows_are_georeferenced_in_level0_pixels(
    halves: dict, tmp_path: Path
) -> None:
    from crc_testkit.synthetic import write_pyramid_tiff

    big = np.asarray(
        Image.fromarray(halves["mosaic"]).resize(
            (halves["mosaic"].shape[1] * 2, halves["mosaic"].shape[0] * 2),
            Image.Resampling.BILINEAR,
        )
    )

    def source(x: int, y: int, w: int, h: int) -> np.ndarray:
        out = np.full((h, w, 3), 255, dtype=np.uint8)
        part = big[y : y + h, x : x + w]
        out[: part.shape[0], : part.shape[1]] = part
        return out

    path = write_pyramid_tiff(
        tmp_path / "halves.tif", big.shape[1], big.shape[0], source, mpp=0.25, levels=3
    )
    # Trained at 0.5 µm/px: windows are 448 level-0 px, read at level 1.
    pred = _run(predict(path, _model(halves["means"], mpp=0.5, level=None), device="cpu"))
    g = pred.grid
    assert (g.stride, g.window, g.level, g.read_size, g.rows, g.cols) == (448, 448, 1, 224, 3, 5)
    assert pred.resolution["mode"] == "mpp"
    assert pred.class_map().tolist() == [[0, 0, 1, 1, -1]] * 3


def test_half_stride_grid_has_exact_shape_and_cell_positions(halves: dict) -> None:
    pred = _run(
        predict(
            halves["path"], _model(halves["means"]), stride=TILE // 2, device="cpu", tissue=False
        )
    )
    W, H = 5 * TILE, 3 * TILE
    g = pred.grid
    assert g.shape == ((H - TILE) // (TILE // 2) + 1, (W - TILE) // (TILE // 2) + 1)
    assert g.cell_rect(2, 3) == (3 * 112, 2 * 112, TILE, TILE)
    # Windows wholly inside a half take its class.
    cmap = pred.class_map()
    assert (cmap[:, [0, 2]] == 0).all() and (cmap[:, [4, 6]] == 1).all()
    assert pred.probabilities_at(50, 50)["Normal"] > 0.5  # type: ignore[index]


def test_patch_size_override_sets_the_window(halves: dict) -> None:
    lm = _model(halves["means"])
    lm.patch_known = False
    _, said = _said(predict(halves["path"], lm, device="cpu", tissue=False))
    assert any("does not record its patch size" in m for m in said)
    pred = _run(predict(halves["path"], lm, device="cpu", tissue=False, patch_size=TILE // 2))
    g = pred.grid
    assert (g.window, g.stride, g.rows, g.cols) == (TILE // 2, TILE // 2, 6, 10)
    assert not any("does not record" in w for w in pred.warnings)


def test_background_windows_are_not_predicted(halves: dict) -> None:
    pred = _run(predict(halves["path"], _model(halves["means"]), device="cpu"))
    assert not pred.selected[:, 4].any()
    assert np.isnan(pred.probs[:, :, 4]).all()
    assert pred.selected[:, :4].all() and not np.isnan(pred.probs[:, :, :4]).any()


def test_regions_restrict_the_grid_to_cells_centred_inside(halves: dict) -> None:
    region = box(TILE + 10, 0, 3 * TILE - 10, 2 * TILE)  # centres of columns 1, 2 in rows 0, 1
    pred = _run(predict(halves["path"], _model(halves["means"]), regions=[region], device="cpu"))
    g = pred.grid
    assert (g.origin, g.rows, g.cols) == ((TILE, 0), 2, 2)
    assert pred.class_map().tolist() == [[0, 1], [0, 1]]


def test_slide_without_mpp_uses_the_level_and_warns(halves: dict, recwarn) -> None:
    pred, said = _said(
        predict(halves["path"], _model(halves["means"], mpp=0.5, level=0), device="cpu"))
    assert pred.resolution["mode"] == "level"
    assert any("no mpp" in w for w in pred.warnings)
    # a JobWarning event, once, and no Python warning (which a GUI would print on the terminal)
    assert sum("no mpp" in m for m in said) == 1
    assert [m for m in said if m not in pred.warnings] == []
    assert not [w for w in recwarn if "crc_core" in str(w.filename)]


# ------------------------------------------------------------------------------------ progress/cancel
def test_progress_payload_carries_each_batch(halves: dict) -> None:
    events = []
    pred = _run_with(halves, events)
    payloads = [e.payload for e in events if isinstance(e, Progress) and e.payload is not None]
    assert isinstance(payloads[0], PredictionStarted)       # typed events, the start first
    assert payloads[0].selected.sum() == 12 and payloads[0].classes.names == pred.scheme.names
    batches = payloads[1:]
    assert batches and all(isinstance(b, BatchPredicted) for b in batches)
    assert sum(len(b.cells) for b in batches) == int(pred.predicted.sum()) == 12
    for b in batches:
        r, c = b.cells[0]
        assert np.allclose(pred.probs[:, r, c], b.probs[0])
        assert b.cam is None and b.grid == pred.grid


def _run_with(halves: dict, events: list):
    return run_job(
        predict(halves["path"], _model(halves["means"]), batch_size=3, device="cpu"),
        events.append,
    )


def test_cancel_mid_slide_leaves_no_file_and_no_reader_thread(halves: dict, tmp_path: Path) -> None:
    out = tmp_path / "prediction.npz"
    job = predict(halves["path"], _model(halves["means"]), batch_size=2, device="cpu", out=out)
    seen = 0
    for ev in job:
        if isinstance(ev, Progress) and isinstance(ev.payload, BatchPredicted):
            seen += 1
            if seen == 2:
                break
    job.close()
    assert seen == 2
    assert list(tmp_path.iterdir()) == []
    assert not [t for t in threading.enumerate() if t.name.startswith("crc-predict-read")]


# ------------------------------------------------------------------------------------------- OOM
class _OomAbove(nn.Module):
    def __init__(self, inner: nn.Module, limit: int) -> None:
        super().__init__()
        self.inner, self.limit = inner, limit
        self.features, self.classifier = inner.features, inner.classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return self.inner(x)


def test_out_of_memory_halves_the_batch_and_finishes(halves: dict) -> None:
    lm = _model(halves["means"])
    lm.model = _OomAbove(lm.model, limit=2)
    # Out-of-memory is PyTorch's (CUDA) condition: the torch backend, simulated on the CPU.
    pred = _run(predict(halves["path"], lm, batch_size=8, device="cpu", backend="torch"))
    assert pred.class_map()[:, :4].tolist() == [[0, 0, 1, 1]] * 3
    assert any("batch size 8" in w and "batch size 4" in w for w in pred.warnings)
    assert any("batch size 2" in w for w in pred.warnings)


# --------------------------------------------------------------------------------------- schemes
def test_checkpoint_class_missing_from_project_is_refused(halves: dict) -> None:
    project = ClassScheme.from_names(["Normal", "Adenoma"])
    with pytest.raises(ClassSchemeError, match="Adenocarcinoma.*not in the project"):
        _run(predict(halves["path"], _model(halves["means"]), device="cpu", scheme=project))


def test_checkpoint_classes_are_mapped_onto_the_project_scheme(halves: dict) -> None:
    project = ClassScheme.three_class()  # Normal, Adenoma, Adenocarcinoma: other order and colours
    pred = _run(predict(halves["path"], _model(halves["means"]), device="cpu", scheme=project))
    assert pred.scheme.ids == ["normal", "adenocarcinoma"]
    assert pred.scheme.colors == [project.get("normal").color, project.get("adenocarcinoma").color]
    assert any("mapped" in w and "never predicted: Adenoma" in w for w in pred.warnings)


def test_map_scheme_identical_schemes_say_nothing() -> None:
    s, msg = map_scheme(ClassScheme.paper(), ClassScheme.paper())
    assert msg is None and s.ids == ClassScheme.paper().ids


# ----------------------------------------------------------------------------------------- files
def test_prediction_file_round_trips_without_pickles(halves: dict, tmp_path: Path) -> None:
    out = tmp_path / "p" / "prediction.npz"
    pred = _run(predict(halves["path"], _model(halves["means"]), device="cpu", cam=True, out=out))
    back = load_prediction(out)
    assert back.grid == pred.grid
    assert np.array_equal(back.probs, pred.probs, equal_nan=True)
    assert np.array_equal(back.cam, pred.cam, equal_nan=True)
    assert back.scheme.to_json() == pred.scheme.to_json()
    assert back.slide["fingerprint"] == open_slide(halves["path"]).fingerprint()
    with np.load(out, allow_pickle=False) as z:
        assert all(z[k].dtype != object for k in z.files)


def test_loading_a_foreign_npz_is_a_clear_error(tmp_path: Path) -> None:
    p = tmp_path / "x.npz"
    np.savez(p, a=np.zeros(3))
    with pytest.raises(PredictionError, match="not a prediction file"):
        load_prediction(p)


# ---------------------------------------------------------------------------------------- regions
def test_region_results_report_shares_majority_and_agreement(halves: dict) -> None:
    from crc_core.annotations import Annotation
    from crc_core.regions import region_results

    pred = _run(predict(halves["path"], _model(halves["means"]), device="cpu"))
    left = Annotation.rectangle("normal", 0, 0, 2 * TILE, 3 * TILE, name="left")
    right_mislabelled = Annotation.rectangle(
        "normal", 2 * TILE, 0, 2 * TILE, 3 * TILE, name="right"
    )
    mixed = Annotation.rectangle("adenocarcinoma", TILE, 0, 2 * TILE, TILE, name="mixed")
    res = {r.name: r for r in region_results(pred, [left, right_mislabelled, mixed], SCHEME)}
    assert res["left"].n_patches == 6 and res["left"].shares["normal"] == 1.0
    assert res["left"].agreement is True and res["left"].label_share == 1.0
    assert res["right"].majority == "adenocarcinoma" and res["right"].agreement is False
    assert res["mixed"].n_patches == 2 and res["mixed"].shares == {
        "normal": 0.5,
        "adenocarcinoma": 0.5,
    }
    assert 0.5 < res["left"].mean_confidence <= 1.0


def test_region_export_is_qupath_geojson_with_measurements_and_csv(
    halves: dict, tmp_path: Path
) -> None:
    from crc_core.annotations import Annotation, load_annotations
    from crc_core.regions import region_results, save_regions_csv, save_regions_geojson

    pred = _run(predict(halves["path"], _model(halves["means"]), device="cpu"))
    ann = Annotation.rectangle("adenocarcinoma", 2 * TILE, 0, 2 * TILE, 3 * TILE, name="tumour")
    res = region_results(pred, [ann], SCHEME)
    save_regions_geojson(res, tmp_path / "r.geojson", pred.scheme, SCHEME)
    save_regions_csv(res, tmp_path / "r.csv", pred.scheme)
    data = json.loads((tmp_path / "r.geojson").read_text())
    props = data["features"][0]["properties"]
    assert props["measurements"]["Share Adenocarcinoma"] == 1.0
    assert props["measurements"]["Agreement"] == 1.0
    assert props["classification"]["name"] == "Adenocarcinoma"
    back = load_annotations(tmp_path / "r.geojson", SCHEME.copy())
    assert len(back.annotations) == 1
    assert next(iter(back.annotations)).geometry.equals(ann.geometry)
    row = next(csv.DictReader(io.StringIO((tmp_path / "r.csv").read_text())))
    assert (row["label"], row["predicted"], row["agreement"], row["patches"]) == (
        "Adenocarcinoma",
        "Adenocarcinoma",
        "yes",
        "6",
    )


def test_out_of_range_batch_size_is_refused(halves: dict) -> None:
    with pytest.raises(CrcError, match="batch size"):
        run_job(predict(halves["path"], _model(halves["means"]), batch_size=0))
