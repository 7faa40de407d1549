"""Bundle the published API spec (shared/spec/tikosms-openapi.yaml) as JSON inside the package.

The served /openapi.json is this document plus our compatible additions (tikosms.api.openapi).
Run after the published spec changes:  python scripts/bundle_openapi.py ../shared/spec/tikosms-openapi.yaml
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

OUT = Path(__file__).resolve().parents[1] / "src" / "tikosms" / "api" / "published-openapi.json"


def main() -> None:
    src = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/spec/tikosms-openapi.yaml")
    spec = yaml.safe_load(src.read_text())
    OUT.write_text(json.dumps(spec, indent=1, ensure_ascii=False, default=str) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
