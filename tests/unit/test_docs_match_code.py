"""The README documents every setting the code reads."""

from __future__ import annotations

from pathlib import Path

from config.settings import Settings

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_every_setting_is_in_the_readme() -> None:
    missing = []
    for name, field in Settings.model_fields.items():
        names = (
            [f"TICKETFLOW_{name.upper()}"]
            if field.validation_alias is None
            else list(field.validation_alias.choices)
        )  # type: ignore[union-attr]
        if not any(f"`{n}`" in README for n in names):
            missing.append(names[0])
    assert not missing, f"settings missing from README.md: {missing}"
