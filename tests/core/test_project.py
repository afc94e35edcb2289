"""Project folders: create/open/save, relative and absolute slide paths, escapes refused, missing
slides reported, newer formats refused, per-slide annotations with atomic saves and backups."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from crc_core.annotations import Annotation, AnnotationSet
from crc_core.classes import ClassScheme
from crc_core.errors import AnnotationError, ProjectError
from crc_core.project import PROJECT_FILE, Project


def _slide(folder: Path, name: str = "case-01.svs", size: int = 64) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / name
    p.write_bytes(os.urandom(size))
    return p


def _edit(root: Path, fn) -> None:
    f = root / PROJECT_FILE
    doc = json.loads(f.read_text(encoding="utf-8"))
    fn(doc)
    f.write_text(json.dumps(doc), encoding="utf-8")


@pytest.fixture
def project(tmp_path) -> Project:
    return Project.create(tmp_path / "proj")


def test_create_writes_project_json_with_the_papers_classes_and_an_annotations_folder(tmp_path):
    p = Project.create(tmp_path / "proj")
    doc = json.loads((tmp_path / "proj" / PROJECT_FILE).read_text(encoding="utf-8"))
    assert doc["version"] == 1 and doc["slides"] == []
    assert [c["name"] for c in doc["classes"]["classes"]] == ClassScheme.paper().names
    assert (tmp_path / "proj" / "annotations").is_dir()
    assert p.name == "proj"


def test_create_refuses_a_folder_that_already_holds_a_project(project):
    with pytest.raises(ProjectError, match="already holds a project"):
        Project.create(project.root)


def test_open_restores_scheme_slides_and_mpp_override(project):
    project.scheme.rename("normal", "Normal mucosa")
    project.scheme.add("Serrated lesion")
    e = project.add_slide(_slide(project.root / "slides"), name="Case 1")
    project.set_mpp(e, 0.25)
    project.save()
    again = Project.open(project.root)
    assert again.scheme.to_json() == project.scheme.to_json()
    [entry] = again.slides
    assert (entry.id, entry.name, entry.path, entry.mpp) == (
        e.id,
        "Case 1",
        "slides/case-01.svs",
        (0.25, 0.25),
    )


def test_open_accepts_the_project_json_path(project):
    assert Project.open(project.root / PROJECT_FILE).root == project.root


def test_slide_inside_the_folder_is_recorded_relative_and_outside_absolute(project, tmp_path):
    inside = project.add_slide(_slide(project.root / "slides"))
    outside = project.add_slide(_slide(tmp_path / "elsewhere", "case-02.svs"))
    assert inside.path == "slides/case-01.svs"
    assert outside.path == str((tmp_path / "elsewhere" / "case-02.svs").resolve())
    assert project.slide_path(outside) == (tmp_path / "elsewhere" / "case-02.svs").resolve()


def test_add_slide_refuses_a_missing_file_and_a_duplicate(project):
    with pytest.raises(ProjectError, match="not found"):
        project.add_slide(project.root / "nope.svs")
    s = _slide(project.root / "slides")
    project.add_slide(s)
    with pytest.raises(ProjectError, match="already in the project"):
        project.add_slide(s)


def test_slide_ids_are_unique_plain_names(project):
    a = project.add_slide(_slide(project.root / "a", "Case 01 (HE).svs"))
    b = project.add_slide(_slide(project.root / "b", "Case 01 (HE).svs"))
    assert a.id == "case-01-he" and b.id == "case-01-he-2"


def test_moving_the_project_folder_keeps_slides_and_annotations(project, tmp_path):
    e = project.add_slide(_slide(project.root / "slides"))
    ann = Annotation.rectangle("adenoma", 10, 20, 30, 40, name="gland")
    project.save_annotations(e, AnnotationSet([ann]))
    project.save()
    moved = tmp_path / "other-disk" / "renamed"
    moved.parent.mkdir()
    shutil.move(str(project.root), moved)
    p2 = Project.open(moved)
    [entry] = p2.slides
    assert entry.exists
    assert p2.slide_path(entry) == (moved / "slides" / "case-01.svs").resolve()
    [back] = p2.load_annotations(entry).annotations
    assert (back.id, back.class_id, back.area) == (ann.id, "adenoma", 1200)


def test_relative_path_escaping_with_dotdot_is_refused_on_open(project, tmp_path):
    _slide(tmp_path, "outside.svs")
    _edit(
        project.root,
        lambda d: d["slides"].append({"id": "evil", "path": "../outside.svs", "name": "x"}),
    )
    with pytest.raises(ProjectError, match="leaves the project folder"):
        Project.open(project.root)


def test_backslash_dotdot_path_is_refused_too(project):
    _edit(
        project.root, lambda d: d["slides"].append({"id": "evil", "path": "slides\\..\\..\\x.svs"})
    )
    with pytest.raises(ProjectError, match="leaves the project folder"):
        Project.open(project.root)


def test_relative_path_escaping_through_a_symlink_is_refused_when_resolved(project, tmp_path):
    secret = _slide(tmp_path / "secret", "private.svs")
    (project.root / "link").symlink_to(secret.parent, target_is_directory=True)
    _edit(project.root, lambda d: d["slides"].append({"id": "sneaky", "path": "link/private.svs"}))
    p = Project.open(project.root)  # the rest of the project stays usable
    [entry] = p.slides
    assert not entry.exists and "leads out of the project folder" in entry.problem
    with pytest.raises(ProjectError, match="leads out of the project folder"):
        p.slide_path(entry)


def test_slide_id_that_is_not_a_plain_name_is_refused(project):
    _edit(project.root, lambda d: d["slides"].append({"id": "../../etc/cron", "path": "a.svs"}))
    with pytest.raises(ProjectError, match="not a plain name"):
        Project.open(project.root)


def test_duplicate_slide_ids_are_refused(project):
    _edit(
        project.root,
        lambda d: d["slides"].extend([{"id": "a", "path": "a.svs"}, {"id": "A", "path": "b.svs"}]),
    )
    with pytest.raises(ProjectError, match="used twice"):
        Project.open(project.root)


def test_newer_format_version_is_refused_with_a_clear_message(project):
    _edit(project.root, lambda d: d.update(version=99))
    with pytest.raises(ProjectError, match="made by a newer CRC Workbench \\(project format 99"):
        Project.open(project.root)


def test_missing_slide_is_reported_not_fatal(project, tmp_path):
    gone = _slide(tmp_path / "usb", "case-09.svs")
    kept = project.add_slide(_slide(project.root / "slides"))
    lost = project.add_slide(gone)
    project.save()
    gone.unlink()
    p = Project.open(project.root)
    assert [e.id for e in p.missing_slides()] == [lost.id]
    assert p.get_slide(kept.id).exists
    assert "slide file not found" in p.get_slide(lost.id).problem


def test_set_slide_path_relinks_a_missing_slide_keeping_its_annotations(project, tmp_path):
    gone = _slide(tmp_path / "usb", "case-09.svs")
    e = project.add_slide(gone)
    project.save_annotations(e, AnnotationSet([Annotation.rectangle("normal", 0, 0, 5, 5)]))
    gone.unlink()
    new = _slide(project.root / "slides", "case-09.svs")
    project.set_slide_path(e, new)
    assert e.path == "slides/case-09.svs" and e.exists
    assert len(project.load_annotations(e).annotations) == 1


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        (lambda d: d.update(slides="all"), "'slides' must be a list"),
        (lambda d: d["slides"].append({"id": 5, "path": "a.svs"}), "needs 'id' and 'path' strings"),
        (lambda d: d["slides"].append({"id": "a", "path": "a.svs", "mpp": "fast"}), "mpp 'fast'"),
        (lambda d: d.update(classes={"classes": "x"}), "classes"),
        (lambda d: d.update(format="something-else"), "not a CRC Workbench project file"),
    ],
)
def test_wrong_types_in_project_json_are_refused(project, change, needle):
    _edit(project.root, change)
    with pytest.raises(ProjectError, match=needle):
        Project.open(project.root)


def test_project_json_that_is_not_json_is_refused(project):
    (project.root / PROJECT_FILE).write_text("{ truncated", encoding="utf-8")
    with pytest.raises(ProjectError, match="not a valid project file"):
        Project.open(project.root)


def test_folder_without_project_json_is_not_a_project(tmp_path):
    with pytest.raises(ProjectError, match="not a CRC Workbench project"):
        Project.open(tmp_path)


def test_annotations_save_and_load_per_slide(project):
    e = project.add_slide(_slide(project.root / "slides"))
    aset = AnnotationSet(
        [
            Annotation.rectangle("normal", 0, 0, 10, 10),
            Annotation.rectangle("adc-poor", 50, 50, 10, 10, name="Ünïcode"),
        ]
    )
    project.save_annotations(e, aset)
    assert project.annotations_path(e) == project.root / "annotations" / f"{e.id}.geojson"
    back = project.load_annotations(e).annotations
    assert back.ids == aset.ids and [a.name for a in back] == ["", "Ünïcode"]


def test_slide_without_annotation_file_has_an_empty_set(project):
    e = project.add_slide(_slide(project.root / "slides"))
    res = project.load_annotations(e)
    assert len(res.annotations) == 0 and res.warnings == []


def test_save_keeps_the_previous_version_as_bak(project):
    e = project.add_slide(_slide(project.root / "slides"))
    one = AnnotationSet([Annotation.rectangle("normal", 0, 0, 10, 10)])
    project.save_annotations(e, one)
    two = one.copy()
    two.add(Annotation.rectangle("normal", 20, 0, 10, 10))
    project.save_annotations(e, two)
    bak = project.annotations_path(e).with_name(f"{e.id}.geojson.bak")
    assert len(json.loads(bak.read_text(encoding="utf-8"))["features"]) == 1


def test_autosave_writes_only_when_something_changed(project):
    e = project.add_slide(_slide(project.root / "slides"))
    aset = AnnotationSet([Annotation.rectangle("normal", 0, 0, 10, 10)])
    assert project.autosave(e, aset) is True
    assert project.autosave(e, aset) is False
    aset.add(Annotation.rectangle("adenoma", 20, 0, 10, 10))
    assert project.autosave(e, aset) is True


def test_autosave_also_saves_a_changed_class_scheme(project):
    e = project.add_slide(_slide(project.root / "slides"))
    project.save()
    project.scheme.add("Mucin")
    project.autosave(e, AnnotationSet())
    assert "Mucin" in Project.open(project.root).scheme


def test_unknown_class_in_a_slide_file_is_added_to_the_project_scheme(project):
    e = project.add_slide(_slide(project.root / "slides"))
    project.save()
    other = ClassScheme.paper()
    other.add("Lymphoid aggregate")
    from crc_core.annotations import save_annotations

    save_annotations(
        AnnotationSet([Annotation.rectangle("lymphoid-aggregate", 0, 0, 5, 5)]),
        project.annotations_path(e),
        other,
    )
    res = project.load_annotations(e)
    assert res.added_classes == ["Lymphoid aggregate"] and project.dirty


def test_annotation_counts_follow_saves_and_external_changes(project):
    a = project.add_slide(_slide(project.root / "slides", "a.svs"))
    b = project.add_slide(_slide(project.root / "slides", "b.svs"))
    project.save_annotations(
        a, AnnotationSet([Annotation.rectangle("normal", i * 20, 0, 10, 10) for i in range(3)])
    )
    assert project.annotation_counts() == {a.id: 3, b.id: 0}
    from crc_core.annotations import save_annotations

    save_annotations(
        AnnotationSet([Annotation.rectangle("normal", 0, 0, 10, 10)]),
        project.annotations_path(b),
        project.scheme,
    )
    assert project.annotation_counts() == {a.id: 3, b.id: 1}


def test_corrupt_annotation_file_is_refused_untouched_and_the_backup_named(project):
    e = project.add_slide(_slide(project.root / "slides"))
    aset = AnnotationSet([Annotation.rectangle("normal", 0, 0, 10, 10)])
    project.save_annotations(e, aset)
    aset.add(Annotation.rectangle("normal", 20, 0, 10, 10))
    project.save_annotations(e, aset)
    path = project.annotations_path(e)
    path.write_bytes(b'{"type": "FeatureCollection", "features": [')
    with pytest.raises(AnnotationError, match="previous save is in .*geojson.bak"):
        project.load_annotations(e)
    assert path.read_bytes() == b'{"type": "FeatureCollection", "features": ['


def test_failure_mid_save_of_annotations_leaves_the_previous_file_whole(project, monkeypatch):
    e = project.add_slide(_slide(project.root / "slides"))
    project.save_annotations(e, AnnotationSet([Annotation.rectangle("normal", 0, 0, 10, 10)]))
    path = project.annotations_path(e)
    before = path.read_bytes()
    import crc_core.atomic as atomic

    real_replace = atomic.os.replace

    def crash(src, dst):
        if Path(dst) == path:
            raise OSError(5, "Input/output error")
        return real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", crash)
    with pytest.raises(ProjectError, match="cannot save"):
        project.save_annotations(e, AnnotationSet([Annotation.rectangle("adenoma", 5, 5, 1, 1)]))
    assert path.read_bytes() == before
    assert not [n for n in os.listdir(path.parent) if n.endswith(".tmp")]


def test_removed_slide_keeps_its_annotation_file_and_its_id_is_not_reused(project):
    s = _slide(project.root / "slides")
    e = project.add_slide(s)
    project.save_annotations(e, AnnotationSet([Annotation.rectangle("normal", 0, 0, 10, 10)]))
    project.remove_slide(e)
    assert project.slides == [] and project.annotations_path(e).exists()
    again = project.add_slide(s)
    assert again.id != e.id
    assert len(project.load_annotations(again).annotations) == 0


def test_datasets_models_predictions_folders_are_created_on_demand(project):
    assert not (project.root / "models").exists()
    assert project.models_dir == project.root / "models" and project.models_dir.is_dir()
    assert project.datasets_dir.is_dir() and project.predictions_dir.is_dir()


def test_real_slide_added_from_elsewhere_is_absolute_and_exists(project, slides_dir):
    e = project.add_slide(slides_dir / "cmu-1-small-region.svs")
    project.save()
    p = Project.open(project.root)
    entry = p.get_slide(e.id)
    assert Path(entry.path).is_absolute() and entry.exists
    from crc_core.slide import open_slide

    with open_slide(p.slide_path(entry)) as reader:
        assert reader.dimensions == (2220, 2967)


def test_annotation_file_symlinked_out_of_the_project_is_neither_read_nor_written(
    project, tmp_path
):
    e = project.add_slide(_slide(project.root / "slides"))
    outside = tmp_path / "victim.geojson"
    outside.write_text("precious", encoding="utf-8")
    (project.root / "annotations" / f"{e.id}.geojson").symlink_to(outside)
    with pytest.raises(ProjectError, match="leads out of the project folder"):
        project.load_annotations(e)
    with pytest.raises(ProjectError, match="leads out of the project folder"):
        project.save_annotations(e, AnnotationSet([Annotation.rectangle("normal", 0, 0, 5, 5)]))
    assert outside.read_text(encoding="utf-8") == "precious"


def test_save_after_an_edit_writes_what_a_fresh_save_would(project, tmp_path):
    e = project.add_slide(_slide(project.root / "slides"))
    aset = AnnotationSet([Annotation.rectangle("normal", i * 20, 0, 10, 10) for i in range(5)])
    project.save_annotations(e, aset)
    aset.remove(aset.ids[2])
    aset.replace(list(aset)[0].replace(class_id="adenoma"))
    project.scheme.rename("adenoma", "Adenoma (tubular)")
    project.save_annotations(e, aset)
    from crc_core.annotations import save_annotations

    save_annotations(aset, tmp_path / "fresh.geojson", project.scheme)
    assert project.annotations_path(e).read_bytes() == (tmp_path / "fresh.geojson").read_bytes()


# The child saves two versions of a slide's annotations in turn through Project.save_annotations.
# Encoding is replaced by prebuilt GeoJSON (4 and 8 MB) so that most of the time is spent writing
# files, where a kill would tear a non-atomic save.
_KILL_CHILD = """
import sys, uuid
import crc_core.project as pm
from crc_core.annotations import AnnotationSet

