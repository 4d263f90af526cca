"""The operator-facing files stand alone and cover what an operator meets.

- the chart, the examples and the operator guides cite no document that is not in the
  repository (no section signs, no outside specification): they say it in their own words;
- docs/troubleshooting.md has a section for every reason a deny can carry;
- LICENSE is the Apache-2.0 text the package declares; SECURITY.md says how to report
  and which versions get fixes.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from extauthz.errors import Reason
from tests.chart.helmtest import REPO

#: files that must not cite documents outside the repository
STANDALONE = sorted(
    [
        *(REPO / "charts").rglob("*"),
        *(REPO / "examples").rglob("*"),
        REPO / "Dockerfile",
        REPO / "SECURITY.md",
        REPO / "docs" / "troubleshooting.md",
        REPO / "docs" / "compatibility.md",
        REPO / "docs" / "upgrading.md",
        REPO / "docs" / "kubernetes-quickstart.md",
    ]
)
#: a section sign, unless it points into a public RFC ("RFC 6749 §3.3")
CITATION = re.compile(r"(?<!RFC \d{4} )§|\bSPEC\b")


@pytest.mark.parametrize(
    "path",
    [p for p in STANDALONE if p.is_file() and p.suffix not in {".png", ".tgz"}],
    ids=lambda p: str(p.relative_to(REPO)),
)
def test_no_citation_of_an_outside_document(path: Path) -> None:
    """No `SPEC`, and no `§` except in an RFC reference."""
    text = path.read_text(encoding="utf-8")
    hits = [line.strip() for line in text.splitlines() if CITATION.search(line)]
    assert hits == []


def test_troubleshooting_covers_every_deny_reason() -> None:
    """One `### <reason>` section per deny reason (allows excluded), nothing stale."""
    text = (REPO / "docs" / "troubleshooting.md").read_text(encoding="utf-8")
    sections = set(re.findall(r"^### ([a-z_]+)$", text, re.MULTILINE))
    denies = {r.value for r in Reason} - {"ok", "anonymous"}
    assert denies <= sections
    # reasons the docs explain ahead of the code are allowed, typos are not
    assert sections - denies <= {"revoked"}
    for reason in denies:
        body = text.split(f"### {reason}\n", 1)[1].split("\n### ", 1)[0]
        assert "**Client sees**" in body, reason
        assert "**Check**" in body, reason


def test_license_is_the_apache_2_text_the_package_declares() -> None:
    """pyproject says Apache-2.0; LICENSE holds its full terms."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["license"] == "Apache-2.0"
    text = (REPO / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in text
    assert "Version 2.0, January 2004" in text
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in text
    assert "END OF TERMS AND CONDITIONS" in text
    assert len(text.splitlines()) > 190


def test_security_policy_says_how_to_report_and_what_is_supported() -> None:
    """SECURITY.md: a private reporting channel and a supported-versions table."""
    text = (REPO / "SECURITY.md").read_text(encoding="utf-8")
    assert "## Reporting a vulnerability" in text
    assert "Do not open a public issue" in text
    assert "## Supported versions" in text
    assert re.search(r"\| 0\.1\.x", text)
