"""The page's vendored modules are exactly the locked npm packages' files (no browser needed)."""

from __future__ import annotations

import json
import re

import pytest

from .vendor import NODE_MODULES, VENDOR, VENDORED, VERSIONS_FILE, versions_text

E2E = NODE_MODULES.parent


@pytest.fixture(scope="module")
def lock() -> dict[str, object]:
    if not NODE_MODULES.exists():
        pytest.fail("tests/e2e/node_modules is missing: run `npm ci --prefix tests/e2e`")
    packages: dict[str, object] = json.loads((E2E / "package-lock.json").read_text())["packages"]
    return packages


def test_vendored_packages_are_pinned_exactly(lock: dict[str, object]) -> None:
    manifest = json.loads((E2E / "package.json").read_text())
    pinned = manifest.get("dependencies", {})
    for package in VENDORED:
        # GIVEN package.json, the lock file and the installed package
        locked = lock[f"node_modules/{package}"]
        installed = json.loads((NODE_MODULES / package / "package.json").read_text())
        # THEN all three name one exact version
        assert re.fullmatch(r"\d+\.\d+\.\d+", pinned[package]), (package, pinned[package])
        assert locked["version"] == pinned[package] == installed["version"], package  # type: ignore[index]


def test_vendored_files_are_byte_identical_to_the_locked_packages(
    lock: dict[str, object],
) -> None:
    for package, files in VENDORED.items():
        for dest, source in files.items():
            vendored = VENDOR / dest
            assert vendored.is_file(), f"{dest} is missing: run `make vendor`"
            original = (NODE_MODULES / package / source).read_bytes()
            assert vendored.read_bytes() == original, f"{dest} differs from {package}/{source}"


def test_vendor_holds_nothing_else_and_lists_each_version() -> None:
    expected = {dest for files in VENDORED.values() for dest in files} | {VERSIONS_FILE}
    present = {p.relative_to(VENDOR).as_posix() for p in VENDOR.rglob("*") if p.is_file()}
    assert present == expected
    assert (VENDOR / VERSIONS_FILE).read_text() == versions_text()
    for files in VENDORED.values():
        assert any(dest.endswith("LICENSE") for dest in files)
