#!/usr/bin/env python3
"""Check that every object compiled once per ISA defines global symbols only in its own namespace.

The kernels compiled with an ISA's flags (CMake's fc_kernels_<isa> object libraries, one copy
of each per-ISA source in namespace fastconv::cpu::<isa>; csrc/cpu/gemm_<isa>.cpp) must not
define any weak or global symbol outside fastconv::cpu::<isa>. A template instantiation or
inline function they share with other objects (std::vector's members, a message builder) is
emitted as a weak symbol compiled with that ISA's instructions, and the linker keeps one copy
of each weak symbol for the whole module: scalar code may then run AVX-512 code.

Usage: check_isa_objects.py [DIR ...]   (default: build). Searches each DIR recursively for
    .../fc_kernels_<isa>.dir/.../*.o and .../gemm_<isa>.cpp.o (scikit-build-core keeps its
    build in build/{wheel_tag}, pyproject.toml), runs `nm` on each and prints the offending
    symbols (demangled). Exit status 1 when any is found or when no ISA object is found at
    all, 2 when nm fails.
Limits: ELF objects and GNU/LLVM nm only. Local symbols (anonymous namespaces, static
functions, OpenMP's outlined bodies) are private to their object and not checked.
"""

from __future__ import annotations

import platform
import re
import subprocess
import sys
from pathlib import Path

# Where each ISA's objects live (CMake's object-library and per-file naming in CMakeLists.txt).
KERNEL_DIR = re.compile(r"^fc_kernels_(\w+)\.dir$")
GEMM_OBJECT = re.compile(r"^gemm_(avx2|avx512)\.cpp\.o$")

# Compiler-made data that is the same in every object: the hidden weak pointer to the C++
# personality routine (exception tables), which holds no code of its own.
ALLOWED = {"DW.ref.__gxx_personality_v0"}

# Itanium C++ ABI prefixes of names tied to an entity (guard variable, TLS init/wrapper,
# vtable, typeinfo, typeinfo name, reference temporary, local static): the entity's own
# nested name follows.
SPECIAL_PREFIX = re.compile(r"^_Z(?:GV|GR|TH|TW|TV|TI|TS)?Z?L?")


def isa_of(obj: Path) -> str | None:
    """The ISA an object is compiled for, from its place in the build tree, or None."""
    m = GEMM_OBJECT.match(obj.name)
    if m:
        return m.group(1)
    for part in obj.parts:
        m = KERNEL_DIR.match(part)
        if m:
            return m.group(1)
    return None


def in_namespace(mangled: str, isa: str) -> bool:
    """Whether a mangled name lies in fastconv::cpu::<isa> (mangled: N8fastconv3cpu<len><isa>)."""
    nested = f"N8fastconv3cpu{len(isa)}{isa}"
    m = SPECIAL_PREFIX.match(mangled)
    return m is not None and mangled.startswith(nested, m.end())


def is_global(kind: str) -> bool:
    """nm's type letter: upper case is global (W/V weak, T/D/B/R/...), 'u' unique global."""
    return kind.isupper() or kind == "u"


def defined_symbols(obj: Path) -> list[tuple[str, str]]:
    """(type letter, mangled name) of the symbols obj defines."""
    out = subprocess.run(["nm", "--defined-only", "--format=posix", str(obj)], check=True,
                         capture_output=True, text=True).stdout
    symbols = []
    for line in out.splitlines():
        fields = line.split()  # name type [value size]
        if len(fields) >= 2 and len(fields[1]) == 1:
            symbols.append((fields[1], fields[0]))
    return symbols


def demangle(names: list[str]) -> list[str]:
    if not names:
        return []
    try:
        out = subprocess.run(["c++filt"], input="\n".join(names), check=True, capture_output=True,
                             text=True).stdout.splitlines()
        return out if len(out) == len(names) else names
    except (OSError, subprocess.CalledProcessError):
        return names


def find_objects(roots: list[Path]) -> list[tuple[Path, str]]:
    found = []
    for root in roots:
        for obj in sorted(root.rglob("*.o")):
            isa = isa_of(obj.relative_to(root))
            if isa is not None:
                found.append((obj, isa))
    return found


def main(argv: list[str]) -> int:
    roots = [Path(a) for a in argv] or [Path("build")]
    missing = [str(r) for r in roots if not r.is_dir()]
    if missing:
        print(f"check_isa_objects: no such directory: {', '.join(missing)}", file=sys.stderr)
        return 1
    objects = find_objects(roots)
    isas = sorted({isa for _, isa in objects})
    if not objects:
        print(f"check_isa_objects: no per-ISA object under {', '.join(map(str, roots))} "
              "(fc_kernels_<isa>.dir/*.o, gemm_<isa>.cpp.o): nothing was checked", file=sys.stderr)
        return 1
    if platform.machine().lower() in ("x86_64", "amd64") and not {"avx2", "avx512"} <= set(isas):
        print(f"check_isa_objects: found objects for {isas} only; an x86-64 build has avx2 "
              "and avx512 ones too", file=sys.stderr)
        return 1
    bad = 0
    for obj, isa in objects:
        try:
            symbols = defined_symbols(obj)
        except (OSError, subprocess.CalledProcessError) as e:
            print(f"check_isa_objects: nm failed on {obj}: {e}", file=sys.stderr)
            return 2
        foreign = sorted({(kind, name) for kind, name in symbols
                          if is_global(kind) and name not in ALLOWED and not in_namespace(name, isa)},
                         key=lambda s: s[1])
        if foreign:
            bad += len(foreign)
            print(f"{obj}: {len(foreign)} global symbol(s) outside fastconv::cpu::{isa}:")
            for (kind, _), shown in zip(foreign, demangle([n for _, n in foreign])):
                print(f"  {kind} {shown}")
    if bad:
        print(f"check_isa_objects: {bad} symbol(s) in {len(objects)} objects would be shared "
              "across ISAs; give them internal linkage or move them into the ISA's namespace",
              file=sys.stderr)
        return 1
    print(f"check_isa_objects: {len(objects)} objects ({', '.join(isas)}): every global symbol "
          "is in its ISA's namespace")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
