"""ReaderStudy: blinded, timed reading sessions in 3D Slicer (module, thin widget, self-test).

Every decision lives in ReaderStudyLib.logic (tested with pytest and slicer-core) and the core package
``neurocontrast.readerstudy`` (design, crash-safe session, pairing, statistics); this widget only moves
values between the .ui and one logic call per action, and applies the blinding settings of the logic.
"""

import os
import tempfile
import time

import qt
import slicer
import vtk
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)
from slicer.util import VTKObservationMixin

from NeuroContrastLib.mrml import remove_node
from neurocontrast.readerstudy.geometry import slice_plane
from ReaderStudyLib.logic import ReaderStudyLogic, ReaderStudyParameters


class ReaderStudy(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "ReaderStudy"
        self.parent.categories = ["NeuroContrast"]
        self.parent.dependencies = ["NeuroContrast"]
        self.parent.contributors = ["NeuroContrast developers"]
        self.parent.helpText = ("Blinded, randomised reader studies: log in, read the cases of your worklist, "
                                "mark the long and short axes of every enhancing lesion, grade the image quality, "
                                "submit. Everything is saved at once. Analyse with `neurocontrast reader analyze`.")
        self.parent.acknowledgementText = "Protocol after Ammari et al. 2022 and Bône et al. 2022."


def moduleParameterNode():
    """The module's parameter node (singleton tag "ReaderStudy", saved with the scene)."""
    logic = ScriptedLoadableModuleLogic()
    logic.moduleName = "ReaderStudy"  # the base class would name the node "ScriptedLoadableModule"
    return logic.getParameterNode()


class ReaderStudyWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None, logic=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = logic  # injected (tests, scripts) or made in setup() with Slicer's settings as its store
        self.pendingLine = None
        self.lastActivity = 0.0

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/ReaderStudy.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = self.logic or ReaderStudyLogic(slicer.mrmlScene, settings_store=qt.QSettings())
        self.parameterNode = moduleParameterNode()
        stored = ReaderStudyParameters.read(self.parameterNode)
        self.ui.studyFolderLineEdit.text, self.ui.readerLineEdit.text = stored.study_folder, stored.reader
        self.ui.browseButton.connect("clicked()", self.onBrowse)
        self.ui.loginButton.connect("clicked()", self.onLogin)
        self.ui.logoutButton.connect("clicked()", self.onLogout)
        self.ui.openNextButton.connect("clicked()", self.onOpenNext)
        self.ui.pauseButton.connect("toggled(bool)", self.onPause)
        self.ui.addLesionButton.connect("clicked()", self.onAddLesion)
        self.ui.snapButton.connect("clicked()", self.onSnap)
        self.ui.deleteLesionButton.connect("clicked()", self.onDeleteLesion)
        self.ui.commentLineEdit.connect("editingFinished()", self.onComment)
        self.ui.excludeCheckBox.connect("toggled(bool)", self.onExclude)
        self.ui.submitButton.connect("clicked()", self.onSubmit)
        self.ui.worklistTable.setColumnCount(3)
        self.ui.worklistTable.setHorizontalHeaderLabels(["Case", "Phase", "Status"])
        self.ui.lesionTable.setColumnCount(3)
        self.ui.lesionTable.setHorizontalHeaderLabels(["Lesion", "Long (mm)", "Short (mm)"])
        self.gradeGroup = qt.QButtonGroup(self.ui.gradeButtonsWidget)
        self.gradeGroup.connect("idClicked(int)", self.onGrade)  # buttonClicked(int) is gone in Qt 6
        self.timer = qt.QTimer()
        self.timer.setInterval(1000)
        self.timer.connect("timeout()", self.onTick)
        self.ticks = 0

    def cleanup(self):
        self.timer.stop()
        self.discardPendingLine()
        self.removeObservers()
        self.logic.logout()
        self.restoreBlinding()

    # -- blinding
    def applyBlinding(self):
        self.logic.apply_blinding()  # the settings go through the logic's store (saved and restored there)
        self.setAnnotationsAndProbeVisible(False)

    def setAnnotationsAndProbeVisible(self, visible):
        """Slice-view corner annotations (patient name, ID, dates) and the Data Probe panel on or off."""
        probe = getattr(slicer.modules, "DataProbeInstance", None)
        annotations = getattr(getattr(probe, "infoWidget", None), "sliceAnnotations", None)
        try:
            if annotations is not None:
                annotations.sliceViewAnnotationsEnabled = visible
                annotations.updateSliceViewFromGUI()
            dataProbe = slicer.util.findChild(slicer.util.mainWindow(), "DataProbeCollapsibleWidget")
            dataProbe.setVisible(visible)
        except Exception as exc:  # the Data Probe API differs between Slicer versions
            slicer.util.warningDisplay(f"Could not switch the patient annotations off ({exc}); hide them by hand "
                                       "(View > Data Probe, slice view annotations) before reading.")

    def restoreBlinding(self):
        if self.logic.restore_blinding():
            self.setAnnotationsAndProbeVisible(True)

    # -- login and worklist
    def onBrowse(self):
        folder = qt.QFileDialog.getExistingDirectory(None, "Study folder", self.ui.studyFolderLineEdit.text)
        if folder:
            self.ui.studyFolderLineEdit.text = folder

    def onLogin(self):
        with slicer.util.tryWithErrorDisplay("Login failed.", waitCursor=True):
            params = ReaderStudyParameters(self.ui.studyFolderLineEdit.text, self.ui.readerLineEdit.text.strip())
            self.logic.login(params.study_folder, params.reader)
            params.write(self.parameterNode)
            self.applyBlinding()
            self.ui.logoutButton.enabled = True
            self.ui.openNextButton.enabled = True
            self.refreshWorklist()

    def onLogout(self):
        self.timer.stop()
        self.removeObservers(self.onViewActivity)
        self.discardPendingLine()
        self.logic.logout()
        self.restoreBlinding()
        self.ui.logoutButton.enabled = False
        self.ui.openNextButton.enabled = False
        self.setReadingEnabled(False)
        self.ui.worklistTable.setRowCount(0)

    def refreshWorklist(self):
        rows = self.logic.worklist()
        self.ui.worklistTable.setRowCount(len(rows))
        for i, row in enumerate(rows):
            for j, key in enumerate(("label", "phase", "status")):
                self.ui.worklistTable.setItem(i, j, qt.QTableWidgetItem(str(row[key])))
        done, total = self.logic.progress()
        self.ui.progressBar.maximum = max(total, 1)
        self.ui.progressBar.value = done

    # -- reading
    def setReadingEnabled(self, enabled):
        for name in ("pauseButton", "addLesionButton", "snapButton", "deleteLesionButton", "submitButton"):
            getattr(self.ui, name).enabled = enabled

    def onOpenNext(self):
        with slicer.util.tryWithErrorDisplay("Cannot open a read.", waitCursor=True):
            info = self.logic.open_read()
            self.showRead(info)

    def showRead(self, info):
        main = next(n for n in self.logic.volume_nodes if n.GetName() == "Read image")
        companions = [n for n in self.logic.volume_nodes if n is not main]
        layoutManager = slicer.app.layoutManager()
        layoutManager.setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutSideBySideView if companions
                                else slicer.vtkMRMLLayoutNode.SlicerLayoutOneUpRedSliceView)
        sliceNodes = []
        for viewName, node in zip(("Red", "Yellow"), [main] + companions[:1]):
            composite = layoutManager.sliceWidget(viewName).sliceLogic().GetSliceCompositeNode()
            composite.SetBackgroundVolumeID(node.GetID())
            composite.SetLinkedControl(True)
            layoutManager.sliceWidget(viewName).sliceLogic().FitSliceToAll()
            sliceNodes.append(layoutManager.sliceWidget(viewName).mrmlSliceNode())
        self.observeSliceViews(sliceNodes)
        self.ui.caseLabel.text = f"Case {info['label']} ({info['phase']})"
        self.buildGradeButtons(info["likert"], info["grade"])
        self.ui.excludeCheckBox.text = f"Exclude this case (more than {info['max_lesions']} lesions)"
        self.ui.excludeCheckBox.checked = info["exclude"]
        self.ui.pauseButton.checked = False
        self.setReadingEnabled(True)
        for lesionId in self.logic.lesion_nodes:
            self.observeLesion(lesionId)
        self.refreshLesions()
        self.refreshWorklist()
        self.timer.start()

    def observeSliceViews(self, sliceNodes):
        """Count changes of the shown slice views as reading activity. The slice nodes are the same for every
        read: drop the previous read's observations first, so that each node is observed exactly once."""
        self.removeObservers(self.onViewActivity)
        for sliceNode in sliceNodes:
            self.addObserver(sliceNode, vtk.vtkCommand.ModifiedEvent, self.onViewActivity)

    def buildGradeButtons(self, likert, grade):
        layout = self.ui.gradeButtonsWidget.layout()
        for button in self.gradeGroup.buttons():
            self.gradeGroup.removeButton(button)
            button.deleteLater()
        anchors = likert.get("anchors", {})
        for point in range(1, int(likert["points"]) + 1):
            text = f"{point}" + (f"\n{anchors[str(point)]}" if str(point) in anchors else "")
            button = qt.QPushButton(text)
            button.checkable = True
            button.checked = grade == point
            self.gradeGroup.addButton(button, point)
            layout.addWidget(button)

    def onGrade(self, grade):
        with slicer.util.tryWithErrorDisplay("Cannot store the grade."):
            self.logic.set_grade(grade)

    def onComment(self):
        if self.logic.session is not None and self.logic.session.state is not None:
            self.logic.set_comment(self.ui.commentLineEdit.text)

    def onExclude(self, checked):
        if self.logic.session is not None and self.logic.session.state is not None:
            self.logic.set_exclude(checked)

    def onPause(self, paused):
        if paused:
            self.logic.pause()
        else:
            self.logic.resume()

    def onViewActivity(self, caller=None, event=None):
        now = time.time()
        if now - self.lastActivity > 1.0:
            self.lastActivity = now
            self.logic.activity()

    def onTick(self):
        state = self.logic.display_state()
        if not state:
            return
        self.ticks += 1
        if self.ticks % 5 == 0:
            self.logic.heartbeat()
        seconds = int(state["active_seconds"])
        self.ui.timerLabel.text = f"{seconds // 60}:{seconds % 60:02d}" + (" (paused)" if state["paused"] else "")

    # -- lesions
    def discardPendingLine(self):
        """Remove the line of an "Add lesion" that was never finished (with its observer and display node)."""
        if self.pendingLine is not None:
            self.removeObserver(self.pendingLine, slicer.vtkMRMLMarkupsNode.PointPositionDefinedEvent,
                                self.onLongAxisPoint)
            remove_node(self.pendingLine, slicer.mrmlScene)
            self.pendingLine = None

    def onAddLesion(self):
        self.discardPendingLine()
        self.pendingLine = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsLineNode", "New long axis")
        self.addObserver(self.pendingLine, slicer.vtkMRMLMarkupsNode.PointPositionDefinedEvent, self.onLongAxisPoint)
        selection = slicer.mrmlScene.GetNodeByID("vtkMRMLSelectionNodeSingleton")
        selection.SetReferenceActivePlaceNodeClassName("vtkMRMLMarkupsLineNode")
        selection.SetActivePlaceNodeID(self.pendingLine.GetID())
        slicer.mrmlScene.GetNodeByID("vtkMRMLInteractionNodeSingleton").SetCurrentInteractionMode(
            slicer.vtkMRMLInteractionNode.Place)

    def onLongAxisPoint(self, caller, event):
        if caller.GetNumberOfDefinedControlPoints() < 2:
            return
        self.removeObserver(caller, slicer.vtkMRMLMarkupsNode.PointPositionDefinedEvent, self.onLongAxisPoint)
        p0, p1 = [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]
        caller.GetNthControlPointPositionWorld(0, p0)
        caller.GetNthControlPointPositionWorld(1, p1)
        # the markups widget still uses the node after this event: remove it (and its display node) only once the
        # event has returned
        qt.QTimer.singleShot(0, lambda node=caller: remove_node(node, slicer.mrmlScene))
        self.pendingLine = None
        with slicer.util.tryWithErrorDisplay("Cannot add the lesion."):
            lesionId, warnings = self.logic.add_lesion_from_long_axis(p0, p1, view_planes=self.viewPlanes())
            self.observeLesion(lesionId)
            self.ui.warningLabel.text = "; ".join(warnings)
        self.refreshLesions()

    def viewPlanes(self):
        """{view name: (normal, origin)} of the slice views shown: the short axis goes into the one the long axis
        was drawn in."""
        layoutManager = slicer.app.layoutManager()
        planes = {}
        for name in layoutManager.sliceViewNames():
            matrix = layoutManager.sliceWidget(name).mrmlSliceNode().GetSliceToRAS()
            planes[name] = slice_plane([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])
        return planes

    def observeLesion(self, lesionId):
        for node in self.logic.lesion_nodes[lesionId]:
            self.addObserver(node, slicer.vtkMRMLMarkupsNode.PointEndInteractionEvent,
                             lambda caller, event, lid=lesionId: self.onLesionMoved(lid))

    def onLesionMoved(self, lesionId):
        with slicer.util.tryWithErrorDisplay("Cannot store the moved lesion."):
            self.ui.warningLabel.text = "; ".join(self.logic.commit_lesion_nodes(lesionId, snap=False))
        self.refreshLesions()

    def selectedLesion(self):
        row = self.ui.lesionTable.currentRow()
        item = self.ui.lesionTable.item(row, 0) if row >= 0 else None
        return item.text() if item else None

    def onSnap(self):
        lesionId = self.selectedLesion()
        if lesionId:
            with slicer.util.tryWithErrorDisplay("Cannot adjust the short axis."):
                self.ui.warningLabel.text = "; ".join(self.logic.commit_lesion_nodes(lesionId, snap=True))
            self.refreshLesions()

    def onDeleteLesion(self):
        lesionId = self.selectedLesion()
        if lesionId:
            self.logic.delete_lesion(lesionId)
            self.refreshLesions()

    def refreshLesions(self):
        rows = self.logic.lesion_table()
        self.ui.lesionTable.setRowCount(len(rows))
        for i, row in enumerate(rows):
            for j, value in enumerate((row["id"], f"{row['long_mm']:.1f}", f"{row['short_mm']:.1f}")):
                self.ui.lesionTable.setItem(i, j, qt.QTableWidgetItem(value))

    def onSubmit(self):
        with slicer.util.tryWithErrorDisplay("Cannot submit the read.", waitCursor=True):
            self.timer.stop()
            self.logic.submit()
            self.setReadingEnabled(False)
            self.ui.lesionTable.setRowCount(0)
            self.ui.commentLineEdit.text = ""
            self.refreshWorklist()
            if self.logic.session.next_read() is not None:
                self.onOpenNext()
            else:
                self.ui.caseLabel.text = "No read available (finished, or next phase in washout)"


class ReaderStudyTest(ScriptedLoadableModuleTest):
    def setUp(self):
        slicer.mrmlScene.Clear(0)

    def runTest(self):
        self.setUp()
        self.test_read_one_case()

    def test_read_one_case(self):
        from neurocontrast.readerstudy.session import load_reads
        from neurocontrast.readerstudy.synthetic import make_synthetic_study

        folder = tempfile.mkdtemp(prefix="ReaderStudyTest")
        make_synthetic_study(folder, n_cases=2, seed=1)
        logic = ReaderStudyLogic(slicer.mrmlScene)
        logic.login(folder, "R1")
        info = logic.open_read()
        self.assertTrue(info["label"].startswith("K"))
        lesionId, _ = logic.add_lesion_from_long_axis((-5, 0, 0), (5, 0, 0), short_mm=4)
        logic.set_grade(3)
        state = logic.submit()
        logic.logout()
        stored = load_reads(logic.design, "R1")[state["read_id"]]
        self.assertEqual(stored["status"], "submitted")
        self.assertEqual(stored["lesions"][0]["id"], lesionId)
        self.assertTrue(os.path.exists(os.path.join(folder, "reads", "R1", "events.jsonl")))
        self.delayDisplay("ReaderStudy self-test passed")
