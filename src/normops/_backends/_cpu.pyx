# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""Bindings of the C kernels in cext/ (see cext/normops.h for their contract). Callers
pass C-contiguous (outer, C, inner) arrays and validated per-channel arrays; every
kernel runs with the GIL released. Data may be float32, float64, float16 or bfloat16
(ml_dtypes' NumPy dtype, recognized by name: its type number is assigned at run time);
the per-channel arrays of half data may be float32 or the data's dtype."""
cimport numpy as cnp
from libc.float cimport DBL_MAX
from libc.math cimport INFINITY

cnp.import_array()

cdef extern from "normops.h" nogil:
    ctypedef struct nm_shape:
        Py_ssize_t outer, channels, inner
    ctypedef enum nm_dtype:
        NM_F32, NM_F64, NM_F16, NM_BF16
    ctypedef unsigned short nm_half
    ctypedef struct nm_vec:
        void *data
        Py_ssize_t stride
        nm_dtype dtype
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
        nm_dtype grad_dtype
        double *sum_dy
        double *sum_dy_xmu
        const double *p
        const double *q
        const double *s
    int nm_forward_f32(nm_shape, const float *, float *, const nm_forward_args *)
    int nm_forward_f64(nm_shape, const double *, double *, const nm_forward_args *)
    int nm_backward_f32(nm_shape, const float *, const float *, float *, const nm_backward_args *)
    int nm_backward_f64(nm_shape, const double *, const double *, double *, const nm_backward_args *)
    int nm_forward_f16(nm_shape, const nm_half *, nm_half *, const nm_forward_args *)
    int nm_forward_bf16(nm_shape, const nm_half *, nm_half *, const nm_forward_args *)
    int nm_backward_f16(nm_shape, const nm_half *, const nm_half *, nm_half *, const nm_backward_args *)
    int nm_backward_bf16(nm_shape, const nm_half *, const nm_half *, nm_half *, const nm_backward_args *)
    int nm_openmp_enabled()
    int nm_get_num_threads()
    void nm_set_num_threads(int)
    int nm_max_threads()
    int nm_forked_child()
    Py_ssize_t nm_get_min_values_per_thread()
    void nm_set_min_values_per_thread(Py_ssize_t)
    int nm_team_for(Py_ssize_t)
    int nm_simd_enabled()
    void nm_set_simd(int)
    size_t nm_stream_bytes()
    void nm_set_stream_bytes(size_t)
    size_t nm_streamed_ops()
    size_t nm_pipelined_ops()
    void nm_copy(void *, const void *, size_t)
    const char *nm_build_info()

# modes, by the names the Python layer uses
FORWARD_MODES = {"stats": NM_FWD_STATS, "affine": NM_FWD_AFFINE, "bn_train": NM_FWD_BN_TRAIN,
                 "bn_eval": NM_FWD_BN_EVAL, "brn_train": NM_FWD_BRN_TRAIN,
                 "brn_eval": NM_FWD_BRN_EVAL}
BACKWARD_MODES = {"grad_stats": NM_BWD_GRAD_STATS, "grad_input": NM_BWD_GRAD_INPUT,
                  "fused": NM_BWD_FUSED}


cdef nm_dtype _kind(cnp.ndarray a) except *:
    """a's element type for the kernels: float32, float64, float16 or bfloat16 in native
    byte order (a byte-swapped array has the type number of the native type), else
    TypeError."""
    cdef int t = cnp.PyArray_TYPE(a)
    if cnp.PyArray_ISNOTSWAPPED(a):
        if t == cnp.NPY_FLOAT32:
            return NM_F32
        if t == cnp.NPY_FLOAT64:
            return NM_F64
        if t == cnp.NPY_FLOAT16:
            return NM_F16
        if t >= 256 and a.dtype.name == "bfloat16":   # NPY_USERDEF: a dtype of ml_dtypes
            return NM_BF16
    raise TypeError(f"normops._cpu: arrays must be float32, float64, float16 or bfloat16 in "
                    f"native byte order, got {a.dtype}")


cdef bint _half(nm_dtype kind):
    return kind == NM_F16 or kind == NM_BF16


cdef nm_shape _shape(cnp.ndarray x) except *:
    cdef nm_shape sh
    if (cnp.PyArray_NDIM(x) != 3 or not cnp.PyArray_IS_C_CONTIGUOUS(x)
            or not cnp.PyArray_ISALIGNED(x) or cnp.PyArray_SIZE(x) == 0):
        raise ValueError(f"normops._cpu: x must be a non-empty, aligned, C-contiguous 3-D "
                         f"array, got shape {(<object>x).shape}")
    sh.outer, sh.channels, sh.inner = x.shape[0], x.shape[1], x.shape[2]
    return sh


cdef void *_block(object arr, cnp.ndarray x, bint written, str name) except NULL:
    """The data of an x-like array: same shape and dtype (byte order included), aligned,
    C-contiguous (writeable when ``written``)."""
    cdef cnp.ndarray a
    if not isinstance(arr, cnp.ndarray):
        raise TypeError(f"normops._cpu: {name} must be a numpy array, got {type(arr).__name__}")
    a = <cnp.ndarray>arr
    if (cnp.PyArray_TYPE(a) != cnp.PyArray_TYPE(x) or not cnp.PyArray_ISNOTSWAPPED(a)
            or cnp.PyArray_NDIM(a) != 3 or not cnp.PyArray_IS_C_CONTIGUOUS(a)
            or not cnp.PyArray_ISALIGNED(a) or a.shape[0] != x.shape[0]
            or a.shape[1] != x.shape[1] or a.shape[2] != x.shape[2]):
        raise ValueError(f"normops._cpu: {name} must be an aligned C-contiguous {x.dtype} "
                         f"array of shape {(<object>x).shape}, got {a.dtype} {(<object>a).shape}")
    if written and not cnp.PyArray_ISWRITEABLE(a):
        raise ValueError(f"normops._cpu: {name} is read-only")
    return cnp.PyArray_DATA(a)


cdef cnp.ndarray _channel_array(object arr, cnp.ndarray x, Py_ssize_t channels, bint written,
                                str name, list keep):
    """arr as a 1-D array of ``channels`` values of x's native type (or float32 for half
    x), any stride. An unaligned array that is only read is replaced by an aligned copy,
    which ``keep`` holds until the kernel returns; one that is written must be aligned,
    writeable, and (for more than one channel) have a non-zero stride."""
    cdef cnp.ndarray a
    cdef bint same
    if not isinstance(arr, cnp.ndarray):
        raise TypeError(f"normops._cpu: {name} must be a numpy array, got {type(arr).__name__}")
    a = <cnp.ndarray>arr
    same = (cnp.PyArray_TYPE(a) == cnp.PyArray_TYPE(x)
            or (cnp.PyArray_TYPE(a) == cnp.NPY_FLOAT32 and _half(_kind(x))))
    if (not same or not cnp.PyArray_ISNOTSWAPPED(a)
            or cnp.PyArray_NDIM(a) != 1 or a.shape[0] != channels
            or a.strides[0] % cnp.PyArray_ITEMSIZE(a) != 0):
        raise ValueError(f"normops._cpu: {name} must hold {channels} values of x's type "
                         f"{x.dtype} (or float32 for half x) in native byte order, "
                         f"got {a.dtype} {(<object>a).shape}")
    if written:
        if (not cnp.PyArray_ISWRITEABLE(a) or not cnp.PyArray_ISALIGNED(a)
                or (a.strides[0] == 0 and channels > 1)):
            raise ValueError(f"normops._cpu: {name} is written, so it must be writeable, "
                             f"aligned and, for several channels, not a broadcast view")
    elif not cnp.PyArray_ISALIGNED(a):
        a = <cnp.ndarray>cnp.PyArray_NewCopy(a, cnp.NPY_CORDER)
        keep.append(a)
    return a


cdef nm_vec _vec(object arr, cnp.ndarray x, Py_ssize_t channels, bint written, str name,
                 list keep) except *:
    """A per-channel array of the data's dtype (or float32 for half data; any stride), or
    absent for None."""
    cdef nm_vec out
    cdef cnp.ndarray a
    out.data = NULL
    out.stride = 0
    out.dtype = _kind(x)
    if arr is not None:
        a = _channel_array(arr, x, channels, written, name, keep)
        out.data = cnp.PyArray_DATA(a)
        out.stride = a.strides[0] // cnp.PyArray_ITEMSIZE(a)
        out.dtype = _kind(a)
    return out


cdef void *_contiguous(object arr, cnp.ndarray x, Py_ssize_t channels, bint written, str name,
                       list keep) except? NULL:
    """A contiguous per-channel array of x's type (or float32 for half x), or NULL for None."""
    cdef cnp.ndarray a
    if arr is None:
        return NULL
    a = _channel_array(arr, x, channels, written, name, keep)
    if not cnp.PyArray_IS_C_CONTIGUOUS(a):
        raise ValueError(f"normops._cpu: {name} must be contiguous")
    return cnp.PyArray_DATA(a)


cdef double *_f64(object arr, Py_ssize_t channels, bint written, str name,
                  list keep) except? NULL:
    """A contiguous float64 per-channel array, or NULL for None."""
    cdef cnp.ndarray a
    if arr is None:
        return NULL
    if not isinstance(arr, cnp.ndarray):
        raise TypeError(f"normops._cpu: {name} must be a numpy array, got {type(arr).__name__}")
    a = <cnp.ndarray>arr
    if (cnp.PyArray_TYPE(a) != cnp.NPY_FLOAT64 or not cnp.PyArray_ISNOTSWAPPED(a)
            or cnp.PyArray_NDIM(a) != 1 or a.shape[0] != channels
            or not cnp.PyArray_IS_C_CONTIGUOUS(a)):
        raise ValueError(f"normops._cpu: {name} must be a contiguous float64 array of "
                         f"{channels} values, got {a.dtype} {(<object>a).shape}")
    if written:
        if not cnp.PyArray_ISWRITEABLE(a) or not cnp.PyArray_ISALIGNED(a):
            raise ValueError(f"normops._cpu: {name} is written, so it must be writeable and "
                             f"aligned")
    elif not cnp.PyArray_ISALIGNED(a):
        a = <cnp.ndarray>cnp.PyArray_NewCopy(a, cnp.NPY_CORDER)
        keep.append(a)
    return <double *>cnp.PyArray_DATA(a)


cdef int _need(bint present, str what, str mode) except -1:
    if not present:
        raise ValueError(f"normops._cpu: mode {mode!r} needs {what}")
    return 0


cdef int _run_forward(nm_dtype kind, nm_shape sh, const void *x, void *y,
                      const nm_forward_args *A) except -1:
    """nm_forward of x's dtype ``kind``, without the GIL."""
    cdef int status
    with nogil:
        if kind == NM_F32:
            status = nm_forward_f32(sh, <const float *>x, <float *>y, A)
        elif kind == NM_F64:
            status = nm_forward_f64(sh, <const double *>x, <double *>y, A)
        elif kind == NM_F16:
            status = nm_forward_f16(sh, <const nm_half *>x, <nm_half *>y, A)
        else:
            status = nm_forward_bf16(sh, <const nm_half *>x, <nm_half *>y, A)
    if status != 0:
        raise MemoryError("normops: out of memory for the kernel's scratch space")
    return 0


cdef int _run_backward(nm_dtype kind, nm_shape sh, const void *dy, const void *x, void *dx,
                       const nm_backward_args *A) except -1:
    """nm_backward of x's dtype ``kind``, without the GIL."""
    cdef int status
    with nogil:
        if kind == NM_F32:
            status = nm_backward_f32(sh, <const float *>dy, <const float *>x, <float *>dx, A)
        elif kind == NM_F64:
            status = nm_backward_f64(sh, <const double *>dy, <const double *>x, <double *>dx, A)
        elif kind == NM_F16:
            status = nm_backward_f16(sh, <const nm_half *>dy, <const nm_half *>x, <nm_half *>dx, A)
        else:
            status = nm_backward_bf16(sh, <const nm_half *>dy, <const nm_half *>x, <nm_half *>dx,
                                      A)
    if status != 0:
        raise MemoryError("normops: out of memory for the kernel's scratch space")
    return 0


def forward(cnp.ndarray x not None, object y, str mode, object gamma=None, object beta=None,
            object running_mean=None, object running_spread=None, *, double eps=0.0,
            double momentum=0.0, double rmax=1.0, double dmax=0.0, bint unbiased=True,
            object a=None, object b=None, object mean=None, object m2=None,
            object invstd=None, object r=None, object d=None):
    """Runs nm_forward on x, a C-contiguous (outer, C, inner) float32, float64, float16 or
    bfloat16 array: y (None for mode "stats") has x's shape and dtype; gamma, beta and the
    running statistics have x's dtype (or float32 for half x, each on its own); a, b and the outputs mean, m2, invstd, r, d are contiguous
    float64 arrays. Every array is checked for type, shape, layout and (where written)
    writeability, and each mode for the arrays it uses; the Python layer has checked the
    values."""
    cdef nm_forward_args A
    cdef nm_dtype kind = _kind(x)
    cdef nm_shape sh = _shape(x)
    cdef Py_ssize_t C = sh.channels
    cdef bint train
    cdef void *out_ptr = NULL
    cdef list keep = []
    if mode not in FORWARD_MODES:
        raise ValueError(f"normops._cpu: unknown forward mode {mode!r}")
    A.mode = FORWARD_MODES[mode]
    train = A.mode == NM_FWD_BN_TRAIN or A.mode == NM_FWD_BRN_TRAIN
    if A.mode != NM_FWD_STATS:
        out_ptr = _block(y, x, True, "y")
    A.gamma = _vec(gamma, x, C, False, "gamma", keep)
    A.beta = _vec(beta, x, C, False, "beta", keep)
    A.running_mean = _vec(running_mean, x, C, train, "running_mean", keep)
    A.running_spread = _vec(running_spread, x, C, train, "running_spread", keep)
    A.eps, A.momentum, A.rmax, A.dmax, A.unbiased = eps, momentum, rmax, dmax, unbiased
    A.a_in, A.b_in = _f64(a, C, False, "a", keep), _f64(b, C, False, "b", keep)
    A.mean, A.m2 = _f64(mean, C, True, "mean", keep), _f64(m2, C, True, "m2", keep)
    A.invstd = _f64(invstd, C, True, "invstd", keep)
    A.r, A.d = _f64(r, C, True, "r", keep), _f64(d, C, True, "d", keep)
    if A.mode == NM_FWD_STATS:
        _need(A.mean != NULL and A.m2 != NULL, "mean and m2", mode)
    elif A.mode == NM_FWD_AFFINE:
        _need(A.a_in != NULL and A.b_in != NULL, "a and b", mode)
    else:
        _need(A.mean != NULL and A.invstd != NULL, "mean and invstd", mode)
        if A.mode == NM_FWD_BN_TRAIN:
            _need((A.running_mean.data == NULL) == (A.running_spread.data == NULL),
                  "running_mean and running_spread together, or neither", mode)
        else:
            _need(A.running_mean.data != NULL and A.running_spread.data != NULL,
                  "running_mean and running_spread", mode)
        if A.mode == NM_FWD_BRN_TRAIN:
            _need(A.r != NULL and A.d != NULL, "r and d", mode)
    _run_forward(kind, sh, cnp.PyArray_DATA(x), out_ptr, &A)


def backward(cnp.ndarray dy not None, cnp.ndarray x not None, object dx, str mode, *,
             bint training=True, object mean=None, object invstd=None, object r=None,
             object d=None, object gamma=None, object dgamma=None, object dbeta=None,
             object sum_dy=None, object sum_dy_xmu=None, object p=None, object q=None,
             object s=None):
    """Runs nm_backward: dy, and dx (None for mode "grad_stats") have x's shape and dtype;
    gamma, dgamma and dbeta have x's dtype, or float32 for half x (dgamma and dbeta
    contiguous and of one dtype, in which the kernel writes them), the rest are contiguous
    float64 arrays."""
    cdef nm_backward_args A
    cdef nm_dtype kind = _kind(x)
    cdef nm_shape sh = _shape(x)
    cdef Py_ssize_t C = sh.channels
    cdef const void *dy_ptr = _block(dy, x, False, "dy")
    cdef void *out_ptr = NULL
    cdef list keep = []
    if mode not in BACKWARD_MODES:
        raise ValueError(f"normops._cpu: unknown backward mode {mode!r}")
    A.mode = BACKWARD_MODES[mode]
    if A.mode != NM_BWD_GRAD_STATS:
        out_ptr = _block(dx, x, True, "dx")
    A.training = training
    A.mean = _f64(mean, C, False, "mean", keep)
    A.invstd = _f64(invstd, C, False, "invstd", keep)
    A.r, A.d = _f64(r, C, False, "r", keep), _f64(d, C, False, "d", keep)
    A.gamma = _vec(gamma, x, C, False, "gamma", keep)
    A.dgamma = _contiguous(dgamma, x, C, True, "dgamma", keep)
    A.dbeta = _contiguous(dbeta, x, C, True, "dbeta", keep)
    A.grad_dtype = kind
    if dgamma is not None:
        A.grad_dtype = _kind(dgamma)
        if dbeta is not None and _kind(dbeta) != A.grad_dtype:
            raise ValueError(f"normops._cpu: dbeta must have dgamma's dtype {dgamma.dtype}, "
                             f"got {dbeta.dtype}")
    A.sum_dy = _f64(sum_dy, C, True, "sum_dy", keep)
    A.sum_dy_xmu = _f64(sum_dy_xmu, C, True, "sum_dy_xmu", keep)
    A.p, A.q, A.s = _f64(p, C, False, "p", keep), _f64(q, C, False, "q", keep), _f64(s, C, False, "s", keep)
    if A.mode == NM_BWD_GRAD_STATS:
        _need(A.mean != NULL and A.sum_dy != NULL and A.sum_dy_xmu != NULL,
              "mean, sum_dy and sum_dy_xmu", mode)
    elif A.mode == NM_BWD_GRAD_INPUT:
        _need(A.p != NULL and A.q != NULL and A.s != NULL, "p, q and s", mode)
    else:
        _need(A.mean != NULL and A.invstd != NULL and A.dgamma != NULL and A.dbeta != NULL,
              "mean, invstd, dgamma and dbeta", mode)
    _run_backward(kind, sh, dy_ptr, cnp.PyArray_DATA(x), out_ptr, &A)


# --- outputs ----------------------------------------------------------------------------

cdef Py_ssize_t _pooled_bytes = 0       # see set_output_rule: until then, no output is fresh
cdef Py_ssize_t _most_arrays = 0
cdef Py_ssize_t _streamed_itemsize = 0


def set_output_rule(Py_ssize_t pooled_bytes, Py_ssize_t most_arrays, Py_ssize_t streamed_itemsize):
    """The cpu backend's rule for the memory of an output (its _empty_like): outputs of
    ``pooled_bytes`` or more come from its pool, and those whose op's arrays (at most
    ``most_arrays`` of the output's size) reach stream_bytes() start on a cache line
    when their items have at most ``streamed_itemsize`` bytes and the AVX2 loops run."""
    global _pooled_bytes, _most_arrays, _streamed_itemsize
    _pooled_bytes, _most_arrays, _streamed_itemsize = pooled_bytes, most_arrays, streamed_itemsize


cdef bint _fresh(Py_ssize_t nbytes, Py_ssize_t itemsize):
    return nbytes < _pooled_bytes and not (
        <size_t>(nbytes * _most_arrays) >= nm_stream_bytes()
        and itemsize <= _streamed_itemsize and nm_simd_enabled())


def fresh_output(Py_ssize_t nbytes, Py_ssize_t itemsize):
    """Whether an output of ``nbytes`` takes fresh NumPy memory, by the rule of
    set_output_rule: neither pooled nor placed on a cache line."""
    return _fresh(nbytes, itemsize)


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


def max_threads():
    """The most threads an op runs on (4 per processor; see cext/threads.c)."""
    return nm_max_threads()


def forked_child():
    """Whether this process was forked from one whose kernels had started a team of
    threads: its kernels run on one thread."""
    return bool(nm_forked_child())


def get_min_values_per_thread():
    return nm_get_min_values_per_thread()


def set_min_values_per_thread(Py_ssize_t n):
    """At most one thread per n values in an op (n <= 0: the default); for tests that
    need teams on small arrays."""
    nm_set_min_values_per_thread(n)


def team_for(Py_ssize_t values):
    """The number of threads an op over ``values`` values runs on."""
    return nm_team_for(values)


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


def pipelined_ops():
    """How many ops have taken the pipelined planes path since import."""
    return nm_pipelined_ops()


def build_info():
    """The compiler and flags the kernels were built with."""
    return nm_build_info().decode()
