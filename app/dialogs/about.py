"""Help > About: version, what the workbench is, the study it follows, credits and licences.

The text names the versions actually loaded (CRC Workbench, Python, Qt/PySide6, PyTorch and the
OpenSlide library), the study (Kim, Koh & Lee, Multimedia Tools and Applications, 2021), the
EBHI-Seg authors whose CC BY 4.0 tiles make the demo slide and train the demo model, and the
licences of the bundled components. GUI thread only.
"""

from __future__ import annotations

import platform
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QIcon, QPixmap
from PySide6.QtWidgets import QDialog, QDialogButtonBox, QHBoxLayout, QLabel, QVBoxLayout, QWidget

from app.demo import bundle_root


def component_versions() -> dict[str, str]:
    """Name -> version of the components the running application uses ("unavailable" if absent)."""
    import PySide6
    from PySide6.QtCore import qVersion

    import crc_core

    out = {
        "CRC Workbench": crc_core.__version__,
        "Python": platform.python_version(),
        "Qt / PySide6": f"{qVersion()} / {PySide6.__version__}",
    }
    try:
        import torch

        out["PyTorch"] = torch.__version__
    except ImportError:  # pragma: no cover - torch is a dependency
        out["PyTorch"] = "unavailable"
    try:
        import openslide

        lib, py = openslide.__library_version__, openslide.__version__
        out["OpenSlide"] = f"{lib} (openslide-python {py})"
    except Exception:  # no OpenSlide library on this system: the viewer falls back to Pillow
        out["OpenSlide"] = "unavailable (Pillow fallback)"
    return out


def about_html(versions: dict[str, Any] | None = None) -> str:
    """The dialog's text (rich text)."""
    v = versions or component_versions()
    rows = "".join(f"<tr><td>{k}</td><td>&nbsp;{val}</td></tr>" for k, val in v.items())
    return f"""
<h2>CRC Workbench {v.get("CRC Workbench", "")}</h2>
<p>A desktop workbench for colorectal biopsy whole-slide images: view and annotate slides, build
patch datasets from annotated areas, train ResNet50, DenseNet121 and InceptionV3 classifiers,
evaluate them, and paint their class maps and CAM heatmaps back on the slide for review.</p>
<p><b>The study it follows.</b> The workflow, the five classes (Normal, Adenoma,
Adenocarcinoma well, moderately and poorly differentiated), the patch extraction and the
training schedule follow Kim, Koh &amp; Lee, <i>Multimedia Tools and Applications</i>, 2021.</p>
<p><b>Data credit.</b> The demo slide and the demo model use tiles of <b>EBHI-Seg</b>:
Shi L., Li X., Hu W., et al., Li C., "EBHI-Seg: A novel enteroscope biopsy histopathological
hematoxylin and eosin image dataset for image segmentation tasks", <i>Frontiers in Medicine</i>,
2023, licensed under
<a href="https://creativecommons.org/licenses/by/4.0/">CC BY 4.0</a>
(tiles re-encoded and laid out as a pyramidal slide).</p>
<p><b>Slide reading</b> by <a href="https://openslide.org/">OpenSlide</a> (LGPL 2.1).</p>
<p><b>Licences.</b> CRC Workbench: MIT. Qt and PySide6: LGPL 3. OpenSlide: LGPL 2.1.
PyTorch and torchvision: BSD 3-clause. EBHI-Seg tiles: CC BY 4.0. Full credits in
<tt>resources/ATTRIBUTION.md</tt>.</p>
<p><b>Not a medical device:</b> for research and teaching, not for diagnosis.</p>
<table>{rows}</table>
"""


class AboutDialog(QDialog):
    """The About box (see the module docstring)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("About CRC Workbench")
        icon_path = bundle_root() / "resources" / "icon.png"
        self.icon_label = QLabel()
        if icon_path.is_file():
            self.setWindowIcon(QIcon(str(icon_path)))
            pix = QPixmap(str(icon_path))
            self.icon_label.setPixmap(
                pix.scaled(
                    96,
                    96,
                    Qt.AspectRatioMode.KeepAspectRatio,
                    Qt.TransformationMode.SmoothTransformation,
                )
            )
        self.icon_label.setAlignment(Qt.AlignmentFlag.AlignTop)
        self.text = QLabel(about_html())
        self.text.setTextFormat(Qt.TextFormat.RichText)
        self.text.setWordWrap(True)
        self.text.setOpenExternalLinks(True)
        self.text.setTextInteractionFlags(Qt.TextInteractionFlag.TextBrowserInteraction)
        self.text.setMinimumWidth(520)
        row = QHBoxLayout()
        row.addWidget(self.icon_label)
        row.addWidget(self.text, 1)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok)
        buttons.accepted.connect(self.accept)
        lay = QVBoxLayout(self)
        lay.addLayout(row)
        lay.addWidget(buttons)
