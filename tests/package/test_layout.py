"""The house rules a reader relies on: no room reaches into another room's private names."""
import ast
import pathlib

from conftest import REPO

RUNTIME = pathlib.Path(REPO) / "runtime"


def _private_names(tree) -> set[str]:
    """Private names a module defines: functions, classes, module variables and attributes it assigns."""
    out = set()
    for n in ast.walk(tree):
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.add(n.name)
        elif isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store):
            out.add(n.id)
        elif isinstance(n, ast.Attribute) and isinstance(n.ctx, ast.Store):
            out.add(n.attr)
    return {x for x in out if x.startswith("_") and not x.startswith("__")}


def private_reaches(root: pathlib.Path = RUNTIME) -> list[str]:
    """`module:line name` for each use of another module's private name: `obj._name` (obj not self or cls) or
    `from module import _name`, where `_name` is defined by some other module of `root` and not by this one."""
    trees = {p: ast.parse(p.read_text()) for p in sorted(root.rglob("*.py"))}
    defined = {p: _private_names(t) for p, t in trees.items()}
    found = []
    for p, tree in trees.items():
        others = set().union(*(d for q, d in defined.items() if q != p))
        for n in ast.walk(tree):
            names = []
            if isinstance(n, ast.Attribute) and not (isinstance(n.value, ast.Name) and n.value.id in ("self", "cls")):
                names = [n.attr]
            elif isinstance(n, ast.ImportFrom):
                names = [a.name for a in n.names]
            for name in names:
                if name in others and name not in defined[p]:
                    found.append(f"{p.relative_to(root)}:{n.lineno} {name}")
    return found


def test_no_room_uses_another_rooms_private_names():
    assert private_reaches() == []


def test_the_check_finds_a_private_reach(tmp_path):
    """The rule above can fail: a module reading another's `_feed` and importing its `_helper` is caught."""
    (tmp_path / "model.py").write_text("def _helper():\n    pass\n\n\nclass M:\n    def __init__(self):\n"
                                       "        self._feed = 'x'\n")
    (tmp_path / "user.py").write_text("from .model import _helper\n\n\ndef use(m):\n    return m._feed, _helper\n")
    assert private_reaches(tmp_path) == ["user.py:1 _helper", "user.py:5 _feed"]


def test_every_runtime_package_is_installed():
    """A new room (a folder with __init__.py) must be listed in pyproject's packages, or the wheel lacks it."""
    import tomllib

    with open(RUNTIME.parent / "pyproject.toml", "rb") as f:
        listed = set(tomllib.load(f)["tool"]["setuptools"]["packages"])
    rooms = {".".join(("infolens", *p.parent.relative_to(RUNTIME).parts)) for p in RUNTIME.rglob("__init__.py")}
    assert rooms - listed == set()


def test_import_infolens_leaves_the_heavy_packages_to_where_they_are_used():
    """Start-up: `import infolens` loads numpy, onnxruntime and OpenCV, not the onnx package (0.8 s of ml_dtypes),
    scipy, matplotlib, FastAPI, Ray, torch or tqdm, and neither does building the CLI's parser; each is imported
    where a graph is edited, a statistic computed, a server started, a bar drawn."""
    import subprocess
    import sys

    heavy = ["onnx", "scipy", "matplotlib", "fastapi", "ray", "torch", "tqdm"]
    r = subprocess.run([sys.executable, "-c", "import sys, infolens\nfrom infolens.cli import build_parser\n"
                        "build_parser()\n"
                        f"print(','.join(m for m in {heavy!r} if m in sys.modules))"],
                       capture_output=True, text=True, check=True)
    assert r.stdout.strip() == ""
