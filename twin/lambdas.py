"""Load the real Lambda handlers in-process, each function's `app.py` under its own module name."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
LAYER = ROOT / "layers" / "shared"


def load_function(name: str) -> ModuleType:
    """Import functions/<name>/app.py once (every function's module is called app.py)."""
    if str(LAYER) not in sys.path:
        sys.path.insert(0, str(LAYER))
    module_name = f"functions_{name}_app"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, ROOT / "functions" / name / "app.py")
    if spec is None or spec.loader is None:
        raise FileNotFoundError(f"functions/{name}/app.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module
