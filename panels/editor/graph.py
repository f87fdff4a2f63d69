"""The step graph on a ``QGraphicsScene``: step cards with ports, dependency edges, drag and drop.

- :class:`StepNode` draws one step: a card with the kind's colour, the step's name, id and kind,
  chips for timeout / retries / condition, and a badge when validation found problems. Its
  input port sits on the top edge, its output port on the bottom edge (the flow runs downwards).
- :class:`EdgeItem` draws a dependency from the dependency's output port to the dependant's input
  port (a selectable curve with an arrow) or, dashed, an error handler.
- :class:`EditorScene` turns gestures into requests, never edits the model itself: a step kind
  dropped from the palette (``kind_dropped``), a drag from a port to another step
  (``link_requested``), steps dragged to a new place (``steps_moved``). The editor turns them
  into undoable edits and shows the result with :meth:`EditorScene.show_template`.
- :class:`EditorView` zooms with the wheel, pans with the middle button (or Space + drag), and
  asks for deletion of the selection with Delete / Backspace.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from PySide6.QtCore import QLineF, QMimeData, QPoint, QPointF, QRect, QRectF, Qt, Signal
from PySide6.QtGui import (
    QBrush,
    QColor,
    QFont,
    QFontMetricsF,
    QKeyEvent,
    QMouseEvent,
    QPainter,
    QPainterPath,
    QPainterPathStroker,
    QPen,
    QPolygonF,
    QResizeEvent,
    QShowEvent,
    QWheelEvent,
)
from PySide6.QtWidgets import (
    QGraphicsItem,
    QGraphicsObject,
    QGraphicsPathItem,
    QGraphicsScene,
    QGraphicsSceneDragDropEvent,
    QGraphicsSceneHoverEvent,
    QGraphicsSceneMouseEvent,
    QGraphicsView,
    QStyleOptionGraphicsItem,
    QWidget,
)

from core.templates import Step, WorkflowTemplate
from panels.editor.kinds import BUILTIN_GROUP, KindCatalog, KindInfo
from panels.editor.layout import NODE_HEIGHT, NODE_WIDTH
from panels.editor.validation import Issue
from panels.theme import Theme, current_theme, theme_events

__all__ = ["MIME_KIND", "EdgeItem", "EditorScene", "EditorView", "NodeMark", "StepNode",
           "group_color", "kind_mime", "set_group_order"]

MIME_KIND = "application/x-labconsole-step-kind"
"""MIME type of a step kind dragged from the palette (payload: the kind, UTF-8)."""

FONT_FAMILY = "DejaVu Sans"


@dataclass(frozen=True)
class EditorColors:
    """The canvas's colours in the current theme (``colors`` of ``resources/themes/*.json``)."""

    ink: QColor
    muted: QColor
    card: QColor
    card_error: QColor
    card_border: QColor
    chip_bg: QColor
    chip_fg: QColor
    shadow: QColor
    port: QColor
    selected: QColor
    error: QColor
    warning: QColor
    edge: QColor
    handler_edge: QColor
    added: QColor
    removed: QColor
    changed: QColor
    changed_text: QColor
    grid: QColor
    background: QColor
    builtin: QColor

    @classmethod
    def of(cls, theme: Theme) -> EditorColors:
        c = theme.color
        return cls(c("node_ink"), c("node_muted"), c("node_bg"), c("node_error_bg"), c("node_border"),
                   c("node_chip_bg"), c("node_chip_fg"), c("node_shadow"), c("port"), c("selected"),
                   c("problem"), c("problem_warn"), c("edge"), c("edge_handler"), c("diff_added"),
                   c("diff_removed"), c("diff_changed"), c("diff_changed_text"), c("canvas_grid"),
                   c("canvas_bg"), c("builtin"))


_colors: dict[str, EditorColors] = {}


def colors() -> EditorColors:
    """The canvas colours of the current theme, resolved once per theme (then looked up)."""
    theme = current_theme()
    found = _colors.get(theme.name)
    if found is None:
        found = _colors[theme.name] = EditorColors.of(theme)
    return found


# Okabe-Ito based, one per instrument kind (red is kept for problems).
_GROUP_COLORS = ("#0072b2", "#009e73", "#e69f00", "#56b4e9", "#cc79a7", "#6a51a3", "#8c6d31",
                 "#3f7f8c")


_GROUP_ORDER: dict[str, int] = {}


def set_group_order(groups: Iterable[str]) -> None:
    """Give the catalog's instrument kinds distinct colours, in this order (the palette's)."""
    _GROUP_ORDER.clear()
    for i, g in enumerate(g for g in groups if g != BUILTIN_GROUP):
        _GROUP_ORDER[g] = i


