"""Class scheme: the paper's default, edits (ids survive renames), removal guard, JSON save/load."""

from __future__ import annotations

import json

import pytest

from crc_core.classes import ClassScheme
from crc_core.errors import ClassSchemeError

PAPER = [
    "Normal",
    "Adenoma",
    "Adenocarcinoma well differentiated",
    "Adenocarcinoma moderately differentiated",
    "Adenocarcinoma poorly differentiated",
]


def test_default_scheme_is_the_papers_five_classes_in_order():
    s = ClassScheme.paper()
    assert s.names == PAPER
    assert [c.key for c in s] == ["1", "2", "3", "4", "5"]
    assert len(set(s.ids)) == 5


def test_add_gives_a_new_class_a_unique_id_colour_and_key():
    s = ClassScheme.paper()
    c = s.add("Serrated lesion")
    assert c.id == "serrated-lesion"
    assert c.color not in s.colors[:5]
    assert c.key == "6"
    assert s.index("Serrated lesion") == 5


def test_add_refuses_a_name_already_used_whatever_its_case():
    s = ClassScheme.paper()
    with pytest.raises(ClassSchemeError, match="already exists"):
        s.add("  adenoma ")


def test_add_refuses_a_name_equal_to_another_class_name_even_when_it_is_also_an_id():
    s = ClassScheme([])
    s.add("x", id="y")
    s.add("y", id="z")
    with pytest.raises(ClassSchemeError, match="already exists"):
        s.add("y")


def test_rename_keeps_the_id_and_index():
    s = ClassScheme.paper()
    before = s.index("adc-well")
    s.rename("adc-well", "ADC G1")
    assert s.get("adc-well").name == "ADC G1"
    assert s.index("ADC G1") == before
    assert s.find("Adenocarcinoma well differentiated") is None


def test_rename_to_another_class_name_is_refused():
    s = ClassScheme.paper()
    with pytest.raises(ClassSchemeError, match="already exists"):
        s.rename("normal", "Adenoma")


def test_recolor_accepts_hex_and_rgb_and_refuses_out_of_range():
    s = ClassScheme.paper()
    assert s.recolor("normal", "#102030").color == (16, 32, 48)
    assert s.recolor("normal", [1, 2, 3]).color == (1, 2, 3)
    with pytest.raises(ClassSchemeError, match="colour"):
        s.recolor("normal", [1, 2, 300])


def test_remove_is_refused_while_annotations_use_the_class():
    s = ClassScheme.paper()
    with pytest.raises(ClassSchemeError, match="still used"):
        s.remove("Adenoma", in_use={"adenoma", "normal"})
    assert "Adenoma" in s


def test_remove_of_an_unused_class_shifts_later_indices():
    s = ClassScheme.paper()
    s.remove("Adenoma", in_use={"normal"})
    assert s.names == [PAPER[0]] + PAPER[2:]
    assert s.index("adc-well") == 1


def test_set_key_refuses_a_key_used_by_another_class():
    s = ClassScheme.paper()
    with pytest.raises(ClassSchemeError, match="already used"):
        s.set_key("normal", "2")


def test_save_and_load_round_trip_keeps_ids_names_colours_keys_and_non_ascii(tmp_path):
    s = ClassScheme.paper()
    s.rename("normal", "Normale Schleimhaut (Drüse)")
    s.add("腺腫", color="#abcdef", key="q")
    s.set_key("adenoma", None)
    path = tmp_path / "scheme.json"
    s.save(path)
    loaded = ClassScheme.load(path)
    assert loaded.to_json() == s.to_json()
    assert "腺腫" in path.read_text(encoding="utf-8")


def test_from_json_gives_missing_keys_only_after_explicit_ones():
    s = ClassScheme.from_json({"classes": [{"name": "A"}, {"name": "B", "key": "1"}]})
    assert s.get("B").key == "1"
    assert s.get("A").key not in (None, "1")


def test_from_json_refuses_an_id_used_twice():
    with pytest.raises(ClassSchemeError, match="used twice"):
        ClassScheme.from_json({"classes": [{"name": "A", "id": "x"}, {"name": "B", "id": "x"}]})


def test_load_refuses_a_file_that_is_not_json(tmp_path):
    p = tmp_path / "scheme.json"
    p.write_text("classes: [Normal]")
    with pytest.raises(ClassSchemeError, match="not a JSON class scheme"):
        ClassScheme.load(p)


def test_load_refuses_a_class_without_a_name(tmp_path):
    p = tmp_path / "scheme.json"
    p.write_text(json.dumps({"classes": [{"id": "a", "color": [1, 2, 3]}]}))
    with pytest.raises(ClassSchemeError, match="no 'name'"):
        ClassScheme.load(p)


def test_load_of_a_missing_file_names_it(tmp_path):
    with pytest.raises(ClassSchemeError, match="not found"):
        ClassScheme.load(tmp_path / "nope.json")


def test_move_changes_the_label_index():
    s = ClassScheme.paper()
    s.move("adc-poor", 0)
    assert s.index("adc-poor") == 0
    assert s.index("normal") == 1


def test_from_names_reuses_known_colours():
    s = ClassScheme.from_names(["Normal", "Polyp"])
    assert s.get("Normal").color == ClassScheme.paper().get("normal").color
    assert s.names == ["Normal", "Polyp"]
