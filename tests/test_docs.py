"""The docs stay true to the code: the config reference matches the schema, every relative link lands, and the
README stays a front page that needs nothing outside the repository. Fast: no model, no ZenML."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")  # [text](target) and ![alt](target)
FENCE = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)


def _config_reference():
    spec = importlib.util.spec_from_file_location("config_reference", ROOT / "scripts" / "config_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _prose(page: Path) -> str:
    """The page without code blocks and inline code: a link-like string in an example is not a link."""
    return re.sub(r"`[^`\n]*`", "", FENCE.sub("", page.read_text()))


def _anchors(page: Path) -> set[str]:
    """GitHub's heading ids: lower case, punctuation dropped, spaces to hyphens."""
    out = set()
    for line in FENCE.sub("", page.read_text()).splitlines():
        if m := re.match(r"#{1,6}\s+(.*)", line):
            out.add(re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-"))
    return out


def test_config_reference_matches_schema():
    ref = _config_reference()
    text = ref.DOC.read_text()
    assert ref.current_block(text) == ref.block(), (
        "docs/config.md's reference differs from tuneline/config.py: "
        "run scripts/in-venv python scripts/config_reference.py --write"
    )


def test_every_config_key_has_a_description():
    """A key without Field(description=...) would show up in the reference with an empty cell."""
    from pydantic import BaseModel

    from tuneline.config import TunelineConfig

    def missing(prefix: str, model: type[BaseModel]):
        for name, field in model.model_fields.items():
            if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
                if not (field.annotation.__doc__ or field.description):
                    yield f"{prefix}{name}"
                yield from missing(f"{prefix}{name}.", field.annotation)
            elif not field.description:
                yield f"{prefix}{name}"

    assert list(missing("", TunelineConfig)) == []


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: Path):
    broken = []
    for target in LINK.findall(_prose(page)):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif not dest.is_relative_to(ROOT):
            broken.append(f"{target}: outside the repository")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{target}: no heading '#{anchor}' in {dest.relative_to(ROOT)}")
    assert broken == []


def test_readme_is_a_front_page():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 220, "reference material belongs in docs/"
    assert "../" not in text, "the README must work from a clone: no path outside the repository"


def test_readme_keeps_the_two_commands():
    """.ci/run runs the README's test command as written; the main command is the README's promise."""
    text = (ROOT / "README.md").read_text()
    assert "bash scripts/setup.sh && scripts/in-venv python run.py --config configs/finetune.yaml\n" in text
    assert "bash scripts/setup.sh && scripts/in-venv python -m pytest -q\n" in text
    assert "bash scripts/setup.sh && scripts/in-venv python -m pytest -q" in (ROOT / ".ci" / "run").read_text()
