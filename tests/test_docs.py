"""The repository's own documents: what the code cites exists."""
import re
from pathlib import Path


def test_every_pointer_to_the_design_notes_resolves():
    """Docstrings and configs cite ``docs/design.md §N``: the document and each section exist."""
    root = Path(__file__).resolve().parent.parent
    design = (root / "docs" / "design.md").read_text()
    sections = set(re.findall(r"^## (\d+)\. ", design, flags=re.M))
    cited = {}
    for path in [*root.glob("kfac_bench/**/*.py"), *root.glob("conf/**/*.yaml"), root / "README.md"]:
        text = path.read_text()
        assert "DESIGN.md" not in text, path
        for number in re.findall(r"design\.md §(\d+)", text):
            cited.setdefault(number, []).append(path.name)
    assert cited and set(cited) <= sections, (cited, sections)


def test_every_local_link_and_image_of_the_readme_exists():
    """Figures and documents the README shows or links (``![..](path)``, ``[..](path)``) are in the
    repository: a profile's published block must not point at files that were removed."""
    root = Path(__file__).resolve().parent.parent
    text = (root / "README.md").read_text()
    targets = [t.split("#")[0] for t in re.findall(r"\]\(([^)\s]+)\)", text) if "://" not in t]
    missing = [t for t in targets if t and not (root / t).exists()]
    assert targets and not missing, missing
