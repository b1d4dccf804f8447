"""The package as a user installs it: a wheel built from this checkout, installed elsewhere, used from outside the
checkout — the README's Python example as it stands, and an install without a C++ compiler (numpy kernels)."""
import os
import re
import shutil
import subprocess
import sys

import pytest

from conftest import REPO

ROOT = REPO
EXAMPLE = os.path.join(ROOT, "examples", "chelsea.png")


def build_and_install(tmp, compiler=True):
    """Copy the tracked sources (a build folder of the checkout must not leak in), build the wheel offline and install
    it into a fresh virtual environment; returns that environment's python.  The environment sees this one's
    packages (numpy, onnxruntime, …: no network here) through a .pth file, but not its editable infolens: .pth files
    inside a folder that a .pth file adds are not read."""
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    src = tmp / "src"
    for f in files:
        os.makedirs(src / os.path.dirname(f), exist_ok=True)
        shutil.copy2(os.path.join(ROOT, f), src / f)
    env = dict(os.environ)
    if not compiler:
        env.update(CC="false", CXX="false")  # every compile fails, as on a machine without a compiler
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    r = subprocess.run(pip + ["wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp / "dist"), str(src)],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    wheel = next((tmp / "dist").glob("infolens-*.whl"))
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next(venv.glob("lib/python*/site-packages"))
    (site / "deps.pth").write_text("\n".join(p for p in sys.path if p.endswith("site-packages")) + "\n")
    r = subprocess.run(pip + ["install", "--no-deps", "--target", str(site), str(wheel)], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    return venv / "bin" / "python", site


def run_outside(tmp, python, code):
    work = tmp / "user"
    work.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("INFOLENS_MODELS", "INFOLENS_NO_EXT", "PYTHONPATH")}
    return subprocess.run([str(python), "-c", code], cwd=work, capture_output=True, text=True, env=env)


@pytest.mark.slow
def test_readme_python_example_runs_against_the_installed_wheel(tmp_path):
    readme = open(os.path.join(ROOT, "README.md")).read()
    example = re.search(r"## Python\n\n```python\n(.*?)```", readme, re.S).group(1)
    python, target = build_and_install(tmp_path)
    (tmp_path / "user").mkdir()
    shutil.copy(EXAMPLE, tmp_path / "user" / "photo.jpg")  # a PNG under a .jpg name: decoded by content
    check = (example + "import infolens, os\n"
             f"assert infolens.__file__.startswith({str(target)!r}), infolens.__file__\n"
             "assert infolens.kernels.backend() == 'c++'\n"
             "assert e.pmi.shape == (3, 224, 224) and e.ig.shape == (224, 224) and e.probs.shape == (1000,)\n"
             "assert sorted(os.listdir('out')) == ['photo.json', 'photo.npz', 'photo_ig.png'] + "
             "sorted(f'photo_pmi_{c}.png' for c in e.classes)\n"
             "print(e.labels[0])\n")
    r = run_outside(tmp_path, python, check)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "cat" in r.stdout  # the shipped classifier's top class for the example photo


@pytest.mark.slow
def test_install_without_a_compiler_uses_numpy_and_says_so_once(tmp_path):
    python, target = build_and_install(tmp_path, compiler=False)
    assert not list(target.glob("infolens/_sampling*")), "the failed extension must be left out, not half-built"
    r = run_outside(tmp_path, python, "import infolens\nfrom infolens import Explainer, OnnxClassifier, load_sampler\n"
                    "import numpy as np\n"
                    "assert infolens.kernels.backend() == 'numpy'\n"
                    "e = Explainer(OnnxClassifier.from_card(), load_sampler('patchsampler', K=16)).explain("
                    "np.full((224, 224, 3), 90, np.uint8), stride=16, samples=2)\n"
                    "print(e.forwards)\n")
    assert r.returncode == 0, r.stderr[-3000:]
    notes = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(notes) == 1 and notes[0].startswith("infolens: note: the compiled sampling kernels are not installed")
    assert int(r.stdout) == 1 + 14 * 14 * 2
