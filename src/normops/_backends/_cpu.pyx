# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""Bindings of the C kernels in cext/ (see cext/normops.h for their contract). Callers
pass C-contiguous (outer, C, inner) arrays and validated per-channel arrays; every
kernel runs with the GIL released."""
cimport numpy as cnp

cnp.import_array()

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


cdef inline bint _native(cnp.ndarray a):
    """Aligned and in the machine's byte order, as the kernels read it (the type number
    of a byte-swapped array is that of the native type)."""
    return cnp.PyArray_ISNOTSWAPPED(a) and cnp.PyArray_ISALIGNED(a)


cdef int _typenum(cnp.ndarray x) except -1:
    """x's NumPy type number: float32 or float64, else TypeError."""
    cdef int t = cnp.PyArray_TYPE(x)
    if (t != cnp.NPY_FLOAT32 and t != cnp.NPY_FLOAT64) or not _native(x):
        raise TypeError(f"normops._cpu: x must be an aligned float32 or float64 array in "
                        f"native byte order, got {x.dtype}")
    return t


cdef nm_shape _shape(cnp.ndarray x) except *:
    cdef nm_shape sh
    if cnp.PyArray_NDIM(x) != 3 or not cnp.PyArray_IS_C_CONTIGUOUS(x) or cnp.PyArray_SIZE(x) == 0:
        raise ValueError(f"normops._cpu: x must be a non-empty C-contiguous 3-D array, "
                         f"got shape {(<object>x).shape}")
    sh.outer, sh.channels, sh.inner = x.shape[0], x.shape[1], x.shape[2]
    return sh


cdef void *_block(object arr, int typenum, cnp.ndarray x, bint written, str name) except NULL:
    """The data of an x-like array: same shape and dtype, C-contiguous (writeable when
    ``written``)."""
    cdef cnp.ndarray a
    if not isinstance(arr, cnp.ndarray):
        raise TypeError(f"normops._cpu: {name} must be a numpy array, got {type(arr).__name__}")
    a = <cnp.ndarray>arr
    if (cnp.PyArray_TYPE(a) != typenum or not _native(a) or cnp.PyArray_NDIM(a) != 3
            or not cnp.PyArray_IS_C_CONTIGUOUS(a) or a.shape[0] != x.shape[0]
            or a.shape[1] != x.shape[1] or a.shape[2] != x.shape[2]):
        raise ValueError(f"normops._cpu: {name} must be a C-contiguous {x.dtype} array of "
                         f"shape {(<object>x).shape}, got {a.dtype} {(<object>a).shape}")
    if written and not cnp.PyArray_ISWRITEABLE(a):
        raise ValueError(f"normops._cpu: {name} is read-only")
    return cnp.PyArray_DATA(a)


cdef cnp.ndarray _channel_array(object arr, int typenum, Py_ssize_t channels, str name):
    """arr as a 1-D array of ``channels`` values of the type ``typenum`` (any stride)."""
    cdef cnp.ndarray a
    if not isinstance(arr, cnp.ndarray):
        raise TypeError(f"normops._cpu: {name} must be a numpy array, got {type(arr).__name__}")
    a = <cnp.ndarray>arr
    if (cnp.PyArray_TYPE(a) != typenum or not _native(a) or cnp.PyArray_NDIM(a) != 1
            or a.shape[0] != channels or a.strides[0] % cnp.PyArray_ITEMSIZE(a) != 0):
        raise ValueError(f"normops._cpu: {name} must hold {channels} values of type "
                         f"{cnp.PyArray_DescrFromType(typenum)}, got {a.dtype} {(<object>a).shape}")
    return a


cdef nm_vec _vec(object arr, int typenum, Py_ssize_t channels, bint written, str name) except *:
    """A per-channel array of the data's dtype (any stride), or absent for None. Read-only
    arrays are accepted where the kernel only reads them."""
    cdef nm_vec out
    cdef cnp.ndarray a
    out.data = NULL
    out.stride = 0
    if arr is not None:
        a = _channel_array(arr, typenum, channels, name)
        if written and (a.strides[0] == 0 or not cnp.PyArray_ISWRITEABLE(a)):
            raise ValueError(f"normops._cpu: {name} is written, so it must be writeable "
                             f"with a non-zero stride")
        out.data = cnp.PyArray_DATA(a)
        out.stride = a.strides[0] // cnp.PyArray_ITEMSIZE(a)
    return out


cdef double *_f64(object arr, Py_ssize_t channels, bint written, str name) except? NULL:
    """A contiguous float64 per-channel array, or NULL for None."""
    cdef cnp.ndarray a
    if arr is None:
        return NULL
    a = _channel_array(arr, cnp.NPY_FLOAT64, channels, name)
    if not cnp.PyArray_IS_C_CONTIGUOUS(a) or (written and not cnp.PyArray_ISWRITEABLE(a)):
        raise ValueError(f"normops._cpu: {name} must be contiguous"
                         + (" and writeable" if written else ""))
    return <double *>cnp.PyArray_DATA(a)


