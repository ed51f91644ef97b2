"""The README's config reference is the one the code prints."""

from pathlib import Path

from tpo.config import reference


def test_readme_config_reference_is_current():
    text = (Path(__file__).parents[1] / "README.md").read_text()
    start = text.index("<!-- config-reference -->\n") + len("<!-- config-reference -->\n")
    end = text.index("\n<!-- /config-reference -->")
    assert text[start:end] == reference(), "run `tpo config --reference` and paste it in README"
