"""The Train widget's list of (image, labels, labelled-in) layer pairs; *Add all*, which
pairs image layers with the labels layers named after them; and *Add files…*, which opens
image files and their label files as such layers and pairs them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from napari.layers import Image, Labels
from qtpy.QtWidgets import QFileDialog, QListWidget, QPushButton, QVBoxLayout, QWidget

from ..errors import NapariUNetError
from ..io import pairs_among, stem_of
from ._forms import IMAGE_FILES, full_resolution
from ._outputs import inputs, is_uncorrected

PAIR, IN = "  ⟷  ", "  in  "
ADD_ALL = ("Pair every image layer with the labels layer named after it ('cells' with "
           "'cells labels' or a corrected 'cells segmentation'), each labelled in whole")
ADD_FILES = ("Open image files and their label files as layers and pair them: choose the "
             "images and their label files together (img01.tif with img01_masks.tif, as "
             "Cellpose saves them), or the images alone: their label files are then looked "
             "for beside them, and else in a folder you choose (img01.tif in labels/)")


def named_after(labels_name: str, image_name: str) -> bool:
    """Whether a labels layer's name is an image layer's name, then a space, '_', '-' or
    '.' and more ('cells labels', 'cells_mask', 'cells segmentation (2)' for 'cells')."""
    rest = labels_name[len(image_name):]
    return labels_name.startswith(image_name) and len(rest) > 1 and rest[0] in " _-."


def looks_like_labels(layer, images: list[str]) -> bool:
    """An image layer of whole numbers named after another image as labels are ('cells
    labels', 'cells_mask'): a label file napari opened as an image."""
    words = ("label", "mask", "seg", "annot", "truth", "gt")
    return (np.issubdtype(full_resolution(layer).dtype, np.integer) and not layer.rgb
            and any(named_after(layer.name, name)
                    and any(w in layer.name[len(name):].lower() for w in words)
                    for name in images if name != layer.name))


class PairList:
    """The list of pairs (``list``, a QListWidget: double-click removes one) and its
    buttons (``buttons``: *Add pair*, *Add all*, *Add files…*, *Clear*)."""

    def __init__(self, add_pair, add_all, add_files) -> None:
        self.list = QListWidget()
        self.list.setToolTip("Layer pairs to train on; empty: the pair chosen above. "
                             "Double-click a pair to remove it.")
        self.list.setMaximumHeight(96)
        self.list.itemDoubleClicked.connect(
            lambda item: self.list.takeItem(self.list.row(item)))
        self.buttons = QWidget()
        column = QVBoxLayout(self.buttons)
        column.setContentsMargins(0, 0, 0, 0)
        for text, tip, action in (
                ("Add pair", "", add_pair),
                ("Add all", ADD_ALL, add_all),
                ("Add files…", ADD_FILES, add_files),
                ("Clear", "Remove every pair from the list", self.list.clear)):
            button = QPushButton(text)
            button.setToolTip(tip)
            button.clicked.connect(lambda _=False, action=action: action())  # no 'checked'
            column.addWidget(button)
        column.addStretch()

    def add(self, image: str, labels: str, region: str | None = None) -> None:
        self.list.addItem(f"{image}{PAIR}{labels}" + (f"{IN}{region}" if region else ""))

    def texts(self) -> list[str]:
        return [self.list.item(i).text() for i in range(self.list.count())]

    def names(self) -> list[tuple[str, str, str | None]]:
        """(image, labels, shapes or None) layer names of every pair listed."""
        pairs = []
        for item in self.texts():
            pair, _, region = item.partition(IN)
            img, _, lab = pair.partition(PAIR)
            pairs.append((img, lab, region or None))
        return pairs

    def add_all(self, viewer) -> str:
        """Add a pair for every image layer and the one labels layer named after it (a
        labels layer named after two images belongs to the longer name); predictions
        nobody has corrected are left out. Returns what was done, naming the images left
        without a pair, in a sentence."""
        layers = inputs(viewer)
        images = [layer.name for layer in layers]
        opened_as_images = [layer.name for layer in layers if looks_like_labels(layer, images)]
        images = [name for name in images if name not in opened_as_images]
        owned: dict[str, list[str]] = {name: [] for name in images}
        for layer in viewer.layers:
            if not isinstance(layer, Labels) or is_uncorrected(layer):
                continue
            owners = [name for name in images if named_after(layer.name, name)]
            if owners:
                owned[max(owners, key=len)].append(layer.name)
        present = set(self.texts())
        added, missing, several = 0, [], []
        for name, labels in owned.items():
            if len(labels) != 1:
                (several if labels else missing).append(name)
            elif f"{name}{PAIR}{labels[0]}" not in present:
                self.add(name, labels[0])
                added += 1
        text = f"Added {added} pair(s)"
        if missing:
            text += "; no labels layer named after " + ", ".join(f"'{n}'" for n in missing)
        if opened_as_images:
            text += ("; " + ", ".join(f"'{n}'" for n in opened_as_images) + " look like "
                     "labels opened as images (napari opens TIFF files so): right-click, "
                     "Convert to Labels, then Add all again")
        if several:
            text += ("; more than one labels layer named after "
                     + ", ".join(f"'{n}'" for n in several) + " (add those with Add pair)")
        return text + "."

    def add_files(self, viewer, files=None, labels_folder=None) -> str:
        """Open image ``files`` and their label files as image and labels layers, as napari
        opens them (a layer already open from a file is taken as it is), and add a pair
        for each. Label files are looked for among the files, beside them, then in
        ``labels_folder``. Where ``files`` is None, both are asked for (the folder only if
        some images have no label file yet). Returns what was done in a sentence."""
        ask = files is None
        if ask:
            files, _ = QFileDialog.getOpenFileNames(
                None, "Images and their label files", "",
                IMAGE_FILES)
            if not files:
                return "No file was chosen."
        try:
            pairs, alone = pairs_among(files, labels_folder)
            if ask and alone:
                labels_folder = QFileDialog.getExistingDirectory(
                    None, f"Folder of the label files of {alone[0].name} and the others "
                    "(named as the images)", str(alone[0].parent.parent))
                if labels_folder:
                    pairs, alone = pairs_among(files, labels_folder)
        except NapariUNetError as err:
            return f"No file was opened: {err}"
        added, problems = 0, []
        for image, labels in pairs:
            before = list(viewer.layers)
            try:
                img = _opened(viewer, image, Image)
                lab = _opened(viewer, labels, Labels)  # above it, as it is shown
            except Exception as err:  # napari's reader: a damaged file, float labels ...
                for layer in [layer for layer in viewer.layers if layer not in before]:
                    viewer.layers.remove(layer)  # no half of a pair left open
                problems.append(f"{image.name} or {labels.name} could not be opened "
                                f"({type(err).__name__}: {err})")
                continue
            if lab not in before and stem_of(labels) == stem_of(image):  # labels/a.tif
                lab.name = f"{img.name} labels"  # not 'a [1]' beside the image 'a'
            if f"{img.name}{PAIR}{lab.name}" not in self.texts():
                self.add(img.name, lab.name)
                added += 1
        text = f"Opened and added {added} pair(s)"
        if alone:
            text += ("; no label file for " + ", ".join(f.name for f in alone[:3])
                     + (" ..." if len(alone) > 3 else "") + " (name each label file as its "
                     f"image with an ending such as _masks: {alone[0].stem}_masks.tif)")
        return text + "".join(f"; {p}" for p in problems) + "."


def _opened(viewer, path: Path, kind):
    """The layer of ``kind`` that napari opened from ``path``: already open, or opened now
    (a label file as labels)."""
    for layer in viewer.layers:
        source = getattr(layer.source, "path", None)
        if isinstance(layer, kind) and source and Path(source).resolve() == path.resolve():
            return layer
    layers = viewer.open(str(path), plugin="napari",
                         layer_type="labels" if kind is Labels else None)
    if len(layers) != 1 or not isinstance(layers[0], kind):
        raise ValueError(f"napari opened it as {len(layers)} layer(s), not one "
                         f"{kind.__name__.lower()} layer")
    return layers[0]