def group_color(group: str) -> QColor:
    """The colour of an instrument kind; grey for the built-ins. Kinds of the catalog get
    distinct colours (:func:`set_group_order`); others one derived from their name."""
    if group == BUILTIN_GROUP:
        return colors().builtin
    index = _GROUP_ORDER.get(group, sum(map(ord, group)))
    return QColor(_GROUP_COLORS[index % len(_GROUP_COLORS)])


def kind_mime(kind: str) -> QMimeData:
    """The MIME data the palette drags for ``kind``."""
    data = QMimeData()
    data.setData(MIME_KIND, kind.encode())
    data.setText(kind)
    return data


def _font(px: float, bold: bool = False) -> QFont:
    f = QFont(FONT_FAMILY)
    f.setPixelSize(round(px))
    f.setBold(bold)
    return f


def _seconds(value: float) -> str:
    if value >= 3600 and value % 3600 == 0:
        return f"{value / 3600:g} h"
    if value >= 60 and value % 60 == 0:
        return f"{value / 60:g} min"
    return f"{value:g} s"


@dataclass
class NodeMark:
    """How a diff view marks a node: ``added``, ``removed``, ``changed`` (with details)."""

    status: str
    details: list[str] = field(default_factory=list)


class Port(QGraphicsObject):
    """A step's input (top) or output (bottom) port; drag from it to another step to link."""

    RADIUS = 7.0

    def __init__(self, node: StepNode, output: bool) -> None:
        super().__init__(node)
        self.node = node
        self.output = output
        self._hover = False
        self.setAcceptHoverEvents(True)
        self.setCursor(Qt.CursorShape.CrossCursor)
        self.setToolTip("Drag to another step: it will wait for this one" if output
                        else "Drag to another step: this one will wait for it")
        self.setZValue(2)

    def boundingRect(self) -> QRectF:  # noqa: N802
        r = self.RADIUS + 3
        return QRectF(-r, -r, 2 * r, 2 * r)

    def shape(self) -> QPainterPath:
        path = QPainterPath()
        path.addEllipse(self.boundingRect())
        return path

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem,
              widget: QWidget | None = None) -> None:
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        r = self.RADIUS + (1.5 if self._hover else 0)
        painter.setPen(QPen(colors().selected if self._hover else colors().port, 1.8))
        painter.setBrush(colors().selected if self._hover else (colors().port if self.output else colors().card))
        painter.drawEllipse(QPointF(0, 0), r, r)

    def hoverEnterEvent(self, event: QGraphicsSceneHoverEvent) -> None:  # noqa: N802
        self._hover = True
        self.update()

    def hoverLeaveEvent(self, event: QGraphicsSceneHoverEvent) -> None:  # noqa: N802
        self._hover = False
        self.update()

    def mousePressEvent(self, event: QGraphicsSceneMouseEvent) -> None:  # noqa: N802
        scene = self.scene()
        if event.button() == Qt.MouseButton.LeftButton and isinstance(scene, EditorScene) \
                and scene.editable:
            scene.begin_link(self)
            event.accept()
        else:
            event.ignore()

    def mouseMoveEvent(self, event: QGraphicsSceneMouseEvent) -> None:  # noqa: N802
        scene = self.scene()
        if isinstance(scene, EditorScene):
            scene.update_link(event.scenePos())

    def mouseReleaseEvent(self, event: QGraphicsSceneMouseEvent) -> None:  # noqa: N802
        scene = self.scene()
        if isinstance(scene, EditorScene):
            scene.end_link(event.scenePos())


