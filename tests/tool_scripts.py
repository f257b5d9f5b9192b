"""The scripts in tools/ as modules, for their tests (tools/ is not a package, like benchmarks/)."""

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

TOOLS = Path(__file__).resolve().parent.parent / "tools"


def load_tool(name: str) -> ModuleType:
    """tools/<name>.py as the module `tool_<name>`, loaded once for every test file that asks."""
    module_name = f"tool_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, TOOLS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    # A dataclass looks its module up in sys.modules while the class is being built.
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module
