"""The Train widget's list of (image, labels, labelled-in) layer pairs, and *Add all*, which
pairs image layers with the labels layers named after them."""

from __future__ import annotations

import numpy as np
from napari.layers import Labels
from qtpy.QtWidgets import QListWidget, QPushButton, QVBoxLayout, QWidget

from ._forms import full_resolution
from ._outputs import inputs, is_uncorrected

PAIR, IN = "  ⟷  ", "  in  "
ADD_ALL = ("Pair every image layer with the labels layer named after it ('cells' with "
           "'cells labels' or a corrected 'cells segmentation'), each labelled in whole")


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
    buttons (``buttons``: *Add pair*, *Add all*, *Clear*)."""

    def __init__(self, add_pair, add_all) -> None:
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
                ("Clear", "Remove every pair from the list", self.list.clear)):
            button = QPushButton(text)
            button.setToolTip(tip)
            button.clicked.connect(action)
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
