"""Only the compiled extension lives here; all metadata is in pyproject.toml."""
from pybind11.setup_helpers import Pybind11Extension
from setuptools import setup

setup(
    ext_modules=[
        Pybind11Extension(
            "infolens._sampling",
            ["cpp_ext/sampling.cpp"],
            cxx_std=17,
            extra_compile_args=["-O3", "-ffp-contract=off"],  # no FMA: bit-exact with numpy
        )
    ],
)