class StepNode(QGraphicsObject):
    """One step as a card. ``step_id`` identifies it; :meth:`set_data` updates what it shows."""

    def __init__(self, step: Step, info: KindInfo | None, editable: bool) -> None:
        super().__init__()
        self.step_id = step.id
        self.step = step
        self.info = info
        self.issues: list[Issue] = []
        self.mark: NodeMark | None = None
        flags = QGraphicsItem.GraphicsItemFlag.ItemIsSelectable \
            | QGraphicsItem.GraphicsItemFlag.ItemSendsGeometryChanges
        if editable:
            flags |= QGraphicsItem.GraphicsItemFlag.ItemIsMovable
        self.setFlags(flags)
        self.setAcceptHoverEvents(True)
        self.setZValue(1)
        self.edges: list[EdgeItem] = []
        self.in_port = Port(self, output=False)
        self.out_port = Port(self, output=True)
        self.in_port.setPos(NODE_WIDTH / 2, 0)
        self.out_port.setPos(NODE_WIDTH / 2, NODE_HEIGHT)
        self.in_port.setVisible(editable)
        self.out_port.setVisible(editable)
        self._update_tooltip()

    # -- data
    def set_data(self, step: Step, info: KindInfo | None, issues: list[Issue],
                 mark: NodeMark | None = None) -> None:
        self.step, self.info, self.issues, self.mark = step, info, issues, mark
        self._update_tooltip()
        self.update()

    def _update_tooltip(self) -> None:
        s = self.step
        lines = [f"<b>{s.label}</b> ({s.id})", s.kind]
        if self.info is not None and self.info.instruments:
            lines.append("Runs on " + ", ".join(self.info.instruments))
        if s.depends_on:
            lines.append("After " + ", ".join(s.depends_on))
        if s.condition:
            lines.append(f"Only if {s.condition}")
        for issue in self.issues:
            lines.append(f"<span style='color:{colors().error.name() if issue.severity == 'error' else colors().warning.name()}'>"
                         f"{'✕' if issue.severity == 'error' else '⚠'} {issue.message}</span>")
        if self.mark is not None:
            lines += [f"{self.mark.status}: {d}" for d in self.mark.details] or [self.mark.status]
        self.setToolTip("<br>".join(lines))

    @property
    def kind_group(self) -> str:
        if self.info is not None:
            return self.info.group
        return BUILTIN_GROUP if self.step.is_builtin else self.step.kind.partition(".")[0]

    def input_point(self) -> QPointF:
        return self.mapToScene(QPointF(NODE_WIDTH / 2, 0))

    def output_point(self) -> QPointF:
        return self.mapToScene(QPointF(NODE_WIDTH / 2, NODE_HEIGHT))

    # -- painting
    def boundingRect(self) -> QRectF:  # noqa: N802
        return QRectF(-6, -12, NODE_WIDTH + 20, NODE_HEIGHT + 24)

    def shape(self) -> QPainterPath:
        path = QPainterPath()
        path.addRoundedRect(QRectF(0, 0, NODE_WIDTH, NODE_HEIGHT), 7, 7)
        return path

    def _chips(self) -> list[str]:
        s = self.step
        chips = []
        if s.timeout is not None:
            chips.append(f"◷ {_seconds(s.timeout)}")
        if s.retry_policy is not None and s.retry_policy.max_attempts > 1:
            chips.append(f"↻ {s.retry_policy.max_attempts}×")
        if s.condition:
            chips.append("if …")
        if s.input_mapping:
            chips.append(f"⇢ {len(s.input_mapping)}")
        if s.kind == "delay":
            seconds = s.parameters.get("seconds", s.parameters.get("duration"))
            if isinstance(seconds, int | float):
                chips.insert(0, f"wait {_seconds(float(seconds))}")
        return chips

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem,
              widget: QWidget | None = None) -> None:
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.setRenderHint(QPainter.RenderHint.TextAntialiasing)
        rect = QRectF(0, 0, NODE_WIDTH, NODE_HEIGHT)
        errors = [i for i in self.issues if i.severity == "error"]
        warnings = [i for i in self.issues if i.severity == "warning"]
        removed = self.mark is not None and self.mark.status == "removed"
        if removed:
            painter.setOpacity(0.6)

        # shadow, card and colour bar
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(colors().shadow)
        painter.drawRoundedRect(rect.translated(0, 2.5), 7, 7)
        painter.setBrush(colors().card_error if errors else colors().card)
        painter.drawRoundedRect(rect, 7, 7)
        bar = QPainterPath()
        bar.addRoundedRect(QRectF(0, 0, 14, NODE_HEIGHT), 7, 7)
        clip = QPainterPath()
        clip.addRect(QRectF(0, 0, 7, NODE_HEIGHT))
        painter.setBrush(group_color(self.kind_group))
        painter.drawPath(bar.intersected(clip))

        # border: selection > diff mark > problems > plain
        pen = QPen(colors().card_border, 1.2)
        if self.mark is not None:
            colour = {"added": colors().added, "removed": colors().removed, "changed": colors().changed}.get(self.mark.status)
            if colour is not None:
                pen = QPen(colour, 2.6)
                if removed:
                    pen.setStyle(Qt.PenStyle.DashLine)
        elif errors:
            pen = QPen(colors().error, 2.4)
        elif warnings:
            pen = QPen(colors().warning, 1.8)
        if self.isSelected():
            pen = QPen(colors().selected, 3.0)
        painter.setPen(pen)
        painter.setBrush(Qt.BrushStyle.NoBrush)
        painter.drawRoundedRect(rect, 7, 7)

        # text: name, id · kind, chips
        left, right = 16.0, NODE_WIDTH - 10.0
        badge = 24.0 if (errors or warnings) and self.mark is None else 0.0
        title_font = _font(13.5, bold=True)
        painter.setFont(title_font)
        painter.setPen(colors().ink)
        title = QFontMetricsF(title_font).elidedText(self.step.label, Qt.TextElideMode.ElideRight,
                                                     right - left - badge)
        painter.drawText(QRectF(left, 7, right - left - badge, 19),
                         Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter, title)
        small = _font(11)
        painter.setFont(small)
        painter.setPen(colors().muted)
        sub = self.step.kind if self.step.label == self.step.id else f"{self.step.id} · {self.step.kind}"
        sub = QFontMetricsF(small).elidedText(sub, Qt.TextElideMode.ElideMiddle, right - left)
        painter.drawText(QRectF(left, 27, right - left, 16),
                         Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter, sub)
        x = left
        chip_font = _font(10.5)
        painter.setFont(chip_font)
        metrics = QFontMetricsF(chip_font)
        for chip in self._chips():
            w = metrics.horizontalAdvance(chip) + 10
            if x + w > right:
                break
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(colors().chip_bg)
            painter.drawRoundedRect(QRectF(x, 49, w, 18), 9, 9)
            painter.setPen(colors().chip_fg)
            painter.drawText(QRectF(x, 49, w, 18), Qt.AlignmentFlag.AlignCenter, chip)
            x += w + 5

        # problem badge (top right) or diff tag
        if badge:
            colour = colors().error if errors else colors().warning
            centre = QPointF(NODE_WIDTH - 14, 15)
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(colour)
            painter.drawEllipse(centre, 10, 10)
            painter.setPen(QColor("white"))
            painter.setFont(_font(11.5, bold=True))
            painter.drawText(QRectF(centre.x() - 10, centre.y() - 10, 20, 20),
                             Qt.AlignmentFlag.AlignCenter, str(len(errors or warnings)))
        if self.mark is not None and self.mark.status in ("added", "removed", "changed"):
            text = {"added": "+ added", "removed": "− removed",
                    "changed": f"~ {len(self.mark.details)} change{'s' if len(self.mark.details) != 1 else ''}"
                    }[self.mark.status]
            colour = {"added": colors().added, "removed": colors().removed, "changed": colors().changed}[self.mark.status]
            tag_font = _font(10.5, bold=True)
            w = QFontMetricsF(tag_font).horizontalAdvance(text) + 12
            tag = QRectF(NODE_WIDTH - w - 6, -9, w, 18)
            painter.setOpacity(1.0)
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(colour)
            painter.drawRoundedRect(tag, 9, 9)
            painter.setPen(QColor("white"))
            painter.setFont(tag_font)
            painter.drawText(tag, Qt.AlignmentFlag.AlignCenter, text)

    def itemChange(self, change: QGraphicsItem.GraphicsItemChange, value: object) -> object:  # noqa: N802
        scene = self.scene()
        if change == QGraphicsItem.GraphicsItemChange.ItemPositionChange and isinstance(value, QPointF) \
                and isinstance(scene, EditorScene) and scene.dragging:
            return QPointF(round(value.x() / 10) * 10, round(value.y() / 10) * 10)  # snap to grid
        if change == QGraphicsItem.GraphicsItemChange.ItemPositionHasChanged:
            for edge in self.edges:
                edge.update_path()
        return super().itemChange(change, value)


