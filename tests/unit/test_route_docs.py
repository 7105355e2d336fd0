"""Every route says what it does: its docstring is the description users read in /docs."""

from __future__ import annotations

from api.app import create_app


def test_every_route_has_a_description_in_the_openapi_document() -> None:
    paths = create_app().openapi()["paths"]
    operations = {
        f"{method.upper()} {path}": op for path, ops in paths.items() for method, op in ops.items()
    }
    assert len(operations) >= 17
    undocumented = [
        name for name, op in operations.items() if not op.get("description", "").strip()
    ]
    assert not undocumented, f"routes without a docstring: {undocumented}"
