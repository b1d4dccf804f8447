"""The documentation as its readers get it: the MkDocs site builds with --strict (a broken link, a missing page or an
API reference that does not resolve fails), and the README's links all lead somewhere in the checkout."""
import os
import re
import subprocess
import sys

import pytest

from conftest import REPO


@pytest.mark.slow
def test_the_docs_site_builds_strict(tmp_path):
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")], cwd=REPO,
                       capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    server = (tmp_path / "site" / "server" / "index.html").read_text()
    assert "/v1/jobs" in server and "OpenAPI" in server  # the route table made from the app's own schema
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    assert "OnnxClassifier" in api and "session_options" in api  # the reference made from the docstrings


def test_the_readme_links_lead_somewhere_and_it_stays_short():
    text = open(os.path.join(REPO, "README.md")).read()
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text)
    assert links and [link for link in links if not os.path.exists(os.path.join(REPO, link))] == []
    assert len(text.splitlines()) <= 220
