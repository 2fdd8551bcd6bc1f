"""Qt plumbing the plugin's docks share: the dock a widget sits in, and a vertical scroll area.

A docked widget's minimum height adds to napari's window: forms and plots
that scroll keep that window within a laptop's screen.
"""

from __future__ import annotations

from typing import Optional

from qtpy.QtCore import QEvent, QSize, Qt
from qtpy.QtWidgets import QDockWidget, QFrame, QMainWindow, QScrollArea, QWidget


def dock_of(widget: QWidget) -> Optional[QDockWidget]:
    """The dock widget ``widget`` sits in (itself, a parent or a further ancestor), or None."""
    w = widget
    while w is not None and not isinstance(w, QDockWidget):
        w = w.parentWidget()
    return w


def docked_in(widget: QWidget) -> tuple[Optional[QDockWidget], Optional[QMainWindow]]:
    """``(dock, main window)`` when ``widget`` is in a dock docked in a main window (not floating), else Nones."""
    dock = dock_of(widget)
    main = dock.parentWidget() if dock is not None else None
    if not isinstance(main, QMainWindow) or dock.isFloating():
        return None, None
    return dock, main


class _VerticalScroll(QScrollArea):
    """A scroll area as wide as its page needs (it never cuts a form's right edge off) and a few lines tall."""

    def minimumSizeHint(self) -> QSize:  # noqa: N802 - Qt's name
        hint = super().minimumSizeHint()
        page = self.widget()
        if page is None:
            return hint
        width = page.minimumSizeHint().width() + self.verticalScrollBar().sizeHint().width() + 2 * self.frameWidth()
        return QSize(max(hint.width(), width), hint.height())

    def event(self, event) -> bool:
        if event.type() == QEvent.Type.LayoutRequest:   # the page's content changed: so may its width
            self.updateGeometry()
        return super().event(event)


def vertical_scroll(page: QWidget, parent: Optional[QWidget] = None) -> QScrollArea:
    """A frameless scroll area showing ``page`` at the area's width, scrolling vertically only; at least as wide
    as the page's minimum, so only the height gives."""
    area = _VerticalScroll(parent)
    area.setWidgetResizable(True)
    area.setFrameShape(QFrame.Shape.NoFrame)
    area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    area.setWidget(page)
    return area
