"""The Experiments dock widget: run the in-silico experiments, show their readouts, add a result's layers.

For a model trained on the synthetic retina (the shipped one) each run is
also shown to that ground truth, by default (:func:`napari_retina.experiments.battery`
runs both): the overview gives model, reduced circuit and ground truth's
``present``, the table a ground-truth column, a line which kept channels
recover which of the truth's pathways, and the trace dock the truth's
response under the model's. The last run of each experiment in this viewer stays listed (the list is
rebuilt from ``results``, so napari refreshing its choices on layer changes
keeps it; a run of the same experiment on another cell replaces it, and the
overview says which cell each result is of); the results are all of the
current model: when the model changes they are cleared (the status line says
so), and a run that ends after the model changed is dropped; the table shows the chosen
experiment's readout, one row per key with its unit (each experiment module's ``UNITS``), a NaN's cell tooltip
saying why it is NaN (its ``NAN_REASONS``); each result's layers are placed below
the layers already shown, never on top.
"""

from __future__ import annotations

import html
import weakref
from typing import Optional, Union

import napari
import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, PushButton, Table
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QHeaderView, QStyle, QStyledItemDelegate, QStyleOptionViewItem

from ... import experiments
from ...attribution import MAX_STEPS
from ...experiments.base import unmet_of
from ..._progress import Cancelled
from ...experiments.battery import KEY_NUMBERS, UNITS, agreement, default_retina, trained_on_truth
from .._session import session
from .._viewer import StagedAdd
from .._tasks import Partial, Task, notify, one_sentence
from ... import viewer as nr_viewer
from ._common import TERMS, PARAMETER_HELP, offer_cells, parameter_widget, rich_label, scroll_contents, \
    scroll_within, steps_widget, tabify_when_docked, term_link

TABLE_HEIGHT = 130
"""Minimum height (px) of the readout table, so its rows are readable."""
NAME_COLUMN_PX = 110
"""Widest the readout table's name column starts (px), unless a part of a name between underscores needs more:
longer names wrap after their underscores (:func:`wrappable`); the value columns share the rest of the width."""
NAME_BREAK = "_\u200b"
"""An underscore as a readout name is drawn: followed by a zero-width space, where a long name may wrap."""
GAP = 0.1
"""Blank space between stacked results, as a fraction of the new result's height."""


SHOWN_ITEMS = 6
"""A list readout shows this many values in its table cell; its tooltip shows them all."""


def _cell(value, limit: Optional[int] = SHOWN_ITEMS) -> str:
    """A readout value as text: 4 significant digits, lists of more than ``limit`` values shortened (None: all)."""
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (float, np.floating)):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
        return "; ".join(value)   # sentences (a criterion's unmet clauses): the cell clips, the tooltip has all
    if isinstance(value, (list, tuple, np.ndarray)):
        items = [_cell(v, limit) for v in list(np.asarray(value, dtype=object).ravel())]
        if limit is None or len(items) <= limit:
            return "[" + ", ".join(items) + "]"
        return "[" + ", ".join(items[:limit]) + f", … ({len(items)} values)]"
    if isinstance(value, dict):
        return ", ".join(f"{k} {_cell(v, limit)}" for k, v in value.items())
    return str(value)


def _full(value) -> str:
    """A readout value in full, for its cell's tooltip: every value, and a dict one key per line."""
    if isinstance(value, dict):
        return "\n".join(f"{k}: {_cell(v, None)}" for k, v in value.items())
    return _cell(value, None)


def _shown(key: str, value):
    """What a readout's cell shows for ``value``: itself, but "none" for an empty ``unmet`` (every clause met;
    it read "[]")."""
    return "none" if key == "unmet" and not value else value


def _named(key: str, units: dict) -> str:
    """A readout row's name as the table shows it: the key, then its unit (``units``: the experiment's
    :func:`~napari_retina.experiments.readout_units`), "peak_before (spikes/bin)"."""
    return f"{key} ({units[key]})" if units.get(key) else key


