# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""Bindings of the C kernels in cext/ (see cext/normops.h for their contract). Callers
pass C-contiguous (outer, C, inner) arrays and validated per-channel arrays; every
kernel runs with the GIL released."""
from cython cimport floating

cdef extern from "normops.h" nogil:
    ctypedef struct nm_shape:
        Py_ssize_t outer, channels, inner
    ctypedef struct nm_vec:
        void *data
        Py_ssize_t stride
    ctypedef enum nm_forward_mode:
        NM_FWD_STATS, NM_FWD_AFFINE, NM_FWD_BN_TRAIN, NM_FWD_BN_EVAL, NM_FWD_BRN_TRAIN,
        NM_FWD_BRN_EVAL
    ctypedef struct nm_forward_args:
        nm_forward_mode mode
        nm_vec gamma, beta, running_mean, running_spread
        double eps, momentum, rmax, dmax
        int unbiased
        const double *a_in
        const double *b_in
        double *mean
        double *m2
        double *invstd
        double *r
        double *d
    ctypedef enum nm_backward_mode:
        NM_BWD_GRAD_STATS, NM_BWD_GRAD_INPUT, NM_BWD_FUSED
    ctypedef struct nm_backward_args:
        nm_backward_mode mode
        int training
        const double *mean
        const double *invstd
        const double *r
        const double *d
        nm_vec gamma
        void *dgamma
        void *dbeta
        double *sum_dy
        double *sum_dy_xmu
        const double *p
        const double *q
        const double *s
    int nm_forward_f32(nm_shape, const float *, float *, const nm_forward_args *)
    int nm_forward_f64(nm_shape, const double *, double *, const nm_forward_args *)
    int nm_backward_f32(nm_shape, const float *, const float *, float *, const nm_backward_args *)
    int nm_backward_f64(nm_shape, const double *, const double *, double *, const nm_backward_args *)
    int nm_openmp_enabled()
    int nm_get_num_threads()
    void nm_set_num_threads(int)
    int nm_simd_enabled()
    void nm_set_simd(int)
    size_t nm_stream_bytes()
    void nm_set_stream_bytes(size_t)
    size_t nm_streamed_ops()
    void nm_copy(void *, const void *, size_t)
    const char *nm_build_info()

# modes, by the names the Python layer uses
FORWARD_MODES = {"stats": NM_FWD_STATS, "affine": NM_FWD_AFFINE, "bn_train": NM_FWD_BN_TRAIN,
                 "bn_eval": NM_FWD_BN_EVAL, "brn_train": NM_FWD_BRN_TRAIN,
                 "brn_eval": NM_FWD_BRN_EVAL}
BACKWARD_MODES = {"grad_stats": NM_BWD_GRAD_STATS, "grad_input": NM_BWD_GRAD_INPUT,
                  "fused": NM_BWD_FUSED}


cdef nm_vec _vec(object arr, floating *dtype_tag) except *:
    """A per-channel array of the data's dtype (any stride), or absent for None. Read-only
    arrays are accepted: the kernels write only running statistics in training, which
    the validation layer has checked are writeable."""
    cdef nm_vec out
    cdef const floating[:] view
    out.data = NULL
    out.stride = 0
    if arr is not None:
        view = arr
        out.data = <void *>&view[0]
        out.stride = view.strides[0] // <Py_ssize_t>sizeof(floating)
    return out


cdef double *_f64(object arr) except? NULL:
    """A contiguous float64 per-channel array, or NULL for None (read-only arrays are
    accepted for the kernels' inputs)."""
    cdef const double[::1] view
    if arr is None:
        return NULL
    view = arr
    return <double *>&view[0]


cdef floating *_out(object arr, floating *dtype_tag) except *:
    """The data of an output array of the data's dtype (C-contiguous, 3-D), or NULL for None."""
    cdef floating[:, :, ::1] view
    if arr is None:
        return NULL
    view = arr
    return &view[0, 0, 0]


cdef nm_shape _shape(const floating[:, :, ::1] x):
    cdef nm_shape sh
    sh.outer, sh.channels, sh.inner = x.shape[0], x.shape[1], x.shape[2]
    return sh


def forward(const floating[:, :, ::1] x, object y, str mode, object gamma=None,
            object beta=None, object running_mean=None, object running_spread=None, *,
            double eps=0.0, double momentum=0.0, double rmax=1.0, double dmax=0.0,
            bint unbiased=True, object a=None, object b=None, object mean=None,
            object m2=None, object invstd=None, object r=None, object d=None):
    """Runs nm_forward: y (or None for mode "stats") has x's shape and dtype; the
    per-channel outputs mean, m2, invstd, r, d are contiguous float64 arrays."""
    cdef nm_forward_args A
    cdef floating *out_ptr = _out(y, <floating *>NULL)
    cdef nm_shape sh = _shape(x)
    cdef int status
    A.mode = FORWARD_MODES[mode]
    A.gamma = _vec(gamma, <floating *>NULL)
    A.beta = _vec(beta, <floating *>NULL)
    A.running_mean = _vec(running_mean, <floating *>NULL)
    A.running_spread = _vec(running_spread, <floating *>NULL)
    A.eps, A.momentum, A.rmax, A.dmax, A.unbiased = eps, momentum, rmax, dmax, unbiased
    A.a_in, A.b_in = _f64(a), _f64(b)
    A.mean, A.m2, A.invstd, A.r, A.d = _f64(mean), _f64(m2), _f64(invstd), _f64(r), _f64(d)
    with nogil:
        if floating is float:
            status = nm_forward_f32(sh, &x[0, 0, 0], out_ptr, &A)
        else:
            status = nm_forward_f64(sh, &x[0, 0, 0], out_ptr, &A)
    if status != 0:
        raise MemoryError("normops: out of memory for the kernel's scratch space")


def backward(const floating[:, :, ::1] dy, const floating[:, :, ::1] x, object dx, str mode,
             *, bint training=True, object mean=None, object invstd=None, object r=None,
             object d=None, object gamma=None, object dgamma=None, object dbeta=None,
             object sum_dy=None, object sum_dy_xmu=None, object p=None, object q=None,
             object s=None):
    """Runs nm_backward: dx (or None for mode "grad_stats") has x's shape and dtype;
    dgamma and dbeta are contiguous arrays of the data's dtype, the rest float64."""
    cdef nm_backward_args A
    cdef floating *out_ptr = _out(dx, <floating *>NULL)
    cdef floating[::1] dgamma_view, dbeta_view
    cdef nm_shape sh = _shape(x)
    cdef int status
    A.mode = BACKWARD_MODES[mode]
    A.training = training
    A.mean, A.invstd, A.r, A.d = _f64(mean), _f64(invstd), _f64(r), _f64(d)
    A.gamma = _vec(gamma, <floating *>NULL)
    A.dgamma = A.dbeta = NULL
    if dgamma is not None:
        dgamma_view, dbeta_view = dgamma, dbeta
        A.dgamma, A.dbeta = &dgamma_view[0], &dbeta_view[0]
    A.sum_dy, A.sum_dy_xmu = _f64(sum_dy), _f64(sum_dy_xmu)
    A.p, A.q, A.s = _f64(p), _f64(q), _f64(s)
    with nogil:
        if floating is float:
            status = nm_backward_f32(sh, &dy[0, 0, 0], &x[0, 0, 0], out_ptr, &A)
        else:
            status = nm_backward_f64(sh, &dy[0, 0, 0], &x[0, 0, 0], out_ptr, &A)
    if status != 0:
        raise MemoryError("normops: out of memory for the kernel's scratch space")


def copy_into(dst, src):
    """Copies the C-contiguous array src into dst (same byte size) with the kernels'
    threads: the copy-bandwidth baseline of the benchmarks."""
    cdef unsigned char[::1] d = memoryview(dst).cast("B")
    cdef const unsigned char[::1] s = memoryview(src).cast("B")
    if d.shape[0] != s.shape[0]:
        raise ValueError(f"copy_into: dst has {d.shape[0]} bytes, src {s.shape[0]}")
    if d.shape[0]:
        with nogil:
            nm_copy(&d[0], &s[0], <size_t>d.shape[0])


def openmp_enabled():
    return bool(nm_openmp_enabled())


def get_num_threads():
    return nm_get_num_threads()


def set_num_threads(int n):
    nm_set_num_threads(n)


def simd_enabled():
    """Whether the float32 statistics run their AVX2 + FMA loops (same bits as the portable ones)."""
    return bool(nm_simd_enabled())


def _set_simd(bint on):
    """Tests only: turn the AVX2 loops off (or back on where the CPU has them). Kernels
    running in other threads meanwhile may take either kind of loop."""
    nm_set_simd(on)


def stream_bytes():
    """The traffic (bytes an op reads and writes) from which float32 outputs are written
    around the cache, when the AVX2 loops run."""
    return nm_stream_bytes()


def _set_stream_bytes(size_t nbytes):
    """Tests only: stream from this much traffic on (0: every op)."""
    nm_set_stream_bytes(nbytes)


def streamed_ops():
    """How many ops have written their output with streaming stores since import."""
    return nm_streamed_ops()


def build_info():
    """The compiler and flags the kernels were built with."""
    return nm_build_info().decode()