class EdgeItem(QGraphicsPathItem):
    """A dependency (``dependency`` -> ``dependant``) or, dashed, an error handler."""

    def __init__(self, source: StepNode, target: StepNode, *, handler: bool = False,
                 selectable: bool = True, route: list[QPointF] | None = None) -> None:
        super().__init__()
        self.source, self.target, self.handler = source, target, handler
        self.route = route or []
        """Lane points the edge passes through while both ends stay where the layout put them."""
        self._route_ends = (source.pos(), target.pos())
        self.problem = False
        self.mark: str | None = None
        self.setZValue(0 if not handler else -0.5)
        if selectable and not handler:
            self.setFlag(QGraphicsItem.GraphicsItemFlag.ItemIsSelectable)
        self.setAcceptHoverEvents(True)
        source.edges.append(self)
        target.edges.append(self)
        self.setToolTip(f"{target.step_id} runs after {source.step_id}" if not handler
                        else f"if {source.step_id} fails, {target.step_id} runs")
        self._arrow = QPolygonF()
        self.update_path()

    @property
    def key(self) -> tuple[str, str]:
        return (self.source.step_id, self.target.step_id)

    def detach(self) -> None:
        for node in (self.source, self.target):
            if self in node.edges:
                node.edges.remove(self)

    def update_path(self) -> None:
        self.prepareGeometryChange()
        b_tip = self.target.input_point() - QPointF(0, Port.RADIUS + 1)
        if self.handler:  # from the failing step's right side down into the handler
            a = self.source.mapToScene(QPointF(NODE_WIDTH, NODE_HEIGHT / 2))
            dx = max(50.0, abs(b_tip.x() - a.x()) * 0.5)
            dy = max(50.0, abs(b_tip.y() - a.y()) * 0.5)
            path = QPainterPath(a)
            path.cubicTo(a + QPointF(dx, 0), b_tip - QPointF(0, dy), b_tip)
        elif self.route and (self.source.pos(), self.target.pos()) == self._route_ends:
            points = [self.source.output_point(), *self.route, b_tip]
            path = QPainterPath(points[0])
            for i in range(1, len(points)):
                p, q = points[i - 1], points[i]
                if i % 2 == 0:  # through a lane: straight down
                    path.lineTo(q)
                else:
                    dy = max(20.0, (q.y() - p.y()) * 0.5)
                    path.cubicTo(p + QPointF(0, dy), q - QPointF(0, dy), q)
        else:
            a = self.source.output_point()
            dy = max(40.0, abs(b_tip.y() - a.y()) * 0.5)
            path = QPainterPath(a)
            path.cubicTo(a + QPointF(0, dy), b_tip - QPointF(0, dy), b_tip)
        self._arrow = QPolygonF([b_tip + QPointF(0, 1), b_tip + QPointF(-6, -10),
                                 b_tip + QPointF(6, -10)])
        self.setPath(path)

    def shape(self) -> QPainterPath:
        stroker = QPainterPathStroker()
        stroker.setWidth(14)
        return stroker.createStroke(self.path())

    def boundingRect(self) -> QRectF:  # noqa: N802
        return super().boundingRect().united(self._arrow.boundingRect()).adjusted(-8, -8, 8, 8)

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem,
              widget: QWidget | None = None) -> None:
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        colour, width, style = colors().edge, 2.0, Qt.PenStyle.SolidLine
        if self.handler:
            colour, width, style = colors().handler_edge, 1.8, Qt.PenStyle.DashLine
        if self.mark == "added":
            colour, width = colors().added, 3.0
        elif self.mark == "removed":
            colour, width, style = colors().removed, 2.6, Qt.PenStyle.DashLine
        if self.problem:
            colour, width = colors().error, 3.0
        if self.isSelected():
            colour, width = colors().selected, 3.4
        painter.setPen(QPen(colour, width, style, Qt.PenCapStyle.RoundCap))
        painter.setBrush(Qt.BrushStyle.NoBrush)
        painter.drawPath(self.path())
        if not self._arrow.isEmpty():
            painter.setPen(QPen(colour, 1))
            painter.setBrush(QBrush(colour))
            painter.drawPolygon(self._arrow)
        if self.handler:
            mid = self.path().pointAtPercent(0.5)
            painter.setFont(_font(10.5, bold=True))
            painter.setPen(colors().handler_edge)
            painter.drawText(QRectF(mid.x() + 4, mid.y() - 9, 80, 18),
                             Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter, "on failure")


