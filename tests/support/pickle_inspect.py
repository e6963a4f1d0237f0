"""Reads which callables a pickle would call, without unpickling it (no code in it runs)."""

from __future__ import annotations

import pathlib
import pickletools
import zipfile


def pickle_globals(data: bytes) -> set[str]:
    """'module.name' of every global a pickle references (GLOBAL and STACK_GLOBAL opcodes).

    Python 2 module names that protocols < 3 write (`__builtin__`) are given their Python 3 names (`builtins`).
    """
    found, strings = set(), []
    for opcode, arg, _ in pickletools.genops(data):
        if opcode.name == "GLOBAL":
            module, name = arg.split(" ", 1)
            found.add(f"{module}.{name}")
        elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
            found.add(f"{strings[-2]}.{strings[-1]}")
        elif isinstance(arg, str):
            strings.append(arg)
    return {name.replace("__builtin__.", "builtins.", 1) for name in found}


def file_pickle_globals(path: pathlib.Path) -> set[str]:
    """The globals of a plain pickle file, or of the data.pkl inside a torch.save zip archive."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            name = next(n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl")
            return pickle_globals(archive.read(name))
    return pickle_globals(path.read_bytes())
