"""The reading station page (trame + Vuetify 3) around :class:`~neurocontrast_web.reading.ReadingStation`.

Left: the worklist (opaque labels, phase, status). Centre: axial view with coronal and sagittal views
beside it (trame-slicer remote views: mouse wheel scrolls, right-drag zooms, the gutter slider scrolls).
Right: image choice, window/level, zoom, lesion marking and list, Likert buttons with their anchors,
comment, exclude, submit and next. Top: progress, the active-time clock and pause.

Every control calls one station method; its errors appear as a one-line message. The server-side state
is the session: a browser reload shows the same read, a restarted server resumes it from disk.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable

from neurocontrast.errors import NeuroContrastError

log = logging.getLogger(__name__)

#: Minimum seconds between two activity reports from the page (mouse/keyboard).
ACTIVITY_THROTTLE_S = 2.0
#: Seconds of quiet typing after which the comment is stored.
COMMENT_SAVE_S = 1.5


def reading_layout():
    """Axial view on the left, coronal above sagittal on the right (no 3D view: slice views only)."""
    from trame_slicer.views import Layout, LayoutDirection, ViewLayoutDefinition

    return Layout(LayoutDirection.Horizontal, [
        ViewLayoutDefinition.axial_view(),
        Layout(LayoutDirection.Vertical, [ViewLayoutDefinition.coronal_view(), ViewLayoutDefinition.sagittal_view()]),
    ])


class ReadingApp:
    """The served page. ``server``: a trame server (default: a new one); the station is created here."""

    def __init__(self, study_folder, reader: str, server=None, clock: Callable[[], float] = time.time):
        from trame.app import get_server
        from trame_slicer.core import LayoutManager
        from trame_slicer.rca_view import register_rca_factories

        from neurocontrast_web.reading import ReadingStation
        from neurocontrast_web.scene import make_slicer_app

        self.server = server or get_server(None, client_type="vue3")
        self.state = self.server.state
        self.slicer_app, self._logics = make_slicer_app()
        register_rca_factories(self.slicer_app.view_manager, self.server)
        self.layout_manager = LayoutManager(self.slicer_app.scene, self.slicer_app.view_manager, self.server)
        self.layout_manager.register_layout("Reading", reading_layout())
        self.layout_manager.set_layout("Reading")
        self.station = ReadingStation(study_folder, reader, self.slicer_app, clock=clock, schedule=self._soon)
        self.station.on_change = self.push
        self.reader = reader
        self._last_activity = 0.0
        self._comment_task = None
        self._build_ui()
        self.state.trame__title = "NeuroContrast reading station"
        self.state.update(self._view_state())
        self.server.controller.on_server_ready.add(self._on_ready)
        self.state.change("wl_window", "wl_level")(self._on_window_level)
        self.state.change("comment_text")(self._on_comment)

    # ------------------------------------------------------------------ plumbing
    @staticmethod
    def _soon(work):
        asyncio.get_running_loop().call_soon(work)

    def _view_state(self):
        data = self.station.page_state()
        data["reader"] = self.reader
        data["comment_text"] = data["comment"] if self.station.comment_draft is None else self.station.comment_draft
        if data["read_open"]:
            wl = self.station.window_level()
            data.update(wl_window=round(wl["window"], 2), wl_level=round(wl["level"], 2),
                        wl_min=wl["min"], wl_max=wl["max"], wl_span=max(wl["max"] - wl["min"], 1e-6))
        return data

    def push(self) -> None:
        """Send the station's state to the page."""
        with self.state:
            self.state.update(self._view_state())

    def _act(self, fn, *args) -> None:
        try:
            fn(*args)
        except NeuroContrastError as exc:
            self.station.message = str(exc)
        self.push()

    def _on_ready(self, **_):
        from trame_server.utils.asynchronous import create_task

        create_task(self._clock())

    def on_page_mounted(self, *_):
        """A page (first visit or reload) is shown: open or resume the read, fit the views once sized."""
        try:
            if self.station.session.state is None and self.station.session.next_read() is not None:
                self.station.open_next()
        except NeuroContrastError as exc:
            self.station.message = str(exc)
        self.push()
        asyncio.get_running_loop().call_later(1.0, lambda: self._act(self.station.reset_views)
                                              if self.station.session.state is not None else None)

    async def _clock(self):
        while True:
            await asyncio.sleep(1.0)
            try:
                self.station.tick()
                from neurocontrast_web.reading import format_clock

                with self.state:
                    self.state.active_clock = format_clock(self.station.session.active_seconds)
                    self.state.paused = self.station.session.paused
            except Exception as exc:  # keep the clock alive; the message shows on the page
                log.warning("clock: %s", exc)

    # ------------------------------------------------------------------ events
    def on_activity(self, *_):
        now = time.monotonic()
        if now - self._last_activity >= ACTIVITY_THROTTLE_S:
            self._last_activity = now
            self.station.activity()

    def _on_window_level(self, wl_window=None, wl_level=None, **_):
        if not self.state.read_open or wl_window is None:
            return
        try:
            current = self.station.window_level()
            if abs(current["window"] - float(wl_window)) > 1e-6 or abs(current["level"] - float(wl_level)) > 1e-6:
                self.station.set_window_level(float(wl_window), float(wl_level))
        except NeuroContrastError as exc:
            self.station.message = str(exc)

    def _on_comment(self, comment_text="", **_):
        if not self.state.read_open or comment_text == self.station.page_state()["comment"]:
            return
        self.station.set_comment_draft(comment_text or "")
        if self._comment_task is not None:
            self._comment_task.cancel()
        self._comment_task = asyncio.get_running_loop().call_later(COMMENT_SAVE_S, self.save_comment)

    def save_comment(self, *_):
        self._act(self.station.save_comment)

    def open_position(self, position):
        self._act(self.station.open_position, int(position))

    def open_next(self):
        self._act(self.station.open_next)

    def show_image(self, name):
        self._act(self.station.show_image, name)

    def auto_window_level(self):
        self._act(self.station.auto_window_level)

    def zoom(self, steps):
        self._act(self.station.zoom, int(steps))

    def reset_views(self):
        self._act(self.station.reset_views)

    def mark_lesion(self):
        self._act(self.station.start_long_axis)

    def cancel_mark(self):
        self._act(self.station.cancel_long_axis)

    def delete_lesion(self, lesion_id):
        self._act(self.station.delete_lesion, str(lesion_id))

    def set_grade(self, grade):
        self._act(self.station.set_grade, int(grade))

    def set_exclude(self, value):
        self._act(self.station.set_exclude, bool(value))

    def toggle_pause(self):
        self._act(self.station.toggle_pause)

    def submit(self):
        self._act(self.station.submit_and_next)

    # ------------------------------------------------------------------ page
    def _build_ui(self):
        from trame.widgets import html
        from trame_vuetify.ui.vuetify3 import SinglePageLayout
        from trame_vuetify.widgets import vuetify3 as v

        from trame.widgets import client

        with SinglePageLayout(self.server) as layout:
            client.ClientTriggers(mounted=self.on_page_mounted)
            layout.title.set_text("NeuroContrast reading station")
            with layout.toolbar:
                v.VSpacer()
                v.VChip("Reader {{ reader }}", id="reader-chip", classes="mx-1")
                v.VChip("{{ progress }}", id="progress", classes="mx-1")
                v.VChip("{{ active_clock }}", id="active-clock", prepend_icon="mdi-timer-outline", classes="mx-1",
                        color=("paused ? 'grey' : 'green'",))
                v.VBtn("{{ paused ? 'Resume' : 'Pause' }}", id="pause", click=self.toggle_pause,
                       disabled=("!read_open || read_status === 'submitted'",), classes="mx-1", variant="tonal")
            with layout.content:
                with html.Div(classes="d-flex", style="height: calc(100vh - 64px);",
                              mousedown=self.on_activity, keydown=self.on_activity, wheel=self.on_activity):
                    self._worklist_panel(v, html)
                    with html.Div(classes="flex-grow-1", style="position: relative; min-width: 0;"):
                        self.layout_manager.initialize_layout_grid(layout)
                    self._reading_panel(v, html)

    def _worklist_panel(self, v, html):
        with html.Div(style="width: 220px; overflow-y: auto;", classes="pa-2", id="worklist"):
            html.Div("Worklist", classes="text-subtitle-1")
            with v.VList(density="compact"):
                with v.VListItem(v_for="row in worklist", key="row.position",
                                 id=("`worklist-${row.position}`",),
                                 active=("row.position === read_position",),
                                 disabled=("row.status === 'locked'",),
                                 click=(self.open_position, "[row.position]")):
                    v.VListItemTitle("{{ row.label }}")
                    v.VListItemSubtitle("{{ row.phase }} · {{ row.status }}")
            v.VBtn("Open next", id="open-next", click=self.open_next, block=True, classes="mt-2",
                   disabled=("all_done",), variant="tonal")

    def _reading_panel(self, v, html):
        with html.Div(style="width: 340px; overflow-y: auto;", classes="pa-2"):
            with html.Div(v_if="read_open"):
                html.Div("{{ read_label }} · {{ read_phase }} · {{ read_status }}", id="read-title",
                         classes="text-subtitle-1 mb-1")
                with v.VBtnToggle(model_value=("image",), mandatory=True, density="compact", classes="mb-2"):
                    v.VBtn("{{ name }}", v_for="name in images", key="name", value=("name",),
                           click=(self.show_image, "[name]"))
                v.VSlider(v_model=("wl_window", 1.0), label="Window", min=(0.01,), max=("wl_span",),
                          step=("wl_span / 200",), density="compact", hide_details=True, id="wl-window")
                v.VSlider(v_model=("wl_level", 0.0), label="Level", min=("wl_min",), max=("wl_max",),
                          step=("wl_span / 200",), density="compact", hide_details=True, id="wl-level")
                with html.Div(classes="d-flex my-1"):
                    v.VBtn("Auto W/L", click=self.auto_window_level, size="small", variant="tonal", classes="mr-1")
                    v.VBtn("Zoom +", click=(self.zoom, "[1]"), size="small", variant="tonal", classes="mr-1",
                           id="zoom-in")
                    v.VBtn("Zoom −", click=(self.zoom, "[-1]"), size="small", variant="tonal", classes="mr-1")
                    v.VBtn("Fit", click=self.reset_views, size="small", variant="tonal")
                v.VDivider(classes="my-2")
                v.VBtn("{{ placing ? 'Click the two ends of the long axis…' : 'Mark lesion (long axis)' }}",
                       id="mark-lesion", click=self.mark_lesion, block=True, color="primary",
                       disabled=("read_status === 'submitted'",))
                v.VBtn("Cancel marking", v_if="placing", click=self.cancel_mark, block=True, size="small",
                       variant="text")
                with v.VTable(density="compact", id="lesion-table"):
                    with html.Thead():
                        with html.Tr():
                            html.Th("Lesion")
                            html.Th("Long (mm)")
                            html.Th("Short (mm)")
                            html.Th("")
                    with html.Tbody():
                        with html.Tr(v_for="lesion in lesions", key="lesion.id", classes="lesion-row"):
                            html.Td("{{ lesion.id }}")
                            html.Td("{{ lesion.long_mm }}")
                            html.Td("{{ lesion.short_mm }}")
                            with html.Td():
                                v.VBtn(icon="mdi-delete", size="x-small", variant="text",
                                       disabled=("read_status === 'submitted'",),
                                       click=(self.delete_lesion, "[lesion.id]"))
                html.Div("{{ warnings }}", v_if="warnings", classes="text-caption text-warning")
                v.VDivider(classes="my-2")
                html.Div("Likert grade", classes="text-subtitle-2")
                with html.Div(classes="d-flex flex-wrap"):
                    with html.Div(v_for="item in likert", key="item.value", classes="text-center mr-1 mb-1"):
                        v.VBtn("{{ item.value }}", id=("`grade-${item.value}`",), size="small",
                               color=("grade === item.value ? 'primary' : undefined",),
                               variant=("grade === item.value ? 'flat' : 'outlined'",),
                               disabled=("read_status === 'submitted'",),
                               click=(self.set_grade, "[item.value]"))
                        html.Div("{{ item.anchor }}", classes="text-caption")
                v.VTextarea(v_model=("comment_text", ""), label="Comment", rows=2, auto_grow=True, id="comment",
                            disabled=("read_status === 'submitted'",), blur=self.save_comment, hide_details=True,
                            classes="my-2")
                v.VCheckbox(model_value=("exclude",), label="Exclude this case", id="exclude", density="compact",
                            hide_details=True, disabled=("read_status === 'submitted'",),
                            update_modelValue=(self.set_exclude, "[$event]"))
                v.VBtn("Submit and next", id="submit", click=self.submit, block=True, color="success",
                       disabled=("read_status === 'submitted' || (grade === null && !exclude)",))
            html.Div("All available reads are submitted. Thank you.", v_if="all_done", id="all-done",
                     classes="text-subtitle-1 my-2")
            v.VAlert("{{ message }}", v_if="message", density="compact", id="message", classes="mt-2",
                     type="info", variant="tonal")

    # ------------------------------------------------------------------ run
    def close(self) -> None:
        self.station.close()


def serve_reader(study_folder, reader: str, policy, open_browser: bool = False) -> int:
    """Start the reading station for ``reader`` and serve it until interrupted (blocks)."""
    from neurocontrast.web.access import install_token_gate

    app = ReadingApp(study_folder, reader)
    install_token_gate(app.server, policy)
    try:
        app.server.start(host=policy.host, port=policy.port, open_browser=open_browser, show_connection_info=False,
                         disable_logging=True)
    finally:
        app.close()
    return 0