def _has_nan(value) -> bool:
    """Whether a readout value is NaN or holds one."""
    if isinstance(value, dict):
        return any(_has_nan(v) for v in value.values())
    if isinstance(value, (list, tuple, np.ndarray)):
        return any(_has_nan(v) for v in list(np.asarray(value, dtype=object).ravel()))
    return isinstance(value, (float, np.floating)) and bool(np.isnan(value))


def _tip(value, name: str, key: str) -> str:
    """A value's cell tooltip: the value in full (:func:`_full`) and, where it is or holds a NaN, why."""
    return _full(value) + (f"\nNaN: {experiments.nan_reason(name, key)}" if _has_nan(value) else "")


def _keys(readout: dict, name: str = "") -> list:
    """The readout's keys in table order: ``present`` and why not (``unmet``), the experiment's key numbers
    (:data:`napari_retina.experiments.battery.KEY_NUMBERS`), then the rest."""
    first = ["present", "unmet", *KEY_NUMBERS.get(name, ())]
    return [k for k in first if k in readout] + [k for k in readout if k not in first]


def _columns(result, truth=None) -> dict:
    """The readouts the table shows side by side: the model's, its reduced circuit's (``readout["reduced"]``)
    and, with ``truth``, the ground truth's, titled "truth" ("ground truth" was cut to "round trut" in a dock of
    the default width, the value columns sharing it)."""
    columns = {"model": {k: v for k, v in result.readout.items() if k != "reduced"}}
    if isinstance(result.readout.get("reduced"), dict):
        columns["reduced"] = result.readout["reduced"]
    if truth is not None:
        columns["truth"] = truth.readout
    return columns


def readout_table(result, truth=None) -> dict:
    """One experiment's readouts as table columns: ``readout`` (the key and its unit, one row each,
    ``present`` and the key numbers first), then ``model``, ``reduced`` (its reduced circuit) and, with ``truth``
    (its ground truth's run), ``truth``; "" where a column has no such key."""
    columns = _columns(result, truth)
    keys = _keys(columns["model"], result.name)
    units = experiments.readout_units(result.name)
    return {"readout": [_named(k, units) for k in keys],
            **{col: [_cell(_shown(k, ro[k])) if k in ro else "" for k in keys] for col, ro in columns.items()}}


def readout_tooltips(result, truth=None) -> list[list[str]]:
    """Each row's full values (:func:`_full`) in :func:`readout_table`'s order and columns (after ``readout``),
    with, where a value is or holds a NaN, why (:func:`napari_retina.experiments.nan_reason`)."""
    columns = _columns(result, truth)
    return [[_tip(_shown(k, ro[k]), result.name, k) if k in ro else "" for ro in columns.values()]
            for k in _keys(columns["model"], result.name)]


def recovery_text(report: Optional[dict]) -> str:
    """Which ground-truth pathway each kept channel recovers (rich text, one line), from a
    :func:`~napari_retina.experiments.recovery_report`; "" without one."""
    if not report:
        return ""
    if "channels" not in report:
        return f"{term_link('recovers', 'recovery')}: not scored ({html.escape(str(report.get('error', '')))})"
    parts = []
    for row in report["channels"]:   # channels by number (the table's labels are in the tooltip): a short line
        channel = f"A{row['channel']}"
        if row["recovers"]:
            # the label's ON/OFF and fast/slow (METHOD.md's rules) are the model's own: say where they are not the
            # pathway's name ("A6 ≈ ON slow" beside layers named "A6 ON fast +" read as a contradiction)
            own = label_words(row.get("label")) or (str(row["polarity"]) if row.get("polarity_match") is False
                                                    else None)
            differs = own is not None and own != row["pathway"]
            parts.append(f"{channel} ≈ {html.escape(row['pathway'])}"
                         + (f" (labelled {html.escape(own)})" if differs else ""))
        else:
            parts.append(f"{channel}: none (closest {html.escape(row['pathway'])}, r {row['match_r']:.2f})")
    return f"kept channels {term_link('recovers', 'recover')} truth pathways: " + "; ".join(parts)


