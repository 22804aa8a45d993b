"""Builds the optional compiled GEMM of the structured layers (scaling/structures/csrc/offset_gemm.c).

Everything else is configured in pyproject.toml. The extension is plain C (no Python API, loaded with ctypes by
scaling.structures.native); it is built on x86-64 only and marked optional, so a failed build leaves the
PyTorch path in place instead of failing the install.
"""

import platform

from setuptools import Extension, setup

extensions = []
if platform.machine().lower() in {"x86_64", "amd64"}:
    extensions.append(
        Extension(
            "scaling.structures._offset_gemm",
            sources=["scaling/structures/csrc/offset_gemm.c"],
            extra_compile_args=["-O3", "-std=c11"],
            libraries=["pthread"],
            optional=True,
        )
    )

setup(ext_modules=extensions)