class EditorScene(QGraphicsScene):
    """The canvas of one template. Gestures become signals; the model comes in through
    :meth:`show_template`."""

    kind_dropped = Signal(str, QPointF)
    """A palette kind was dropped; the point is where the node's top-left should go."""
    link_requested = Signal(str, str)
    """(dependency, dependant): a port was dragged from one step to another."""
    steps_moved = Signal(dict)
    """{step id: (x, y)} of the steps the operator dragged."""

    def __init__(self, parent: QWidget | None = None, *, editable: bool = True) -> None:
        super().__init__(parent)
        theme_events().changed.connect(self._on_theme)
        self.editable = editable
        self.nodes: dict[str, StepNode] = {}
        self.edges: list[EdgeItem] = []
        self._link_from: Port | None = None
        self._link_line: QGraphicsPathItem | None = None
        self._pressed: dict[str, QPointF] = {}
        self.dragging = False
        """True while the operator drags steps (they snap to a 10 px grid)."""
        self.setItemIndexMethod(QGraphicsScene.ItemIndexMethod.NoIndex)

    # -- model in
    def show_template(self, t: WorkflowTemplate, catalog: KindCatalog,
                      positions: Mapping[str, tuple[float, float]], issues: Iterable[Issue] = (),
                      marks: Mapping[str, NodeMark] | None = None,
                      edge_marks: Mapping[tuple[str, str], str] | None = None,
                      handlers: bool = True,
                      routes: Mapping[tuple[str, str], list[tuple[float, float]]] | None = None
                      ) -> None:
        """Show ``t``: nodes by step id (kept across calls), edges rebuilt.

        ``routes`` are lanes from the layered layout for dependencies that skip layers; a lane
        another step now covers is not used.
        """
        by_step: dict[str, list[Issue]] = {}
        bad_edges: set[tuple[str, str]] = set()
        for issue in issues:
            if issue.step_id is not None:
                by_step.setdefault(issue.step_id, []).append(issue)
            bad_edges.update(issue.edges)
        seen = set()
        for s in t.steps:
            if s.id in seen:
                continue  # a duplicate id: the issue list names it
            seen.add(s.id)
            node = self.nodes.get(s.id)
            info = catalog.get(s.kind)
            if node is None:
                node = StepNode(s, info, self.editable)
                self.addItem(node)
                self.nodes[s.id] = node
            node.set_data(s, info, by_step.get(s.id, []), (marks or {}).get(s.id))
            x, y = positions.get(s.id, (0.0, 0.0))
            if node.pos() != QPointF(x, y) and self.mouseGrabberItem() is not node:
                node.setPos(x, y)
        for sid in [k for k in self.nodes if k not in seen]:
            node = self.nodes.pop(sid)
            for edge in list(node.edges):
                edge.detach()
            self.removeItem(node)
        for edge in self.edges:
            edge.detach()
            self.removeItem(edge)
        self.edges = []
        for s in t.steps:
            target = self.nodes.get(s.id)
            for dep in s.depends_on:
                source = self.nodes.get(dep)
                if source is not None and target is not None and source is not target:
                    lane = self._free_lane((routes or {}).get((dep, s.id)), source, target)
                    edge = EdgeItem(source, target, selectable=self.editable, route=lane)
                    edge.problem = (dep, s.id) in bad_edges
                    edge.mark = (edge_marks or {}).get((dep, s.id))
                    self.addItem(edge)
                    self.edges.append(edge)
        if handlers:
            for failing, handler in t.error_handlers.items():
                source, target = self.nodes.get(failing), self.nodes.get(handler)
                if source is not None and target is not None and source is not target:
                    edge = EdgeItem(source, target, handler=True, selectable=False)
                    self.addItem(edge)
                    self.edges.append(edge)
        self.fit_scene_rect()

    def _free_lane(self, route: list[tuple[float, float]] | None, source: StepNode,
                   target: StepNode) -> list[QPointF] | None:
        if not route:
            return None
        points = [QPointF(x, y) for x, y in route]
        for i in range(0, len(points) - 1, 2):
            lane = QRectF(points[i].x() - 6, points[i].y(), 12, points[i + 1].y() - points[i].y())
            for node in self.nodes.values():
                if node is not source and node is not target and node.sceneBoundingRect().intersects(lane):
                    return None
        return points

    def fit_scene_rect(self) -> None:
        rect = self.itemsBoundingRect() if self.nodes else QRectF(0, 0, 600, 400)
        self.setSceneRect(rect.adjusted(-300, -200, 300, 200))

    # -- selection
    def selected_step_ids(self) -> list[str]:
        return [i.step_id for i in self.selectedItems() if isinstance(i, StepNode)]

    def selected_edges(self) -> list[tuple[str, str]]:
        return [i.key for i in self.selectedItems() if isinstance(i, EdgeItem) and not i.handler]

    def select_step(self, step_id: str | None) -> None:
        self.clearSelection()
        node = self.nodes.get(step_id or "")
        if node is not None:
            node.setSelected(True)

    def edge(self, dependency: str, dependant: str) -> EdgeItem | None:
        for e in self.edges:
            if not e.handler and e.key == (dependency, dependant):
                return e
        return None

    # -- linking ports
    def begin_link(self, port: Port) -> None:
        self._link_from = port
        self._link_line = QGraphicsPathItem()
        pen = QPen(colors().selected, 2.2, Qt.PenStyle.DashLine)
        self._link_line.setPen(pen)
        self._link_line.setZValue(5)
        self.addItem(self._link_line)
        self.update_link(port.scenePos())

    def update_link(self, pos: QPointF) -> None:
        if self._link_from is None or self._link_line is None:
            return
        start = self._link_from.scenePos()
        path = QPainterPath(start)
        dy = 50.0 if self._link_from.output else -50.0
        path.cubicTo(start + QPointF(0, dy), pos - QPointF(0, dy), pos)
        self._link_line.setPath(path)

    def node_at(self, pos: QPointF) -> StepNode | None:
        for item in self.items(pos):
            if isinstance(item, StepNode):
                return item
            if isinstance(item, Port):
                return item.node
        return None

    def end_link(self, pos: QPointF) -> None:
        port, line = self._link_from, self._link_line
        self._link_from = self._link_line = None
        if line is not None:
            self.removeItem(line)
        if port is None:
            return
        target = self.node_at(pos)
        if target is None or target is port.node:
            return
        if port.output:
            self.link_requested.emit(port.node.step_id, target.step_id)
        else:
            self.link_requested.emit(target.step_id, port.node.step_id)

    # -- moving steps
    def mousePressEvent(self, event: QGraphicsSceneMouseEvent) -> None:  # noqa: N802
        super().mousePressEvent(event)
        self._pressed = {i.step_id: i.pos() for i in self.selectedItems() if isinstance(i, StepNode)}
        self.dragging = isinstance(self.mouseGrabberItem(), StepNode)

    def mouseReleaseEvent(self, event: QGraphicsSceneMouseEvent) -> None:  # noqa: N802
        super().mouseReleaseEvent(event)
        self.dragging = False
        moved = {sid: (node.pos().x(), node.pos().y()) for sid, before in self._pressed.items()
                 if (node := self.nodes.get(sid)) is not None and node.pos() != before}
        self._pressed = {}
        if moved:
            self.steps_moved.emit(moved)

    # -- dropping kinds from the palette
    def dragEnterEvent(self, event: QGraphicsSceneDragDropEvent) -> None:  # noqa: N802
        if self.editable and event.mimeData().hasFormat(MIME_KIND):
            event.setDropAction(Qt.DropAction.CopyAction)
            event.accept()
        else:
            event.ignore()

    def dragMoveEvent(self, event: QGraphicsSceneDragDropEvent) -> None:  # noqa: N802
        self.dragEnterEvent(event)

    def dragLeaveEvent(self, event: QGraphicsSceneDragDropEvent) -> None:  # noqa: N802
        event.accept()

    def dropEvent(self, event: QGraphicsSceneDragDropEvent) -> None:  # noqa: N802
        if not (self.editable and event.mimeData().hasFormat(MIME_KIND)):
            event.ignore()
            return
        kind = bytes(event.mimeData().data(MIME_KIND).data()).decode()
        pos = event.scenePos() - QPointF(NODE_WIDTH / 2, NODE_HEIGHT / 2)
        event.setDropAction(Qt.DropAction.CopyAction)
        event.accept()
        self.kind_dropped.emit(kind, QPointF(round(pos.x() / 10) * 10, round(pos.y() / 10) * 10))

    def _on_theme(self, _theme: Theme) -> None:
        """Repaint the canvas, its steps and edges in the new theme's colours."""
        self.update()

    # -- background
    def drawBackground(self, painter: QPainter, rect: QRectF | QRect) -> None:  # noqa: N802
        painter.fillRect(rect, colors().background)
        step = 20
        left = int(rect.left()) - int(rect.left()) % step
        top = int(rect.top()) - int(rect.top()) % step
        painter.setPen(QPen(colors().grid, 1.6))
        points = [QPointF(x, y) for x in range(left, int(rect.right()) + 1, step)
                  for y in range(top, int(rect.bottom()) + 1, step)]
        if len(points) < 40_000:  # zoomed far out: plain background
            painter.drawPoints(points)