def label_words(label: Optional[str]) -> Optional[str]:
    """A channel label's polarity and kinetics ("ON fast" of "A6 ON fast +"); None when it has neither."""
    words = str(label or "").split()[1:]
    words = words[:-1] if words and words[-1] in ("+", "-") else words
    return " ".join(words) or None


def recovery_tooltip(report: Optional[dict]) -> str:
    """Each scored channel (its label) and its closest pathway's r, temporal and spatial, and the runner-up's on
    the temporal filter (what "closer to it than to any other" compares); why a label's ON/OFF can differ from
    the pathway's; plain text, a line each."""
    if not report or "channels" not in report:
        return ""
    lines = []
    for r in report["channels"]:
        others = {k: v for k, v in r.get("all_temporal_r", {}).items() if k != r["pathway"]}
        runner = max(others, key=others.get) if others else None
        name = r.get("label") or f"A{r['channel']}"
        lines.append(f"{name} → {r['pathway']}: temporal r {r['temporal_r']:.2f}, spatial r "
                     f"{r['spatial_r']:.2f}" + (f"; next {runner}, temporal r {others[runner]:.2f}" if runner else "")
                     + ("" if r["recovers"] else " (not recovered)"))
    return "\n".join(lines) + (f"\nrecovered: both r ≥ {report['threshold']:g}, and the temporal filter closer to "
                                "the pathway than to any other's\n(labelled): the channel's own label, ON/OFF from its "
                                "filter's first lobe and fast/slow from its latency (METHOD.md), is not the "
                                "pathway's name")


def unmet_text(result, truth=None) -> str:
    """Why the phenomenon is not present, per source (rich text, a line each): the clauses of its criterion that
    the model, its reduced circuit or the ground truth does not meet, with their values (each readout's
    ``unmet``); "" when every source shows it."""
    names = {"reduced": "reduced circuit"}
    why = [(names.get(label, label), unmet_of(readout)) for label, readout in _columns(result, truth).items()]
    return "<br>".join(f"<b>{html.escape(name)}</b> not present: " + "; ".join(html.escape(u) for u in unmet)
                       for name, unmet in why if unmet)


def terms_text(result) -> str:
    """Links to the definitions of the readout keys of ``result`` that docs/EXPERIMENTS.md defines (rich text)."""
    keys = [k for k in result.readout if k in TERMS]
    return ("what the readouts mean: " + " · ".join(term_link(k) for k in keys)) if keys else ""


def _cells(result) -> str:
    """``"cell 1"`` (``"cells 0, 2"``): the cell(s) a result analysed, or "" when it does not say."""
    cells = list(getattr(result, "cells", None) or [])
    return f"cell{'s' if len(cells) > 1 else ''} {', '.join(str(c) for c in cells)}" if cells else ""


def overview_text(results: dict, truths: Optional[dict] = None) -> str:
    """One line per experiment run: its cell and whether the phenomenon is present in the model, in its reduced
    circuit (with the circuit's explained variance of the model) and, when ``truths`` has the run's ground
    truth, in the truth (rich text)."""
    lines = []
    for name, res in results.items():
        ro = res.readout
        cells = f" ({_cells(res)})" if _cells(res) else ""
        ev = f" ({term_link('explained variance', 'EV')} {_cell(ro['explained_variance'])})" \
            if "explained_variance" in ro else ""
        parts = [f"model {_cell(bool(ro.get('present')))}"]
        if isinstance(ro.get("reduced"), dict) and "present" in ro["reduced"]:
            parts.append(f"reduced circuit{ev} {_cell(bool(ro['reduced']['present']))}")
        elif ev:
            parts.append(f"reduced circuit{ev}")
        truth = (truths or {}).get(name)
        fit = ""
        if truth is not None:
            parts.append(f"{term_link('ground truth')} {_cell(bool(truth.readout.get('present')))}")
            agree = agreement(res, truth)   # r alone hides a gain error, and the floors are in spikes per bin
            fit = (f"; the model's rate against the truth's on this movie: r {_cell(agree['r'])}, "
                   f"EV {_cell(agree['explained_variance'])}, gain {_cell(agree['gain'])}")
        lines.append(f"<b>{name}</b>{cells}: {term_link('present')}: " + ", ".join(parts) + fit)
    return "<br>".join(lines)


