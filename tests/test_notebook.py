"""The example notebook runs top to bottom in a real Jupyter kernel, so it cannot rot."""

import nbclient
import nbformat

from tests.conftest import REPO


def test_the_notebook_executes_and_shows_what_it_says(trained_workdir, monkeypatch):
  notebook = nbformat.read(REPO / "examples" / "notebook.ipynb", as_version=4)
  monkeypatch.setenv("SSLX_NOTEBOOK_WORKDIR", trained_workdir[0])  # The two-step rotation run.
  client = nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                                   resources={"metadata": {"path": str(REPO / "examples")}})
  client.execute()  # Raises CellExecutionError, with the cell and its traceback, if any cell fails.
  code = [c for c in notebook.cells if c.cell_type == "code"]
  text = ["".join(o.get("text", "") for o in c.outputs if o.output_type == "stream") for c in code]
  pictures = [sum("image/png" in o.get("data", {}) for o in c.outputs) for c in code]
  assert pictures == [0, 1, 1, 1, 1, 0, 1]  # Each picture cell drew its figure.
  assert "(8, 32, 32, 3)" in text[1] and "(32, 32, 32, 3)" in text[2]
  assert "tiles (8, 9," in text[3] and "soft ab targets" in text[4]
  loss = float(text[5].split()[1])
  assert 1.2 < loss < 1.6  # ln 4 = 1.386 at random init, give or take.
  assert "checkpoint step 2" in text[6] and "embedded (8, " in text[6]