class EditorView(QGraphicsView):
    """Zoom (wheel, anchored under the mouse), pan (middle button or Space + drag), delete."""

    delete_requested = Signal()
    zoom_changed = Signal(float)

    MIN_ZOOM, MAX_ZOOM = 0.2, 2.5

    def __init__(self, scene: EditorScene, parent: QWidget | None = None) -> None:
        super().__init__(scene, parent)
        self.setRenderHints(QPainter.RenderHint.Antialiasing | QPainter.RenderHint.TextAntialiasing)
        self.setDragMode(QGraphicsView.DragMode.RubberBandDrag)
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.AnchorUnderMouse)
        self.setViewportUpdateMode(QGraphicsView.ViewportUpdateMode.BoundingRectViewportUpdate)
        self.setAcceptDrops(True)
        self.viewport().setAcceptDrops(True)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self._pan_from: QPoint | None = None
        self._space = False
        self._fit_pending: tuple[float, float] | None = None

    @property
    def zoom(self) -> float:
        return self.transform().m11()

    def set_zoom(self, factor: float) -> None:
        factor = max(self.MIN_ZOOM, min(self.MAX_ZOOM, factor))
        self.scale(factor / self.zoom, factor / self.zoom)
        self.zoom_changed.emit(self.zoom)

    def zoom_by(self, steps: float) -> None:
        self.set_zoom(self.zoom * 1.15 ** steps)

    def fit(self, max_zoom: float = 1.0, min_zoom: float = 0.45) -> None:
        """Show every step, between ``min_zoom`` and ``max_zoom`` (when the view is not shown
        yet, as soon as it is)."""
        if not self.isVisible() or self.viewport().width() < 60:
            self._fit_pending = (max_zoom, min_zoom)
            return
        self._fit_pending = None
        scene = self.scene()
        rect = scene.itemsBoundingRect() if isinstance(scene, EditorScene) and scene.nodes else None
        if rect is None:
            self.set_zoom(1.0)
            return
        rect = rect.adjusted(-30, -30, 30, 30)
        view = self.viewport().rect()
        factor = min(view.width() / max(rect.width(), 1), view.height() / max(rect.height(), 1))
        self.set_zoom(max(min_zoom, min(max_zoom, factor)))
        if factor >= min_zoom:
            self.centerOn(rect.center())
        else:  # too big to fit readably: start at the top, where the flow begins
            self.centerOn(QPointF(rect.center().x(),
                                  rect.top() + self.viewport().height() / 2 / self.zoom))

    def showEvent(self, event: QShowEvent) -> None:  # noqa: N802
        super().showEvent(event)
        if self._fit_pending is not None:
            self.fit(*self._fit_pending)

    def resizeEvent(self, event: QResizeEvent) -> None:  # noqa: N802
        super().resizeEvent(event)
        if self._fit_pending is not None:
            self.fit(*self._fit_pending)

    def wheelEvent(self, event: QWheelEvent) -> None:  # noqa: N802
        if event.modifiers() & Qt.KeyboardModifier.ShiftModifier:
            super().wheelEvent(event)  # scroll
            return
        delta = event.angleDelta().y()
        if delta:
            self.zoom_by(delta / 120)
        event.accept()

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802
        if event.key() in (Qt.Key.Key_Delete, Qt.Key.Key_Backspace):
            self.delete_requested.emit()
            event.accept()
            return
        if event.key() == Qt.Key.Key_Space and not event.isAutoRepeat():
            self._space = True
            self.viewport().setCursor(Qt.CursorShape.OpenHandCursor)
        super().keyPressEvent(event)

    def keyReleaseEvent(self, event: QKeyEvent) -> None:  # noqa: N802
        if event.key() == Qt.Key.Key_Space and not event.isAutoRepeat():
            self._space = False
            self.viewport().unsetCursor()
        super().keyReleaseEvent(event)

    def mousePressEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        if event.button() == Qt.MouseButton.MiddleButton or (
                self._space and event.button() == Qt.MouseButton.LeftButton):
            self._pan_from = event.position().toPoint()
            self.viewport().setCursor(Qt.CursorShape.ClosedHandCursor)
            event.accept()
            return
        super().mousePressEvent(event)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        if self._pan_from is not None:
            now = event.position().toPoint()
            delta = now - self._pan_from
            self._pan_from = now
            self.horizontalScrollBar().setValue(self.horizontalScrollBar().value() - delta.x())
            self.verticalScrollBar().setValue(self.verticalScrollBar().value() - delta.y())
            event.accept()
            return
        super().mouseMoveEvent(event)

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        if self._pan_from is not None:
            self._pan_from = None
            self.viewport().unsetCursor()
            event.accept()
            return
        super().mouseReleaseEvent(event)

    def scene_point(self, step_id: str, where: str = "centre") -> QPoint:
        """Viewport coordinates of a step's centre, input port or output port (for tests and
        keyboard navigation)."""
        scene = self.scene()
        assert isinstance(scene, EditorScene)
        node = scene.nodes[step_id]
        local = {"centre": QPointF(NODE_WIDTH / 2, NODE_HEIGHT / 2 + 8),
                 "in": QPointF(NODE_WIDTH / 2, 0), "out": QPointF(NODE_WIDTH / 2, NODE_HEIGHT)}[where]
        return self.mapFromScene(node.mapToScene(local))


def edge_line(edge: EdgeItem) -> QLineF:
    """Start and end of an edge (diagnostics)."""
    path = edge.path()
    return QLineF(path.pointAtPercent(0), path.pointAtPercent(1))
