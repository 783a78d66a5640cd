"""The web page's files as ``uvrd api`` serves them at / (uvrd/api/page.py): without a token, with
their types and the page's Content-Security-Policy.  What the page does in a browser:
tests/test_web_page.py."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from uvrd.api import page
from uvrd.config import Config, StorageConfig

FILES = {"/": "text/html", "/web/app.js": "text/javascript", "/web/app.css": "text/css"}


def policy(response) -> dict[str, list[str]]:
    directives = [d.split() for d in response.headers["Content-Security-Policy"].split(";")]
    return {d[0]: d[1:] for d in directives if d}


@pytest.mark.parametrize("path", FILES)
def test_the_page_is_served_without_a_token_with_its_type_and_a_strict_policy(public_api, path):
    response = public_api.get(path)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].split(";")[0] == FILES[path]
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    csp = policy(response)
    assert csp["default-src"] == ["'self'"]
    # Only the page's own files run: no inline script or style, no eval, nothing from elsewhere.
    assert csp["script-src"] == ["'self'"] and csp["style-src"] == ["'self'"]
    assert csp["connect-src"] == ["'self'"] and csp["media-src"] == ["'self'", "blob:"]
    assert csp["frame-ancestors"] == ["'none'"] and csp["object-src"] == ["'none'"]
    # Revalidated, so that an upgrade's page is never mixed with the old script.
    again = public_api.get(path, headers={"If-None-Match": response.headers["ETag"]})
    assert again.status_code == 304 and not again.content


def test_the_page_loads_its_own_script_and_style(public_api):
    html = public_api.get("/").text
    assert '<script src="web/app.js" defer></script>' in html
    assert '<link rel="stylesheet" href="web/app.css">' in html


@pytest.mark.parametrize("path", ["/web/page.py", "/web/index.html", "/web/..%2Fpage.py", "/web/"])
def test_nothing_else_is_served_from_the_page_s_folder(public_api, path):
    assert public_api.get(path).status_code == 404


def test_stems_in_a_bucket_may_play_and_be_drawn_from_the_bucket():
    custom = Config(storage=StorageConfig(backend="s3", bucket="stems", endpoint_url="https://s3.example.net:9000"))
    aws = Config(storage=StorageConfig(backend="s3", bucket="stems"))
    for config, origins in ((custom, ["https://s3.example.net:9000", "https://*.s3.example.net:9000"]),
                            (aws, ["https://*.amazonaws.com"])):
        csp = page.content_security_policy(config)
        assert f"media-src 'self' blob: {' '.join(origins)}" in csp
        assert f"connect-src 'self' {' '.join(origins)}" in csp


def test_the_built_package_ships_the_page(tmp_path):
    """The wheel that pip (and so the Debian package's dh-virtualenv) installs holds the page's files."""
    root = Path(__file__).resolve().parents[3]
    source = tmp_path / "source"
    shutil.copytree(root / "uvrd", source / "uvrd", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(root / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(source),
                    "-w", str(tmp_path / "dist")], check=True, capture_output=True, timeout=300)
    [wheel] = (tmp_path / "dist").glob("uvrd-*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    assert {f"uvrd/api/web/{name}" for name in page.ASSETS} <= shipped
