"""The perfusion viewer page (trame + Vuetify 3) around :class:`~neurocontrast_web.perfusion.PerfusionViewer`.

Left: AIF and VOF (click points, paint, clear, automatic suggestion), the live curves and their quality
figures. Centre: axial, coronal and sagittal views of the DSC frame or a map. Right: method, compute, the map
choice with its colour bar (the Tmax > 6 s region is outlined), the volumes table and the report PNG.
"""

from __future__ import annotations

import asyncio
import logging

from neurocontrast.errors import NeuroContrastError

log = logging.getLogger(__name__)


class PerfusionApp:
    """The served page for one DSC series (``dsc_path``; options as :class:`PerfusionViewer`)."""

    def __init__(self, dsc_path, server=None, te_s=None, tr_s=None, brain_mask=None):
        from trame.app import get_server
        from trame_slicer.core import LayoutManager
        from trame_slicer.rca_view import register_rca_factories

        from neurocontrast_web.perfusion import PerfusionViewer
        from neurocontrast_web.reading_app import reading_layout
        from neurocontrast_web.scene import make_slicer_app

        self.server = server or get_server(None, client_type="vue3")
        self.state = self.server.state
        self.slicer_app, self._logics = make_slicer_app()
        register_rca_factories(self.slicer_app.view_manager, self.server)
        self.layout_manager = LayoutManager(self.slicer_app.scene, self.slicer_app.view_manager, self.server)
        self.layout_manager.register_layout("Perfusion", reading_layout())
        self.layout_manager.set_layout("Perfusion")
        self.viewer = PerfusionViewer(dsc_path, self.slicer_app, te_s=te_s, tr_s=tr_s, brain_mask=brain_mask,
                                      schedule=lambda work: asyncio.get_running_loop().call_soon(work))
        self.viewer.on_change = self.push
        self.state.trame__title = "NeuroContrast perfusion viewer"
        self.state.update(self.viewer.page_state())
        self.state.update(frame=0, busy=False)
        self.state.change("frame")(self._on_frame)
        self.state.change("method")(self._on_method)
        self._build_ui()

    def push(self) -> None:
        with self.state:
            self.state.update(self.viewer.page_state())

    def _act(self, fn, *args):
        try:
            fn(*args)
        except NeuroContrastError as exc:
            self.viewer.message = str(exc)
        self.push()

    def _on_frame(self, frame=0, **_):
        if not self.viewer.shown_map or self.viewer.shown_map == "":
            self._act(self.viewer.show_frame, int(frame))

    def _on_method(self, method="osvd", **_):
        if method != self.viewer.params.method:
            self._act(self.viewer.set_method, method)

    def on_page_mounted(self, *_):
        self.push()
        asyncio.get_running_loop().call_later(1.0, lambda: self._act(self.viewer.reset_views))

    async def compute(self):
        with self.state:
            self.state.busy = True
            self.state.message = "computing the maps…"
        await asyncio.sleep(0.05)
        try:
            self.viewer.compute()
        except NeuroContrastError as exc:
            self.viewer.message = str(exc)
        with self.state:
            self.state.busy = False
        self.push()

    def download_report(self):
        try:
            return self.server.protocol.addAttachment(self.viewer.report_png())
        except NeuroContrastError as exc:
            self.viewer.message = str(exc)
            self.push()
            return None

    def _build_ui(self):
        from trame.widgets import client, html
        from trame_vuetify.ui.vuetify3 import SinglePageLayout
        from trame_vuetify.widgets import vuetify3 as v

        viewer = self.viewer
        with SinglePageLayout(self.server) as layout:
            client.ClientTriggers(mounted=self.on_page_mounted)
            layout.title.set_text("NeuroContrast perfusion viewer")
            with layout.content:
                with html.Div(classes="d-flex", style="height: calc(100vh - 64px);"):
                    with html.Div(style="width: 330px; overflow-y: auto;", classes="pa-2"):
                        for role in ("aif", "vof"):
                            name = role.upper()
                            html.Div(f"{name}: {{{{ {role}_source }}}} · {{{{ {role}_voxels }}}} voxels",
                                     id=f"{role}-status", classes="text-subtitle-2")
                            with html.Div(classes="d-flex flex-wrap mb-2"):
                                v.VBtn(f"Click {name}", id=f"place-{role}", size="small", variant="tonal",
                                       classes="mr-1 mb-1", click=(lambda r=role: self._act(viewer.place_points, r)))
                                v.VBtn(f"Paint {name}", id=f"paint-{role}", size="small", variant="tonal",
                                       classes="mr-1 mb-1", click=(lambda r=role: self._act(viewer.paint, r)))
                                v.VBtn("Clear", size="small", variant="text", classes="mb-1",
                                       click=(lambda r=role: self._act(viewer.clear, r)))
                        with html.Div(classes="d-flex flex-wrap mb-2"):
                            v.VBtn("Suggest AIF", id="suggest-aif", size="small", color="primary", classes="mr-1",
                                   click=lambda: self._act(viewer.suggest_aif))
                            v.VBtn("Suggest VOF", id="suggest-vof", size="small", color="primary", classes="mr-1",
                                   click=lambda: self._act(viewer.suggest_vof))
                            v.VBtn("Stop placing", size="small", variant="text",
                                   click=lambda: self._act(viewer.stop_placing))
                        v.VCheckbox(model_value=("aif_auto",), label="automatic AIF at compute", density="compact",
                                    hide_details=True, update_modelValue=(lambda x: self._act(viewer.set_aif_auto, x),
                                                                          "[$event]"))
                        html.Img(src=("curves_image",), v_if="curves_image", id="curves", style="width: 100%;")
                        with v.VTable(density="compact", v_if="quality.length"):
                            with html.Tbody():
                                with html.Tr(v_for="q in quality", key="q.figure"):
                                    html.Td("{{ q.figure }}")
                                    html.Td("{{ q.aif }}")
                                    html.Td("{{ q.vof }}")
                    with html.Div(classes="flex-grow-1", style="position: relative; min-width: 0;"):
                        self.layout_manager.initialize_layout_grid(layout)
                    with html.Div(style="width: 300px; overflow-y: auto;", classes="pa-2"):
                        v.VSlider(v_model=("frame", 0), label="Frame", min=0, max=("n_frames - 1",), step=1,
                                  density="compact", hide_details=True, thumb_label=True)
                        v.VSelect(v_model=("method", viewer.params.method), items=("methods",), label="Method",
                                  id="method", density="compact", hide_details=True, classes="my-2")
                        v.VBtn("Compute maps", id="compute", block=True, color="primary", loading=("busy",),
                               click=self.compute)
                        with v.VBtnToggle(model_value=("shown_map",), density="compact", classes="my-2",
                                          v_if="computed"):
                            v.VBtn("{{ m.toUpperCase() }}", v_for="m in maps", key="m", value=("m",), size="small",
                                   id=("`map-${m}`",), click=(lambda m: self._act(viewer.show_map, m), "[m]"))
                        with html.Div(v_if="colour_bar.gradient", id="colour-bar", classes="my-2"):
                            html.Div("{{ colour_bar.name }} ({{ colour_bar.unit }})", classes="text-caption")
                            html.Div(style=("{background: colour_bar.gradient, height: '14px'}",))
                            with html.Div(classes="d-flex justify-space-between text-caption"):
                                html.Span("{{ colour_bar.min }}")
                                html.Span("{{ colour_bar.max }}")
                            html.Div("orange outline: Tmax > 6 s", classes="text-caption")
                        with v.VTable(density="compact", v_if="volumes.length", id="volumes"):
                            with html.Tbody():
                                with html.Tr(v_for="row in volumes", key="row.measure", classes="volume-row"):
                                    html.Td("{{ row.measure }}")
                                    html.Td("{{ row.value }}")
                                    html.Td("{{ row.unit }}")
                        v.VBtn("Download report PNG", id="report", block=True, variant="tonal", classes="mt-2",
                               disabled=("!computed",),
                               click=("utils.download('perfusion-report.png', trigger('"
                                      f"{self.server.controller.trigger_name(self.download_report)}"
                                      "'), 'image/png')"))
                        v.VAlert("{{ message }}", v_if="message", id="message", density="compact", type="info",
                                 variant="tonal", classes="mt-2")


def serve_perfusion(dsc_path, policy, te_s=None, tr_s=None, brain_mask=None, open_browser: bool = False) -> int:
    """Start the perfusion viewer on ``dsc_path`` and serve it until interrupted (blocks)."""
    from neurocontrast.web.access import install_token_gate

    app = PerfusionApp(dsc_path, te_s=te_s, tr_s=tr_s, brain_mask=brain_mask)
    install_token_gate(app.server, policy)
    app.server.start(host=policy.host, port=policy.port, open_browser=open_browser, show_connection_info=False,
                     disable_logging=True)
    return 0
