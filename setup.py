"""Packages, the config data they ship, and the optional compiled GEMM of the structured layers.

conf/, sweeps/ and searches/ stay top-level folders of the repository and install as the data packages `scaling.conf`,
`scaling.sweep_files` and `analysis.search_files` (folders of YAML, no Python), which scaling.config.compose and
analysis.search.spec find with importlib; an editable
install maps them back onto the checkout's folders. Everything else is configured in pyproject.toml.

The extensions are plain C (no Python API, loaded with ctypes): the offset GEMM (csrc/offset_gemm.c, by
scaling.structures.fastpath.native) and the AMX two-core kernel (csrc/amx_two_core.c, by ...fastpath.amx), both
on the thread pool of csrc/fan_out.h. They are
built on x86-64 only and marked optional, so a failed build leaves the PyTorch path in place instead of failing the
install.
"""

import platform
from pathlib import Path

from setuptools import Extension, find_packages, setup


def data_packages(package: str, folder: str) -> dict[str, str]:
    """`package` -> `folder`, and one subpackage per subfolder (conf/model -> scaling.conf.model)."""
    root = Path(folder)
    folders = [root, *sorted(p for p in root.rglob("*") if p.is_dir() and p.name != "__pycache__")]
    return {".".join([package, *d.relative_to(root).parts]): d.as_posix() for d in folders}


DATA_PACKAGES = (data_packages("scaling.conf", "conf") | data_packages("scaling.sweep_files", "sweeps")
                 | data_packages("analysis.search_files", "searches"))

C_SOURCES = ("offset_gemm", "amx_two_core")  # scaling/structures/fastpath/csrc/NAME.c -> ...fastpath._NAME
extensions = [
    Extension(f"scaling.structures.fastpath._{name}", sources=[f"scaling/structures/fastpath/csrc/{name}.c"],
              depends=["scaling/structures/fastpath/csrc/fan_out.h"],  # the thread pool both include
              extra_compile_args=["-O3", "-std=c11"], libraries=["pthread"], optional=True)
    for name in C_SOURCES
] if platform.machine().lower() in {"x86_64", "amd64"} else []

setup(
    packages=[*find_packages(include=["scaling*", "analysis*"]), *DATA_PACKAGES],
    package_dir=DATA_PACKAGES,
    package_data={name: ["*.yaml"] for name in DATA_PACKAGES},
    ext_modules=extensions,
)