def stack_below(viewer, layers: list) -> None:
    """Move ``layers`` (just added) below every other layer of ``viewer``, so results do not overlap.

    The shift is along y (world units), applied to each layer's translate.
    """
    others = [layer for layer in viewer.layers if layer not in layers and layer.visible]
    if not others or not layers:
        return
    bottom = max(float(np.asarray(layer.extent.world)[1, -2]) for layer in others)
    ext = np.array([np.asarray(layer.extent.world)[:, -2] for layer in layers], float)
    top, height = float(ext[:, 0].min()), float(ext[:, 1].max() - ext[:, 0].min())
    shift = bottom - top + GAP * height
    if shift <= 0:
        return
    for layer in layers:
        translate = np.array(layer.translate, float)
        translate[-2] += shift
        layer.translate = translate


def peak_time_ms(result, stimulus_layer) -> float:
    """World time (ms) of ``result``'s largest response (its analysed cells' summed rate) on ``stimulus_layer``,
    the layer its stimulus was shown as, among the frames it attributed (an experiment attributes frames near its
    events only, 287 of anticipation's 4,726: the rate's peak fell between them and the maps there were blank);
    among all frames when it attributed none; the layer's first frame when no rate is finite."""
    rates = np.asarray(result.rates, np.float64)
    summed = rates[:, list(result.cells)].sum(axis=1) if result.cells else rates.sum(axis=1)
    frames = np.asarray(getattr(getattr(result, "attribution", None), "frames", ()), np.int64)
    if frames.size and np.isfinite(summed[frames]).any():
        attributed = np.full_like(summed, np.nan)
        attributed[frames] = summed[frames]
        summed = attributed
    frame = int(np.nanargmax(summed)) if np.isfinite(summed).any() else 0
    return float(stimulus_layer.translate[0] + frame * stimulus_layer.scale[0])


def wrappable(name: str) -> str:
    """A readout name as its table cell draws it: with a zero-width space after each underscore (:data:`NAME_BREAK`),
    so that a name wider than its column wraps there, onto more lines, rather than being cut."""
    return name.replace("_", NAME_BREAK)


class _WrappedName(QStyledItemDelegate):
    """The readout names' column: a name wider than the column wraps after its underscores and is read whole
    (cut to the 110-px column, "burst_l…_per_px" and "reversa…ions_px" had to be guessed or hovered). Only a
    column dragged narrower than a part of a name cuts that part, in the middle: names that share a start stay
    apart (values keep their start: a list reads "[-9, -8, -7, ...")."""

    def initStyleOption(self, option, index) -> None:  # noqa: N802 - Qt's name
        super().initStyleOption(option, index)
        option.text = wrappable(option.text)
        option.features |= QStyleOptionViewItem.ViewItemFeature.WrapText
        option.textElideMode = Qt.TextElideMode.ElideMiddle


class _OneLine(QStyledItemDelegate):
    """The value columns: one line a cell, a long value cut at its end (whole in its tooltip), although the table
    wraps text (for the names' column). Plain text: magicgui's delegate would parse the text, already rounded to
    4 significant digits (:func:`_cell`), back and print 4 decimals ("19.8500", "16600.0000")."""

    def initStyleOption(self, option, index) -> None:  # noqa: N802 - Qt's name
        super().initStyleOption(option, index)
        option.features &= ~QStyleOptionViewItem.ViewItemFeature.WrapText


