"""Builds the optional CPU kernels of the KAN layer op (kanmodel/csrc) at install time;
everything else about the package is in pyproject.toml.

torch must be importable while building (pip install --no-build-isolation, torch
installed first, see the Makefile). Without torch or without a working C++ compiler the
install still succeeds, without the extension: kanmodel.spline_op then uses its torch path.
"""
from setuptools import setup

try:
    from torch.utils.cpp_extension import BuildExtension, CppExtension
except ImportError:
    print("kanserve: torch is not importable at build time; "
          "installing without the compiled spline kernels")
    ext_modules, cmdclass = [], {}
else:
    ext_modules = [CppExtension(
        "kanmodel._spline_kernels", ["kanmodel/csrc/spline_kernels.cpp"],
        extra_compile_args=["-O3"],
        # A failed compile is a warning, not a failed install (the torch path remains).
        optional=True)]
    # Without ninja: its build errors are not the compiler errors that `optional` catches.
    cmdclass = {"build_ext": BuildExtension.with_options(use_ninja=False)}

setup(ext_modules=ext_modules, cmdclass=cmdclass)