def geojson(n):
    f = ('{"type":"Feature","id":"%s","geometry":{"type":"Polygon","coordinates":'
         '[[[0,0],[100,0],[100,100],[0,100],[0,0]]]},"properties":{"objectType":"annotation",'
         '"classification":{"name":"Normal","color":[76,175,80]},"isLocked":false}}')
    feats = ",".join(f % uuid.uuid4() for _ in range(n))
    return ('{"type":"FeatureCollection","features":[' + feats + "]}").encode()

data = [geojson(20000), geojson(40000)]
k = 0
pm.annotations_to_bytes = lambda aset, fmt, scheme, cache=None: data[k % 2]
p = pm.Project.open(sys.argv[1])
e = p.slides[0]
p.save_annotations(e, AnnotationSet())
print("ready", flush=True)
while True:
    k += 1
    p.save_annotations(e, AnnotationSet())
"""


@pytest.mark.parametrize(
    "trial", [*range(2), *(pytest.param(t, marks=pytest.mark.slow) for t in range(2, 22))]
)
def test_sigkill_during_autosave_leaves_a_whole_annotation_file(project, trial):
    """Killed at a random point of a save loop (2 trials in CI, 20 more with -m slow)."""
    import random
    import signal
    import subprocess
    import sys
    import time

    e = project.add_slide(_slide(project.root / "slides"))
    project.save()
    child = subprocess.Popen(
        [sys.executable, "-c", _KILL_CHILD, str(project.root)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout.readline().strip() == "ready"
        time.sleep(random.Random(trial).uniform(0.1, 0.6))
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    p = Project.open(project.root)
    entry = p.get_slide(e.id)
    assert p.annotation_count(entry) in (20000, 40000)  # 0 when the file does not parse


def test_class_used_on_another_slide_cannot_be_removed(project):
    a = project.add_slide(_slide(project.root / "slides", "a.svs"))
    b = project.add_slide(_slide(project.root / "slides", "b.svs"))
    project.save_annotations(b, AnnotationSet([Annotation.rectangle("adc-poor", 0, 0, 5, 5)]))
    editing = AnnotationSet([Annotation.rectangle("normal", 0, 0, 5, 5)])
    used = project.classes_in_use({a.id: editing})
    assert used == {"normal", "adc-poor"}
    from crc_core.errors import ClassSchemeError

    with pytest.raises(ClassSchemeError, match="still used"):
        project.scheme.remove("adc-poor", in_use=used)
    project.scheme.remove("adenoma", in_use=used)
    assert "adenoma" not in project.scheme.ids


@pytest.mark.parametrize("stem", ["Präparat 1", "腺腫", "..", "con", "-x-"])
def test_slides_with_any_file_name_get_ids_the_project_can_reopen(project, stem):
    e = project.add_slide(_slide(project.root / "slides", f"{stem}.svs"))
    project.save()
    assert Project.open(project.root).get_slide(e.id).exists