def _reason(message: str) -> str:
    """A battery's error text (``"ValueError: why"``) as the sentence alone."""
    head, sep, rest = message.partition(": ")
    return rest if sep and head.isidentifier() else message


TRUTH_TIP = ("Also show each experiment's stimulus to the synthetic retina the model was trained on "
             "(nr.synthetic.Retina(seed=0) of the version in the model's provenance) and compare: its present, its "
             "readout beside the model's, which of its pathways the kept channels recover, and its response under "
             "the model's in the trace dock. On by default for a model trained on that retina (the shipped one); "
             "unavailable when the model sees another field size.")


def run_each(model, cell: int, names: list, retina, steps: Optional[int], progress) -> dict:
    """:func:`napari_retina.experiments.battery` of ``names``, one experiment at a time, so that a Cancel keeps the
    ones already finished (one battery of them all lost every result: "nothing was added" at 80% of Run all).

    Returns the battery's ``results``, ``errors``, ``truth``, ``recovery`` and ``truth_errors`` over the names run,
    and ``cancelled``: the names a Cancel left out (empty when all ran). A Cancel before any finished is raised,
    as is the first failure when every experiment failed (one alone: when it failed); otherwise a failure is
    kept under ``errors`` and the others go on, as in the battery.
    """
    done: dict = {"results": {}, "errors": {}, "truth": {}, "recovery": {}, "truth_errors": {}, "cancelled": []}
    first: Optional[Exception] = None
    total = UNITS * len(names)
    for i, name in enumerate(names):
        def part(d: float, _t: float, i: int = i) -> None:
            progress(i * UNITS + d, total)

        try:
            one = experiments.battery(model, cell, retina=retina, names=[name], steps=steps, progress=part)
        except Cancelled:
            if not done["results"]:
                raise
            done["cancelled"] = names[i:]
            return done
        except Exception as exc:   # this experiment failed: the battery of one raises it
            first = first or exc
            done["errors"][name] = f"{type(exc).__name__}: {exc}"
            continue
        for key in ("results", "errors", "truth", "recovery", "truth_errors"):
            done[key].update(one[key])
    if not done["results"] and first is not None:
        raise first
    return done


