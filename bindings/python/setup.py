"""Builds the optional compiled per-op path, the extension libautograd._native (_native.c).

The package's metadata is in pyproject.toml; this file only adds the extension. It is optional:
where it cannot be compiled (no C compiler, no Python headers) setuptools says so and the package
installs without it, pure Python over ctypes (the same results, more time per op). The
extension does not link against libautograd.so: it uses the functions the package loads at
import (see libautograd/_accel.py).
"""

import sys

from setuptools import Extension, setup

# Python 3.8 keeps the pure path (the extension uses the vectorcall API of 3.9 and later).
ext_modules = []
if sys.version_info >= (3, 9) and sys.implementation.name == "cpython":
    ext_modules.append(Extension("libautograd._native", sources=["libautograd/_native.c"],
                                 optional=True))

setup(ext_modules=ext_modules)
