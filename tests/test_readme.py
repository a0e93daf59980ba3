"""The README's two commands: the test one is what CI runs; the main one works end to end."""

import os
import re
import subprocess
import sys

from tests.conftest import REPO


def _readme_commands():
  text = (REPO / "README.md").read_text()
  blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
  return blocks[0].strip(), blocks[1].strip()


def test_ci_runs_the_readme_test_command():
  _, test_command = _readme_commands()
  ci = (REPO / ".ci" / "run").read_text()
  assert test_command in ci


def test_readme_main_command_end_to_end_at_tiny_budget(tmp_path):
  main_command, _ = _readme_commands()
  # The main command's own train + evaluate steps, with the quick config and a tmp workdir.
  steps = [c.strip() for c in main_command.split("&&") if "sslx-" in c]
  assert [s.split()[0] for s in steps] == ["sslx-train", "sslx-linear"]
  workdir = str(tmp_path / "run")
  modules = {"sslx-train": "sslx.train", "sslx-linear": "sslx.evaluate.linear"}
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
  outputs = []
  for step in steps:
    args = step.split()
    args = [a.replace(".py", ".py:quick") if a.endswith(".py") else a for a in args[1:]]
    args = [workdir if prev == "--workdir" else a for prev, a in zip([""] + args, args)]
    result = subprocess.run([sys.executable, "-m", modules[step.split()[0]], *args], cwd=REPO,
                            capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    outputs.append(result.stdout)
  assert '"final_metrics"' in outputs[0]
  assert "| block1 |" in outputs[1] and "random init" in outputs[1]
