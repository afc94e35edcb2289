"""Class schemes: stable ids, names, colours and shortcut keys of the annotation classes.

The default scheme is the study's five classes (Kim, Koh, Lee 2021): Normal, Adenoma and
Adenocarcinoma well, moderately and poorly differentiated. A scheme is editable (add, rename,
recolour, remove when unused); a class keeps its id across renames, so annotations, datasets and
checkpoints that refer to the id stay valid. Colours are ``(r, g, b)`` tuples of ints in 0..255.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crc_core.atomic import atomic_write_text
from crc_core.errors import ClassSchemeError

RGB = tuple[int, int, int]

# A palette for classes added without a colour (unknown classes met in imported files, new classes).
_PALETTE: list[RGB] = [
    (76, 175, 80), (33, 150, 243), (255, 193, 7), (255, 112, 67), (183, 28, 28),
    (156, 39, 176), (0, 188, 212), (121, 85, 72), (96, 125, 139), (233, 30, 99),
    (205, 220, 57), (63, 81, 181),
]

SCHEME_FORMAT = 1


@dataclass
class ClassDef:
    """One class: ``id`` never changes; ``name``, ``color`` and ``key`` are editable."""

    id: str
    name: str
    color: RGB
    key: str | None = None
    description: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "color": list(self.color), "key": self.key,
                "description": self.description}

    @property
    def hex(self) -> str:
        return "#{:02x}{:02x}{:02x}".format(*self.color)


def _check_color(color: Any, where: str) -> RGB:
    if isinstance(color, str):
        m = re.fullmatch(r"#?([0-9a-fA-F]{6})", color.strip())
        if not m:
            raise ClassSchemeError(f"{where}: colour {color!r} is not #rrggbb or [r, g, b]")
        v = int(m.group(1), 16)
        return ((v >> 16) & 255, (v >> 8) & 255, v & 255)
    if (
        isinstance(color, (list, tuple))
        and len(color) == 3
        and all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255 for c in color)
    ):
        return (int(color[0]), int(color[1]), int(color[2]))
    raise ClassSchemeError(f"{where}: colour {color!r} is not [r, g, b] with integers 0-255")


def slugify(name: str) -> str:
    """A stable id from a class name ("Adenocarcinoma, well" -> "adenocarcinoma-well")."""
    slug = re.sub(r"[^\w]+", "-", name.strip().lower(), flags=re.UNICODE).strip("-")
    return slug or "class"


@dataclass
class ClassScheme:
    """An ordered list of classes. The order is the label index used by datasets and models."""

    classes: list[ClassDef] = field(default_factory=list)

    # ----------------------------------------------------------------- construction
    @classmethod
    def paper(cls) -> ClassScheme:
        """The study's five classes (the default of a new project)."""
        return cls([
            ClassDef("normal", "Normal", (76, 175, 80), "1", "Normal mucosa"),
            ClassDef("adenoma", "Adenoma", (33, 150, 243), "2", "Adenoma (low- or high-grade dysplasia)"),
            ClassDef("adc-well", "Adenocarcinoma well differentiated", (255, 193, 7), "3",
                     "Well differentiated adenocarcinoma"),
            ClassDef("adc-moderate", "Adenocarcinoma moderately differentiated", (255, 112, 67), "4",
                     "Moderately differentiated adenocarcinoma"),
            ClassDef("adc-poor", "Adenocarcinoma poorly differentiated", (183, 28, 28), "5",
                     "Poorly differentiated adenocarcinoma"),
        ])

    default = paper

    @classmethod
    def three_class(cls) -> ClassScheme:
        """Normal / Adenoma / Adenocarcinoma: the scheme of the demo project and the EBHI mapping."""
        return cls([
            ClassDef("normal", "Normal", (76, 175, 80), "1"),
            ClassDef("adenoma", "Adenoma", (33, 150, 243), "2"),
            ClassDef("adenocarcinoma", "Adenocarcinoma", (211, 47, 47), "3"),
        ])

    @classmethod
    def from_names(cls, names: Iterable[str]) -> ClassScheme:
        """A scheme with the given names in order, known colours reused, others from a palette."""
        scheme = cls([])
        known = {c.name.lower(): c for c in (cls.paper().classes + cls.three_class().classes)}
        for name in names:
            k = known.get(name.lower())
            scheme.add(name, color=k.color if k else None)
        return scheme

    # ----------------------------------------------------------------- queries
    def __iter__(self) -> Iterator[ClassDef]:
        return iter(self.classes)

    def __len__(self) -> int:
        return len(self.classes)

    def __contains__(self, name_or_id: object) -> bool:
        return isinstance(name_or_id, str) and self.find(name_or_id) is not None

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.classes]

    @property
    def ids(self) -> list[str]:
        return [c.id for c in self.classes]

    @property
    def colors(self) -> list[RGB]:
        return [c.color for c in self.classes]

    def find(self, name_or_id: str) -> ClassDef | None:
        """The class with this id, or else this name (case-insensitive, spaces trimmed)."""
        for c in self.classes:
            if c.id == name_or_id:
                return c
        key = name_or_id.strip().casefold()
        for c in self.classes:
            if c.name.casefold() == key:
                return c
        return None

    def get(self, name_or_id: str) -> ClassDef:
        c = self.find(name_or_id)
        if c is None:
            raise ClassSchemeError(
                f"unknown class {name_or_id!r}; the scheme has: {', '.join(self.names) or '(none)'}"
            )
        return c

    def index(self, name_or_id: str) -> int:
        """Label index (position in the scheme) of a class given by id or name."""
        return self.classes.index(self.get(name_or_id))

    def find_name(self, name: str) -> ClassDef | None:
        """The class with this name only (case-insensitive, spaces trimmed), ignoring ids."""
        key = name.strip().casefold()
        for c in self.classes:
            if c.name.casefold() == key:
                return c
        return None

    def by_key(self, key: str) -> ClassDef | None:
        for c in self.classes:
            if c.key == key:
                return c
        return None

    # ----------------------------------------------------------------- edits
    def _next_color(self) -> RGB:
        used = set(self.colors)
        for col in _PALETTE:
            if col not in used:
                return col
        return _PALETTE[len(self.classes) % len(_PALETTE)]

    def _next_key(self) -> str | None:
        used = {c.key for c in self.classes}
        for k in "123456789":
            if k not in used:
                return k
        return None

    def add(self, name: str, color: Any = None, key: str | None = None, id: str | None = None) -> ClassDef:
        name = name.strip()
        if not name:
            raise ClassSchemeError("a class needs a non-empty name")
        if self.find_name(name) is not None:
            raise ClassSchemeError(f"class {name!r} already exists")
        new_id = id or slugify(name)
        base, n = new_id, 2
        while new_id in self.ids:
            new_id = f"{base}-{n}"
            n += 1
        rgb = _check_color(color, f"class {name!r}") if color is not None else self._next_color()
        if key is not None and self.by_key(key) is not None:
            raise ClassSchemeError(f"key {key!r} is already used by class {self.by_key(key).name!r}")  # type: ignore[union-attr]
        c = ClassDef(new_id, name, rgb, key if key is not None else self._next_key())
        self.classes.append(c)
        return c

    def rename(self, name_or_id: str, new_name: str) -> ClassDef:
        c = self.get(name_or_id)
        new_name = new_name.strip()
        if not new_name:
            raise ClassSchemeError("a class needs a non-empty name")
        other = self.find_name(new_name)
        if other is not None and other is not c:
            raise ClassSchemeError(f"class {new_name!r} already exists")
        c.name = new_name
        return c

    def recolor(self, name_or_id: str, color: Any) -> ClassDef:
        c = self.get(name_or_id)
        c.color = _check_color(color, f"class {c.name!r}")
        return c

    def set_key(self, name_or_id: str, key: str | None) -> ClassDef:
        c = self.get(name_or_id)
        if key is not None:
            other = self.by_key(key)
            if other is not None and other is not c:
                raise ClassSchemeError(f"key {key!r} is already used by class {other.name!r}")
        c.key = key
        return c

    def remove(self, name_or_id: str, in_use: Iterable[str] = ()) -> ClassDef:
        """Remove a class; refused while any annotation uses it (``in_use``: ids or names in use)."""
        c = self.get(name_or_id)
        used = {u.casefold() for u in in_use}
        if c.id.casefold() in used or c.name.casefold() in used:
            raise ClassSchemeError(
                f"class {c.name!r} is still used by annotations; reassign or delete them first"
            )
        self.classes.remove(c)
        return c

    def move(self, name_or_id: str, new_index: int) -> None:
        c = self.get(name_or_id)
        self.classes.remove(c)
        self.classes.insert(max(0, min(new_index, len(self.classes))), c)

    def copy(self) -> ClassScheme:
        return ClassScheme.from_json(self.to_json())

    # ----------------------------------------------------------------- JSON
    def to_json(self) -> dict[str, Any]:
        return {"format": SCHEME_FORMAT, "classes": [c.to_json() for c in self.classes]}

    @classmethod
    def from_json(cls, data: Any, where: str = "class scheme") -> ClassScheme:
        if isinstance(data, list):
            data = {"classes": data}
        if not isinstance(data, dict) or not isinstance(data.get("classes"), list):
            raise ClassSchemeError(f"{where}: expected an object with a 'classes' list")
        scheme = cls([])
        auto_key: list[ClassDef] = []
        for i, item in enumerate(data["classes"]):
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                raise ClassSchemeError(f"{where}: class #{i + 1} has no 'name' string")
            cid = item.get("id")
            if cid is not None and not isinstance(cid, str):
                raise ClassSchemeError(f"{where}: class {item['name']!r} has a non-string id")
            key = item.get("key")
            if key is not None and not isinstance(key, str):
                raise ClassSchemeError(f"{where}: class {item['name']!r} has a non-string key")
            if cid is not None and cid in scheme.ids:
                raise ClassSchemeError(f"{where}: class id {cid!r} is used twice")
            try:
                c = scheme.add(item["name"], color=item.get("color"), key=key, id=cid)
            except ClassSchemeError as exc:
                raise ClassSchemeError(f"{where}: {exc}") from None
            if key is None:
                # Explicit null keeps no key; a missing key is given one once every explicit key is
                # known, so an earlier class never takes the key a later one asks for.
                c.key = None
                if "key" not in item:
                    auto_key.append(c)
            c.description = str(item.get("description", "") or "")
        for c in auto_key:
            c.key = scheme._next_key()
        return scheme

    def save(self, path: str | Path) -> None:
        atomic_write_text(path, json.dumps(self.to_json(), indent=2, ensure_ascii=False))

    @classmethod
    def load(cls, path: str | Path) -> ClassScheme:
        p = Path(path)
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ClassSchemeError(f"{p}: class scheme file not found") from None
        except OSError as exc:
            raise ClassSchemeError(f"{p}: cannot read the class scheme ({exc.strerror or exc})") from None
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise ClassSchemeError(f"{p}: not a JSON class scheme ({exc})") from None
        return cls.from_json(data, where=str(p))
