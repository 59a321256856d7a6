"""The hub's logic: one object the NeuroContrast widget calls (no Qt; settings store injected)."""

from __future__ import annotations

from typing import Callable, List, Optional

from NeuroContrastLib import dependencies, registry, settings
from neurocontrast.progress import ProgressCallback

GUIDE_HTML = """
<p><b>PerfusionNet</b> (stroke): select a 4D DSC series, place AIF and VOF points or segments (or press
<i>Suggest AIF</i>), check the curves, choose the method and press <i>Apply</i>: CBF, CBV, MTT, Tmax and TTP maps,
the Tmax&nbsp;&gt;&nbsp;6&nbsp;s region and its volume. Try it on <i>Sample Data → NeuroContrast → DSC phantom</i>.</p>
<p><b>VirtualGadolinium</b> (neuro-oncology): T1, T2-FLAIR, ADC and a low-dose T1c give a virtual full-dose T1c;
a routine T1c gives an amplified T1c; pre/post subtraction gives differential contrast.</p>
<p><b>ReaderStudy</b>: blinded, randomised, phased reading sessions with lesion measurements, Likert grades and
reading time, automatic lesion pairing and the study statistics.</p>
<p>Python console and command line: see <code>docs/console.md</code> (<code>import neurocontrast</code>).</p>
"""


class NeuroContrastLogic:
    """Dependencies, settings, model registry and sample data for the hub widget."""

    def __init__(self, settings_store=None, install_backend=None,
                 version_of: Callable = dependencies.installed_version):
        self.settings = settings.NeuroContrastSettings(settings_store)
        self.install_backend = install_backend
        self.version_of = version_of

    # dependencies
    def dependency_statuses(self) -> List[dependencies.DependencyStatus]:
        return dependencies.check_dependencies(version_of=self.version_of)

    def dependency_text(self) -> str:
        return dependencies.dependencies_summary(self.dependency_statuses())

    def install(self, confirm: Callable[[str], bool], progress: Optional[ProgressCallback] = None):
        """Install missing packages after ``confirm``; raises NeuroContrastError with guidance on failure."""
        return dependencies.ensure_dependencies(confirm, backend=self.install_backend, progress=progress,
                                                version_of=self.version_of, force_check=True)

    # models
    def model_rows(self, verify: bool = False) -> List[registry.ModelRow]:
        return registry.model_rows(self.settings.models_folder, verify=verify)

    def update_models_table(self, table_node, verify: bool = False) -> List[registry.ModelRow]:
        rows = self.model_rows(verify)
        registry.update_table_node(table_node, rows)
        return rows

    # sample data
    def load_sample(self, scene=None, **options):
        from NeuroContrastLib.sampledata import load_dsc_phantom
        return load_dsc_phantom(scene, **options)
