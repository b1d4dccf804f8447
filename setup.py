"""Only the compiled extension lives here; all metadata is in pyproject.toml.  The extension is optional: without a
C++17 compiler the install still succeeds and infolens uses its numpy kernels (same results, slower; kernels.py
says so once)."""
from pybind11.setup_helpers import Pybind11Extension
from setuptools import setup

setup(
    ext_modules=[
        Pybind11Extension(
            "infolens._sampling",
            ["cpp_ext/sampling.cpp"],
            cxx_std=17,
            extra_compile_args=["-O3", "-ffp-contract=off"],  # no FMA: bit-exact with numpy
            optional=True,
        )
    ],
)