class ExperimentsWidget(Container):
    """Run the in-silico experiments on the current model; show readouts; add a result's layers."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True)
        self.viewer = viewer
        self.session = session(viewer)
        names = list(experiments.names())
        self.experiment = ComboBox(label="experiment", choices=names, value=names[0],
                                   tooltip=PARAMETER_HELP["experiment"][1])
        self.cell = parameter_widget(experiments.run, "cell", annotation=int, min=0, max=999)
        self.steps = steps_widget(experiments.run, MAX_STEPS)
        self.truth = CheckBox(text="compare with the ground truth", value=False, enabled=False,
                              tooltip=TRUTH_TIP)
        self.run_button = PushButton(text="Run", tooltip="Run the chosen experiment on the current model.")
        self.run_all_button = PushButton(text="Run all", tooltip="Run every experiment, one after the other.")
        self.task = Task("experiment run")
        self.task.cancel_button.tooltip = ("Stop the experiment run: the experiments it finished are kept (Run all), "
                                           "the one running is dropped.")
        self.task.close_with_dock(self)  # closing the dock cancels a run
        self.results: dict = {}
        self.truths: dict = {}
        """Each result's ground-truth run (None when not compared)."""
        self.recoveries: dict = {}
        """Each result's recovery report (:func:`napari_retina.experiments.recovery_report`), when compared."""
        self.results_model = None
        """The model that ``results`` are of (None while there are none)."""
        self._added: dict = {}
        """Result name → weak references to (the result, the stimulus layer) of its last "Add layers"."""
        self.adding: Optional[StagedAdd] = None
        """The last "Add layers" (its maps and traces go in over several event-loop passes; ``adding.wait()`` in a
        script or test), None before the first."""
        self.overview = rich_label("")
        self.result_choice = ComboBox(label="result", choices=lambda _w: list(self.results),
                                      tooltip="The experiment whose readout the table shows and whose layers "
                                              "'Add layers of result' adds.")
        self.table = Table(value={"readout": [], "value": []})
        self.table.native.setMinimumHeight(TABLE_HEIGHT)
        self.table.native.verticalHeader().setVisible(False)   # row numbers say nothing here; room for the values
        self.table.native.setItemDelegate(_OneLine(self.table.native))   # values: one line, whole in tooltips
        self.table.native.setItemDelegateForColumn(0, _WrappedName(self.table.native))   # names: whole, wrapped
        self.table.native.setWordWrap(True)   # the view lays wrapped names out at their column's width
        self.table.native.verticalHeader().setSectionResizeMode(QHeaderView.ResizeToContents)   # a row per name
        self.terms = rich_label("")
        self.unmet = rich_label("")
        self.unmet.visible = False   # shown while a source of the chosen result is not present
        self.recovery = rich_label("")
        self.recovery.visible = False   # shown with a result compared with the ground truth
        self.add_button = PushButton(text="Add layers of result",
                                     tooltip="Add the chosen result's stimulus, maps and traces below the layers "
                                             "already shown.")
        buttons = Container(widgets=[self.run_button, self.run_all_button], layout="horizontal", labels=False)
        buttons.margins = (0, 0, 0, 0)   # side by side: the dock stays short enough for a 1000-pixel window
        results = Container(widgets=[self.overview, self.result_choice, self.unmet, self.table, self.recovery,
                                     self.terms],
                            labels=True)
        results.margins = (0, 0, 0, 0)
        self.extend([self.experiment, self.cell, self.steps, self.truth, buttons, *self.task.widgets, results,
                     self.add_button])
        self.results_area = scroll_within(self, results)   # a result's text scrolls; the dock stays as tall
        self.run_button.changed.connect(lambda *_: self.run([self.experiment.value]))
        self.run_all_button.changed.connect(lambda *_: self.run(list(experiments.names())))
        self.add_button.changed.connect(lambda *_: self.add_layers())
        self.result_choice.changed.connect(self._show_table)
        self.session.model_changed.connect(self._model_changed)
        if self.session.has_model():
            self._model_changed(self.session.model)
        self.scroll_area = scroll_contents(self)   # a dock a few lines tall on a laptop's screen
        tabify_when_docked(self)

    def _model_changed(self, model) -> None:
        offer_cells(self.cell, model.config.n_cells)
        self.truth.enabled = default_retina(model) is not None
        self.truth.value = trained_on_truth(model)   # on for a model of the synthetic retina (the shipped one)
        if self.results and model is not self.results_model:
            self.clear_results()
            self.task.status.value = "The model changed: the results of the previous model were cleared."

    def clear_results(self) -> None:
        """Forget every result (the overview, the result list and the table empty); layers already added stay."""
        self.results, self.truths, self.recoveries, self.results_model = {}, {}, {}, None
        self.overview.value = ""
        self.result_choice.reset_choices()
        self.table.value = {"readout": [], "model": []}
        self.terms.value = self.recovery.value = self.unmet.value = ""
        self.recovery.visible = self.unmet.visible = False

    def run(self, names: list) -> bool:
        """Run the named experiments in a worker; results fill the table."""
        names = [n for n in names if n]
        if not names:
            notify("warning", "Choose an experiment first.")
            return False
        try:
            model = self.session.model
        except Exception as exc:
            notify("error", f"Could not load the model: {one_sentence(exc)}")
            return False
        cell, steps = int(self.cell.value), int(self.steps.value) or None  # 0: nr.attribute's tol
        if cell >= model.config.n_cells:
            notify("error", f"Cell {cell} does not exist; the model has cells 0–{model.config.n_cells - 1}.")
            return False
        retina = default_retina(model) if self.truth.value and self.truth.enabled else None

        def job(task: Task) -> Union[dict, Partial]:
            done = run_each(model, cell, names, retina, steps, task.progress_callback("experiments"))
            return Partial(done) if done["cancelled"] else done

        return self.task.start(job, lambda done: self._show(done["results"], done["errors"], model=model,
                                                            truths=done["truth"], recoveries=done["recovery"],
                                                            truth_errors=done["truth_errors"],
                                                            cancelled=done["cancelled"]))

    def _show(self, results: dict, failed: Optional[dict] = None, model=None, truths: Optional[dict] = None,
              recoveries: Optional[dict] = None, truth_errors: Optional[dict] = None,
              cancelled: Optional[list] = None) -> None:
        if model is not None and model is not self.session.model:
            self.task.status.value = "The model changed during the run: its results were dropped."
            notify("warning", "The model changed during the experiment run, so its results, "
                              "of the previous model, were dropped.")
            return
        if model is not None and model is not self.results_model:
            self.clear_results()
            self.results_model = model
        self.results.update(results)
        for name in results:
            self.truths[name] = (truths or {}).get(name)
            self.recoveries[name] = (recoveries or {}).get(name)
        self.overview.value = overview_text(self.results, self.truths)
        self.result_choice.reset_choices()
        self.result_choice.value = list(results)[-1]
        self._show_table()
        self.task.status.value = f"{len(results)} experiment(s) done"
        if cancelled:
            self.task.status.value += f"; cancelled before {', '.join(cancelled)}"
            notify("info", f"The run was cancelled: the {len(results)} experiment(s) it finished are shown, "
                           f"{', '.join(cancelled)} did not run.")
        if failed:
            said = "; ".join(f"{name}: {_reason(why)}" for name, why in failed.items())
            self.task.status.value += f", {len(failed)} failed ({', '.join(failed)})"
            notify("warning", f"{len(failed)} experiment(s) failed, the others' results are shown: {said}")
        if truth_errors:
            said = "; ".join(f"{name}: {_reason(why)}" for name, why in truth_errors.items())
            notify("warning", f"The ground truth could not be run for {', '.join(truth_errors)}, so the model's "
                              f"results are shown alone: {said}")

    def _show_table(self, *_) -> None:
        name = self.result_choice.value
        if name in self.results:
            res, truth = self.results[name], self.truths.get(name)
            self.table.value = readout_table(res, truth)
            for row, texts in enumerate(readout_tooltips(res, truth)):
                item = self.table.native.item(row, 0)
                if item is not None:   # the name (as a script reads it, res.readout[name]) and its unit
                    item.setToolTip(item.text())
                for col, text in enumerate(texts, start=1):
                    item = self.table.native.item(row, col)
                    if item is not None:
                        item.setToolTip(text)
            self._fit_columns()
            self.terms.value = terms_text(res)
            self.unmet.value = unmet_text(res, truth)
            self.unmet.visible = bool(self.unmet.value)
            self.recovery.value = recovery_text(self.recoveries.get(name))
            self.recovery.tooltip = recovery_tooltip(self.recoveries.get(name))
            self.recovery.visible = bool(self.recovery.value)

    def _fit_columns(self) -> None:
        """The readout names as wide as they need, up to :data:`NAME_COLUMN_PX` (longer ones wrap after their
        underscores) but never narrower than a part of a name between underscores, the value columns (model,
        reduced, ground truth) sharing the rest: all in sight in a narrow dock, long values elided (whole in
        tooltips)."""
        table = self.table.native
        header = table.horizontalHeader()
        table.resizeColumnToContents(0)
        header.setSectionResizeMode(0, QHeaderView.Interactive)
        table.setColumnWidth(0, max(min(table.columnWidth(0), NAME_COLUMN_PX), self._widest_name_part_px()))
        for col in range(1, table.columnCount()):
            header.setSectionResizeMode(col, QHeaderView.Stretch)

    def _widest_name_part_px(self) -> int:
        """The width (px) of the widest part of a readout name between underscores (the underscore after it
        included) or spaces (before its unit), with the cell's text margins: the narrowest the names' column can be
        without cutting a name."""
        table = self.table.native
        names = [table.item(row, 0).text() for row in range(table.rowCount()) if table.item(row, 0) is not None]
        parts = [part for name in names for part in wrappable(name).replace(" ", "\u200b").split("\u200b")]
        margin = table.style().pixelMetric(QStyle.PixelMetric.PM_FocusFrameHMargin, None, table) + 1
        return max((table.fontMetrics().horizontalAdvance(part) for part in parts), default=0) + 2 * margin + 2

    def add_layers(self) -> Optional[StagedAdd]:
        """Add the chosen result's stimulus, maps and traces below the layers already shown, and move the time
        slider to the result's largest response (the slider may otherwise be past its end: a longer result's
        frame left the new one's canvas black). The same result added again replaces its layers where they are
        (still there under the name they got); another result of the same experiment (another run, another model) is
        added beside the earlier one's, under a fresh name ("osr [1]").

        The stimulus layer goes in at once, the maps and trace rows over the next event-loop passes (one map or
        row a pass: added in one call, the window froze 3-6 s under software OpenGL); returns that
        :class:`StagedAdd` (its ``wait()`` for scripts and tests, ``layers`` once done), None when nothing is
        added (no result, one being added, or an error: said in a notification)."""
        name = self.result_choice.value
        if name not in self.results:
            notify("warning", "Run an experiment first.")
            return None
        if self.adding is not None and not self.adding.done:
            notify("info", "The layers of a result are being added; wait for them to be in.")
            return None
        result = self.results[name]
        before, layer = (ref() for ref in self._added.get(name, (lambda: None, lambda: None)))
        again = layer if before is result and layer is not None and layer in self.viewer.layers else None
        try:
            adding = nr_viewer.show(result, self.viewer, name=None if again is None else again.name,
                                    replace=again is not None,   # the scripting API's path
                                    truth=self.truths.get(name), staged=True)
        except Exception as exc:
            notify("error", f"Could not add the layers of '{name}': {one_sentence(exc)}")
            return None
        stimulus = adding.before[0] if adding.before else again
        if again is None and stimulus is not None:   # a result added again stays where it was
            stack_below(self.viewer, [stimulus])
        # the dock's Cancel takes it back and closing the dock stops it, as for a run (not while a run goes on)
        idle = not self.task.running
        finish = self.task.defer(adding.stop, cancel=adding.cancel) if idle else (lambda: None)
        self.task.cancel_button.enabled = True
        self.task.status.value = f"Adding the layers of '{name}' …"

        def done(layers: list) -> None:
            finish()
            if layers:
                self._added[name] = (weakref.ref(result), weakref.ref(layers[0]))
            if again is None:
                stack_below(self.viewer, layers)
            if layers:
                nr_viewer.set_time(self.viewer, peak_time_ms(result, layers[0]))
            self.task.status.value = f"Added the layers of '{name}'."

        def failed(exc: BaseException) -> None:
            finish()
            if isinstance(exc, Cancelled):
                self.task.status.value = f"Adding the layers of '{name}' was cancelled; none were added."
                notify("info", self.task.status.value)
                return
            self.task.status.value = f"Could not add the layers of '{name}'."
            notify("error", f"Could not add the layers of '{name}': {one_sentence(exc)}")

        adding.on_done, adding.on_error = done, failed
        self.adding = adding
        return adding
