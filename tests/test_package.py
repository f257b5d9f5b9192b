"""The package's own map: every module is listed, one line each, in gptcourse/__init__.py."""

import re
from pathlib import Path

import gptcourse

PACKAGE = Path(gptcourse.__file__).parent


def test_module_map_lists_every_module():
    listed = set(re.findall(r"^    (\w+) ", gptcourse.__doc__, re.M))
    modules = {p.stem for p in PACKAGE.glob("*.py") if not p.stem.startswith("__")}
    modules |= {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert modules - listed == set(), "add these modules to the map in gptcourse/__init__.py"
    assert listed - modules == set(), "the map names modules that do not exist"
