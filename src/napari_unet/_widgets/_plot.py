"""A small live plot of the training loss and the validation score per epoch."""

from __future__ import annotations

from qtpy.QtCore import QPointF, Qt
from qtpy.QtGui import QColor, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import QSizePolicy, QWidget


class LossPlot(QWidget):
    """Loss (orange, left scale) and validation score (blue, 0..1) against epochs."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.loss: list[float] = []
        self.score: list[float] = []
        self.setMinimumHeight(120)
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Fixed)

    def clear(self) -> None:
        self.loss.clear()
        self.score.clear()
        self.update()

    def add(self, loss: float, score: float | None) -> None:
        self.loss.append(loss)
        if score is not None:
            self.score.append(score)
        self.update()

    def _line(self, values, lo, hi, rect) -> QPolygonF:
        n = max(len(self.loss), 2) - 1
        span = (hi - lo) or 1.0
        return QPolygonF([
            QPointF(rect.left() + rect.width() * i / n,
                    rect.bottom() - rect.height() * (v - lo) / span)
            for i, v in enumerate(values)
        ])

    def paintEvent(self, _event) -> None:
        p = QPainter(self)
        p.setRenderHint(QPainter.Antialiasing)
        rect = self.rect().adjusted(8, 16, -8, -8)
        p.setPen(QPen(QColor(128, 128, 128)))
        p.drawRect(rect)
        text = "loss (orange), validation score (blue)" if self.loss else "no epoch yet"
        p.drawText(self.rect().adjusted(8, 0, 0, 0), Qt.AlignTop | Qt.AlignLeft, text)
        for values, hi, color in ((self.loss, max(self.loss, default=1.0), (255, 140, 0)),
                                  (self.score, 1.0, (60, 140, 255))):
            line = self._line(values, 0.0, hi, rect)
            p.setPen(QPen(QColor(*color), 2))
            p.setBrush(QColor(*color))
            if len(values) > 1:
                p.drawPolyline(line)
            elif values:  # one epoch so far: a dot
                p.drawEllipse(line[0], 3, 3)
        p.end()
