"""Build script for the cpu backend's extension (metadata lives in pyproject.toml).

Environment variables read at build time:
  NORMOPS_REQUIRE_OPENMP=1  fail instead of building the serial fallback when the
                            compiler has no OpenMP (CI sets it)
  NORMOPS_NATIVE=1          add -march=native (a binary for this machine only)
  NORMOPS_SANITIZE=1        build with -fsanitize=address,undefined (for the tests)
"""
import os
import shutil
import sys
import tempfile
import textwrap
import warnings

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

OPENMP_PROBE = textwrap.dedent("""
    #include <omp.h>
    int main(void) {
        int n = 0;
        #pragma omp parallel reduction(+:n)
        n += 1;
        return n == omp_get_max_threads() ? 0 : 1;
    }
""")


def _flag(name):
    return os.environ.get(name, "") not in ("", "0")


def _first_working_flags(compiler, candidates, probe):
    """The first candidate flag list with which ``probe`` compiles, links; None if none."""
    tmp = tempfile.mkdtemp(prefix="normops-probe-")
    try:
        source = os.path.join(tmp, "probe.c")
        with open(source, "w") as f:
            f.write(probe)
        for flags in candidates:
            try:
                objects = compiler.compile([source], output_dir=tmp, extra_postargs=flags)
                compiler.link_executable(objects, "probe", output_dir=tmp, extra_postargs=flags)
                return flags
            except Exception:  # any compile or link failure means: not with these flags
                continue
        return None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _openmp_flags(compiler):
    candidates = [["/openmp"], ["-openmp"]] if compiler.compiler_type == "msvc" else [["-fopenmp"]]
    return _first_working_flags(compiler, candidates, OPENMP_PROBE)


def _simd_flags(compiler):
    """Without OpenMP, the kernels' ``omp simd`` loops still vectorize with -fopenmp-simd."""
    if compiler.compiler_type == "msvc":
        return []
    return _first_working_flags(compiler, [["-fopenmp-simd"]], "int main(void) { return 0; }\n") or []


class BuildExt(build_ext):
    def build_extensions(self):
        msvc = self.compiler.compiler_type == "msvc"
        # -fno-math-errno: sqrt never has to set errno, so the per-channel loops vectorize.
        # -ffp-contract=off: no fused multiply-adds the source does not ask for, so the
        # portable loops and their AVX2 versions (cext/simd.c) round alike.
        compile_args = (["/O2"] if msvc else
                        ["-O3", "-std=c99", "-fno-math-errno", "-ffp-contract=off"])
        link_args = []
        openmp = _openmp_flags(self.compiler)
        if openmp is None:
            message = ("normops: the C compiler has no OpenMP support; building the cpu "
                       "backend serial (one thread). Install an OpenMP runtime (libgomp, "
                       "libomp) to get the parallel kernels.")
            if _flag("NORMOPS_REQUIRE_OPENMP"):
                raise RuntimeError(message + " (NORMOPS_REQUIRE_OPENMP is set)")
            warnings.warn(message)
            print(message, file=sys.stderr)
            compile_args += _simd_flags(self.compiler)
        else:
            compile_args += openmp
            link_args += [] if msvc else openmp
        if _flag("NORMOPS_NATIVE") and not msvc:
            compile_args.append("-march=native")
        if _flag("NORMOPS_SANITIZE") and not msvc:
            sanitize = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all",
                        "-fno-omit-frame-pointer", "-g"]
            compile_args += sanitize
            link_args += sanitize
        build_flags = " ".join(compile_args)
        for ext in self.extensions:
            ext.extra_compile_args = compile_args + list(ext.extra_compile_args)
            ext.extra_link_args = link_args + list(ext.extra_link_args)
            ext.define_macros = list(ext.define_macros) + [("NM_BUILD_FLAGS", f'"{build_flags}"')]
        super().build_extensions()


kernels = Extension(
    "normops._backends._cpu",
    sources=["src/normops/_backends/_cpu.pyx", "cext/kernels.c", "cext/simd.c", "cext/threads.c",
             "cext/build_info.c"],
    # the bindings read array pointers, types and flags through NumPy's C API
    include_dirs=["cext", numpy.get_include()],
    define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    depends=["cext/normops.h", "cext/simd.h", "cext/half.h", "cext/threads.h", "cext/channel.inc",
             "cext/simd_sums.inc", "cext/simd_half.inc", "cext/half_instance.inc",
             "cext/undef.inc",
             "cext/planes.inc", "cext/rows.inc", "cext/entry.inc"],
)

buffers = Extension(
    "normops._backends._buffers",
    sources=["src/normops/_backends/_buffers.pyx", "cext/pages.c"],
    include_dirs=["cext"],
    depends=["cext/pages.h"],
)

setup(
    ext_modules=cythonize([kernels, buffers], compiler_directives={"language_level": 3}),
    cmdclass={"build_ext": BuildExt},
)
