"""Copy the page's third-party modules from tests/e2e/node_modules into static/vendor/.

`make vendor` runs this after `npm ci --prefix tests/e2e`, so the versions are the ones pinned
exactly in tests/e2e/package.json and package-lock.json. The files are copied as published,
never edited; test_vendor.py checks they still match byte for byte.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NODE_MODULES = ROOT / "tests" / "e2e" / "node_modules"
VENDOR = ROOT / "src" / "handlers" / "static" / "vendor"
HLJS_LANGUAGES = [
    "bash",
    "c",
    "cpp",
    "css",
    "diff",
    "go",
    "java",
    "javascript",
    "json",
    "markdown",
    "python",
    "rust",
    "shell",
    "sql",
    "typescript",
    "xml",
    "yaml",
]

# package -> {file in static/vendor/: file in the package}
VENDORED: dict[str, dict[str, str]] = {
    "marked": {
        "marked/marked.esm.js": "lib/marked.esm.js",
        "marked/LICENSE": "LICENSE",
    },
    "dompurify": {
        # .js, not .mjs: every static server (and Python's mimetypes) knows it is JavaScript.
        "dompurify/purify.es.js": "dist/purify.es.mjs",
        "dompurify/LICENSE": "LICENSE",  # Apache-2.0, or at your choice:
        "dompurify/LICENSE-MPL": "LICENSE-MPL",  # MPL-2.0
    },
    "@highlightjs/cdn-assets": {
        "highlight.js/core.min.js": "es/core.min.js",
        "highlight.js/a11y-dark.min.css": "styles/a11y-dark.min.css",
        "highlight.js/LICENSE": "LICENSE",
        **{
            f"highlight.js/languages/{name}.min.js": f"es/languages/{name}.min.js"
            for name in HLJS_LANGUAGES
        },
    },
}
VERSIONS_FILE = "VERSIONS.txt"


def installed_version(package: str) -> str:
    manifest = json.loads((NODE_MODULES / package / "package.json").read_text())
    return str(manifest["version"])


def versions_text() -> str:
    """static/vendor/VERSIONS.txt: each package, its exact version and its license file."""
    lines = ["# Written by `make vendor` from tests/e2e/package-lock.json; do not edit.\n"]
    for package, files in VENDORED.items():
        licenses = " ".join(dest for dest in files if "LICENSE" in dest)
        lines.append(f"{package} {installed_version(package)} {licenses}\n")
    return "".join(lines)


def main() -> None:
    if VENDOR.exists():
        shutil.rmtree(VENDOR)
    for package, files in VENDORED.items():
        for dest, source in files.items():
            target = VENDOR / dest
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(NODE_MODULES / package / source, target)
    (VENDOR / VERSIONS_FILE).write_text(versions_text())
    print(versions_text(), end="")


if __name__ == "__main__":
    main()
