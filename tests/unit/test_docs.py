"""The documentation: the site builds strictly, every setting is documented, no page names a
variable the code does not read, and every relative link leads to a file.

These tests read files and run ``mkdocs build``; they need no Redis and no broker process.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import msgspec
import pytest

from broker.core.settings import Settings, documented_fields

# The checkout's root, wherever in tests/ this file lives.
ROOT = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").is_file())
DOCS = ROOT / "docs"
PAGES = DOCS / "pages"
README = ROOT / "README.md"
README_MAX_LINES = 300

# Variables read by name that are deliberately not settings (grep the code for BROKER_ read
# through os.environ); anything else a page names must be a field of Settings.
NOT_SETTINGS = {
    # The OpenAI-compatible models' API key: only the workers read it
    # (broker.core.models.OPENAI_API_KEY_ENV), so a front never holds a provider key.
    "BROKER_OPENAI_API_KEY",
    # The path of the redis-server binary that `broker dev` and the tests start when they need
    # an embedded Redis (broker.embedded_redis.find_redis_server): a property of the machine,
    # read before any Settings exist, not of a deployment.
    "BROKER_REDIS_SERVER",
}

VARIABLE = re.compile(r"BROKER_[A-Z0-9_]+\*?")
# [text](target) and ![alt](target); the target ends at whitespace or the closing parenthesis.
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site, built once for the module the way the documentation says."""
    site_dir = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(DOCS / "mkdocs.yml")]
        + ["--site-dir", str(site_dir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stderr}"
    return site_dir


def _hooks() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docs_hooks", DOCS / "hooks.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _markdown_files() -> list[Path]:
    return [README, *sorted(PAGES.glob("*.md"))]


def _without_code_blocks(text: str) -> str:
    return FENCE.sub("", text)


def _settings_variables() -> set[str]:
    return {"BROKER_" + field.name.upper() for field in msgspec.structs.fields(Settings)}


def test_the_site_builds_strictly(site: Path) -> None:
    for page in ("index.html", "configuration/index.html", "reference/index.html"):
        assert (site / page).is_file(), page


def test_every_setting_has_a_description() -> None:
    documented = documented_fields()
    assert [doc.variable for doc in documented] == [
        "BROKER_" + field.name.upper() for field in msgspec.structs.fields(Settings)
    ]
    missing = [doc.variable for doc in documented if not doc.description.strip()]
    assert not missing, f"settings without a description: {missing}"


def test_the_configuration_page_lists_every_setting(site: Path) -> None:
    page = (site / "configuration" / "index.html").read_text()
    for doc in documented_fields():
        assert f"<code>{doc.variable}</code>" in page, doc.variable
        # The description is on the page too (its first words, as rendered text).
        first_words = re.sub(r"`[^`]*`", "", doc.description).split()[:3]
        assert all(word in page for word in first_words), doc.variable
    # The page's source holds only the marker the hook replaces, never a generated table.
    source = (PAGES / "configuration.md").read_text()
    assert "<!-- generated: settings -->" in source
    assert not VARIABLE.search(source.split("<!-- generated: settings -->")[1])


def test_the_api_reference_and_openapi_json_come_from_the_document(site: Path) -> None:
    document = _hooks().build_openapi()  # wherever the hook imports it from
    assert json.loads((site / "openapi.json").read_text()) == json.loads(json.dumps(document))
    page = (site / "reference" / "index.html").read_text()
    for path, item in document["paths"].items():
        for method in item:
            assert f"<code>{method.upper()} {path}</code>" in page, (method, path)


def test_every_variable_named_in_the_docs_is_read_by_the_code() -> None:
    settings = _settings_variables()
    sources = [*_markdown_files(), ROOT / "compose.yaml"]
    sources += [p for p in sorted((ROOT / "examples").rglob("*")) if p.is_file()]
    unknown: dict[str, set[str]] = {}
    for source in sources:
        if "node_modules" in source.parts:
            continue
        for name in VARIABLE.findall(source.read_text(errors="replace")):
            if name.endswith("*"):  # a family, such as BROKER_LIMIT_*
                known = any(s.startswith(name[:-1]) for s in settings)
            else:
                known = name in settings or name in NOT_SETTINGS
            if not known:
                unknown.setdefault(str(source.relative_to(ROOT)), set()).add(name)
    assert not unknown, f"variables that are neither settings nor read by name: {unknown}"


def test_the_variables_read_by_name_are_still_read() -> None:
    code = "\n".join(
        path.read_text()
        for package in ("broker", "workers")
        for path in (ROOT / package).rglob("*.py")
    )
    for name in NOT_SETTINGS:
        assert f'"{name}"' in code, f"{name} is no longer read: drop it from NOT_SETTINGS"
        assert name not in _settings_variables()


def test_defaults_in_hand_written_tables_match_the_settings() -> None:
    defaults = {doc.variable: doc.default for doc in documented_fields()}
    row = re.compile(r"^\| `(BROKER_[A-Z0-9_]+)` \| `([^`]*)` \|", re.M)
    wrong = [
        (path.name, name, stated, defaults[name])
        for path in _markdown_files()
        for name, stated in row.findall(path.read_text())
        if name in defaults and stated != defaults[name]
    ]
    assert not wrong, f"(page, variable, stated default, actual default): {wrong}"


def test_the_readme_is_a_short_landing_page() -> None:
    lines = len(README.read_text().splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; at most {README_MAX_LINES}"


@pytest.mark.parametrize("path", _markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(path: Path) -> None:
    broken = []
    for target in LINK.findall(_without_code_blocks(path.read_text())):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # a URL (http:, mailto:) or an anchor on the same page
        file = target.split("#", 1)[0]
        if not (path.parent / file).exists():
            broken.append(target)
    assert not broken, f"{path.relative_to(ROOT)} links to missing files: {broken}"