def forward(cnp.ndarray x, object y, str mode, object gamma=None, object beta=None,
            object running_mean=None, object running_spread=None, *, double eps=0.0,
            double momentum=0.0, double rmax=1.0, double dmax=0.0, bint unbiased=True,
            object a=None, object b=None, object mean=None, object m2=None,
            object invstd=None, object r=None, object d=None):
    """Runs nm_forward on x, a C-contiguous (outer, C, inner) float32 or float64 array:
    y (None for mode "stats") has x's shape and dtype; gamma, beta and the running
    statistics have x's dtype; a, b and the outputs mean, m2, invstd, r, d are contiguous
    float64 arrays. Every array is checked for type, shape and (where written)
    writeability; the Python layer has checked the values."""
    cdef nm_forward_args A
    cdef int typenum = _typenum(x)
    cdef nm_shape sh = _shape(x)
    cdef Py_ssize_t C = sh.channels
    cdef bint train = mode == "bn_train" or mode == "brn_train"
    cdef void *out_ptr = NULL
    cdef int status
    A.mode = FORWARD_MODES[mode]
    if A.mode != NM_FWD_STATS:
        out_ptr = _block(y, typenum, x, True, "y")
    A.gamma = _vec(gamma, typenum, C, False, "gamma")
    A.beta = _vec(beta, typenum, C, False, "beta")
    A.running_mean = _vec(running_mean, typenum, C, train, "running_mean")
    A.running_spread = _vec(running_spread, typenum, C, train, "running_spread")
    A.eps, A.momentum, A.rmax, A.dmax, A.unbiased = eps, momentum, rmax, dmax, unbiased
    A.a_in, A.b_in = _f64(a, C, False, "a"), _f64(b, C, False, "b")
    A.mean, A.m2 = _f64(mean, C, True, "mean"), _f64(m2, C, True, "m2")
    A.invstd = _f64(invstd, C, True, "invstd")
    A.r, A.d = _f64(r, C, True, "r"), _f64(d, C, True, "d")
    with nogil:
        if typenum == cnp.NPY_FLOAT32:
            status = nm_forward_f32(sh, <const float *>cnp.PyArray_DATA(x), <float *>out_ptr, &A)
        else:
            status = nm_forward_f64(sh, <const double *>cnp.PyArray_DATA(x), <double *>out_ptr, &A)
    if status != 0:
        raise MemoryError("normops: out of memory for the kernel's scratch space")


def backward(cnp.ndarray dy, cnp.ndarray x, object dx, str mode, *, bint training=True,
             object mean=None, object invstd=None, object r=None, object d=None,
             object gamma=None, object dgamma=None, object dbeta=None, object sum_dy=None,
             object sum_dy_xmu=None, object p=None, object q=None, object s=None):
    """Runs nm_backward: dy, and dx (None for mode "grad_stats") have x's shape and dtype;
    gamma, dgamma and dbeta have x's dtype (dgamma, dbeta contiguous), the rest are
    contiguous float64 arrays."""
    cdef nm_backward_args A
    cdef int typenum = _typenum(x)
    cdef nm_shape sh = _shape(x)
    cdef Py_ssize_t C = sh.channels
    cdef const void *dy_ptr = _block(dy, typenum, x, False, "dy")
    cdef void *out_ptr = NULL
    cdef int status
    A.mode = BACKWARD_MODES[mode]
    if A.mode != NM_BWD_GRAD_STATS:
        out_ptr = _block(dx, typenum, x, True, "dx")
    A.training = training
    A.mean, A.invstd = _f64(mean, C, False, "mean"), _f64(invstd, C, False, "invstd")
    A.r, A.d = _f64(r, C, False, "r"), _f64(d, C, False, "d")
    A.gamma = _vec(gamma, typenum, C, False, "gamma")
    A.dgamma = A.dbeta = NULL
    if dgamma is not None:
        A.dgamma = _contiguous_out(dgamma, typenum, C, "dgamma")
        A.dbeta = _contiguous_out(dbeta, typenum, C, "dbeta")
    A.sum_dy, A.sum_dy_xmu = _f64(sum_dy, C, True, "sum_dy"), _f64(sum_dy_xmu, C, True, "sum_dy_xmu")
    A.p, A.q, A.s = _f64(p, C, False, "p"), _f64(q, C, False, "q"), _f64(s, C, False, "s")
    with nogil:
        if typenum == cnp.NPY_FLOAT32:
            status = nm_backward_f32(sh, <const float *>dy_ptr, <const float *>cnp.PyArray_DATA(x),
                                     <float *>out_ptr, &A)
        else:
            status = nm_backward_f64(sh, <const double *>dy_ptr, <const double *>cnp.PyArray_DATA(x),
                                     <double *>out_ptr, &A)
    if status != 0:
        raise MemoryError("normops: out of memory for the kernel's scratch space")


cdef void *_contiguous_out(object arr, int typenum, Py_ssize_t channels, str name) except NULL:
    cdef cnp.ndarray a = _channel_array(arr, typenum, channels, name)
    if not cnp.PyArray_IS_C_CONTIGUOUS(a) or not cnp.PyArray_ISWRITEABLE(a):
        raise ValueError(f"normops._cpu: {name} must be contiguous and writeable")
    return cnp.PyArray_DATA(a)


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
    """The bytes of an op's arrays (inputs and output, each counted once) from which its
    float32 output is written around the cache, when the AVX2 loops run."""
    return nm_stream_bytes()


def _set_stream_bytes(size_t nbytes):
    """Tests only: stream from arrays of this many bytes on (0: every op)."""
    nm_set_stream_bytes(nbytes)


def streamed_ops():
    """How many ops have written their output with streaming stores since import."""
    return nm_streamed_ops()


def build_info():
    """The compiler and flags the kernels were built with."""
    return nm_build_info().decode()
