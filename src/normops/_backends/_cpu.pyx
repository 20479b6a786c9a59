# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""Bindings of the C kernels in cext/ (see cext/normops.h for their contract). Callers
pass C-contiguous (outer, C, inner) arrays and validated per-channel arrays; every
kernel runs with the GIL released. Data may be float32, float64, float16 or bfloat16
(ml_dtypes' NumPy dtype, recognized by name: its type number is assigned at run time);
the per-channel arrays of half data may be float32 or the data's dtype."""
cimport numpy as cnp
from libc.float cimport DBL_MAX
from libc.math cimport INFINITY
from libc.string cimport memcpy

from normops._saved import BatchNormSaved, BatchRenormSaved

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
        const void *residual
        int relu
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
    void nm_relu_mask_f32(Py_ssize_t, const float *, const float *, float *)
    void nm_relu_mask_f64(Py_ssize_t, const double *, const double *, double *)
    void nm_relu_mask_f16(Py_ssize_t, const nm_half *, const nm_half *, nm_half *)
    void nm_relu_mask_bf16(Py_ssize_t, const nm_half *, const nm_half *, nm_half *)
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
            object invstd=None, object r=None, object d=None, object residual=None,
            bint relu=False):
    """Runs nm_forward on x, a C-contiguous (outer, C, inner) float32, float64, float16 or
    bfloat16 array: y (None for mode "stats") has x's shape and dtype; gamma, beta and the
    running statistics have x's dtype (or float32 for half x, each on its own); a, b and the outputs mean, m2, invstd, r, d are contiguous
    float64 arrays. Every array is checked for type, shape, layout and (where written)
    writeability, and each mode for the arrays it uses; the Python layer has checked the
    values. The modes that write y take the epilogue y = relu(y + residual) (normops.h):
    residual None or an array like y (that y does not overlap), relu or not."""
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
    A.residual = NULL if residual is None else _block(residual, x, False, "residual")
    A.relu = relu
    if A.residual != NULL and out_ptr != NULL and not _apart(_extent(<cnp.ndarray>residual),
                                                             _extent(<cnp.ndarray>y)):
        raise ValueError("normops._cpu: residual must not overlap y")
    if A.mode == NM_FWD_STATS:
        if A.residual != NULL or relu:
            raise ValueError("normops._cpu: mode 'stats' writes no y, so it takes no "
                             "residual or relu")
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


def relu_mask(cnp.ndarray dy not None, cnp.ndarray y not None, cnp.ndarray out not None):
    """The backward of the forward's ReLU: out = 0 where y <= 0 (+0), else dy; a NaN y
    passes dy (PyTorch's threshold_backward). dy, y and out: C-contiguous, aligned arrays
    of one shape and dtype (float32, float64, float16 or bfloat16), out writeable and apart
    from the others."""
    cdef nm_dtype kind = _kind(dy)
    cdef Py_ssize_t n = cnp.PyArray_SIZE(dy)
    cdef const void *g
    cdef const void *v
    cdef void *o
    cdef cnp.ndarray a
    for name, a in (("y", y), ("out", out)):
        if (cnp.PyArray_TYPE(a) != cnp.PyArray_TYPE(dy) or not cnp.PyArray_ISNOTSWAPPED(a)
                or not cnp.PyArray_SAMESHAPE(a, dy)):
            raise ValueError(f"normops._cpu: {name} must be a {dy.dtype} array of dy's shape "
                             f"{(<object>dy).shape}, got {a.dtype} {(<object>a).shape}")
    for name, a in (("dy", dy), ("y", y), ("out", out)):
        if not cnp.PyArray_IS_C_CONTIGUOUS(a) or not cnp.PyArray_ISALIGNED(a):
            raise ValueError(f"normops._cpu: {name} must be aligned and C-contiguous")
    if not cnp.PyArray_ISWRITEABLE(out):
        raise ValueError("normops._cpu: out is read-only")
    if n > 0 and not (_apart(_extent(out), _extent(dy)) and _apart(_extent(out), _extent(y))):
        raise ValueError("normops._cpu: out must not overlap dy or y")
    _mask(kind, n, cnp.PyArray_DATA(dy), cnp.PyArray_DATA(y), cnp.PyArray_DATA(out))


cdef void _copy(void *to, const void *source, size_t nbytes):
    with nogil:
        memcpy(to, source, nbytes)


cdef void _mask(nm_dtype kind, Py_ssize_t n, const void *g, const void *v, void *o):
    """relu_mask's kernel on n contiguous values, without the GIL."""
    with nogil:
        if kind == NM_F32:
            nm_relu_mask_f32(n, <const float *>g, <const float *>v, <float *>o)
        elif kind == NM_F64:
            nm_relu_mask_f64(n, <const double *>g, <const double *>v, <double *>o)
        elif kind == NM_F16:
            nm_relu_mask_f16(n, <const nm_half *>g, <const nm_half *>v, <nm_half *>o)
        else:
            nm_relu_mask_bf16(n, <const nm_half *>g, <const nm_half *>v, <nm_half *>o)


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


# --- plain calls ------------------------------------------------------------------------
# The public ops' common case in one call: the cpu backend's plain ops (see
# normops._interface) hand these functions the arguments of an op call unchecked. Each
# first decides, touching nothing, whether they are plain: arguments that every check
# of normops._validation passes as they are (so that it would return them unchanged,
# raise nothing, make no copy) and that the cpu backend's _Arrangement takes without a
# copy. If they are not, it returns None, and the op takes its general path, whose checks
# raise the errors; a plain call runs the kernel and returns the op's result. The rules below
# accept a subset of what those checks accept, each named after the check it stands
# for; tests/test_call_overhead_paths.py compares both paths.

cdef struct _plain_x:
    nm_shape sh       # the kernels' (outer, C, inner) view of x
    int typenum
    Py_ssize_t axis   # the channel axis, >= 0
    bint moved        # channels-last: the channel axis innermost in memory


cdef bint _axis(object axis, Py_ssize_t ndim, Py_ssize_t *out):
    """channel_axis: an exact int in [-ndim, ndim), as a non-negative axis."""
    cdef Py_ssize_t ax
    if type(axis) is not int:
        return False
    try:
        ax = axis
    except OverflowError:
        return False
    if not -ndim <= ax < ndim:
        return False
    out[0] = ax + ndim if ax < 0 else ax
    return True


cdef bint _channels_last(cnp.ndarray a, Py_ssize_t axis):
    """Whether numpy.moveaxis(a, axis, -1) is C-contiguous (a holds values): contiguous
    with the channel axis innermost, the others in order; a dimension of length 1 may
    have any stride."""
    cdef Py_ssize_t i, want = cnp.PyArray_ITEMSIZE(a)
    cdef cnp.npy_intp *dims = cnp.PyArray_DIMS(a)
    cdef cnp.npy_intp *strides = cnp.PyArray_STRIDES(a)
    if dims[axis] != 1 and strides[axis] != want:
        return False
    want *= dims[axis]
    for i in range(cnp.PyArray_NDIM(a) - 1, -1, -1):
        if i != axis:
            if dims[i] != 1 and strides[i] != want:
                return False
            want *= dims[i]
    return True


cdef bint _plain_input(object x, object axis, _plain_x *p):
    """as_input and channel_axis: x an exact numpy.ndarray of float32 or float64 in native
    byte order with at least 2 dimensions and a value, aligned, C-contiguous or
    channels-last (so that the kernels take its memory as it is); ``axis`` an exact int
    naming one of its dimensions. Fills p."""
    cdef cnp.ndarray a
    cdef Py_ssize_t i, nd, before = 1, after = 1
    cdef cnp.npy_intp *dims
    if type(x) is not cnp.ndarray:
        return False
    a = <cnp.ndarray>x
    p.typenum = cnp.PyArray_TYPE(a)
    nd = cnp.PyArray_NDIM(a)
    if ((p.typenum != cnp.NPY_FLOAT32 and p.typenum != cnp.NPY_FLOAT64)
            or not cnp.PyArray_ISNOTSWAPPED(a) or not cnp.PyArray_ISALIGNED(a) or nd < 2
            or cnp.PyArray_SIZE(a) == 0 or not _axis(axis, nd, &p.axis)):
        return False
    dims = cnp.PyArray_DIMS(a)
    for i in range(p.axis):
        before *= dims[i]
    for i in range(p.axis + 1, nd):
        after *= dims[i]
    p.sh.channels = dims[p.axis]
    if cnp.PyArray_IS_C_CONTIGUOUS(a):
        p.moved = False
        p.sh.outer, p.sh.inner = before, after
    elif p.axis != nd - 1 and _channels_last(a, p.axis):
        p.moved = True
        p.sh.outer, p.sh.inner = before * after, 1
    else:
        return False
    return True


cdef bint _plain_vector(object v, int typenum, Py_ssize_t channels, bint written):
    """per_channel (and running_stat when ``written``): an exact numpy.ndarray of x's
    dtype in native byte order and shape (channels,), aligned, stepping by whole items;
    one that is written also writeable, its channels distinct elements."""
    cdef cnp.ndarray a
    cdef Py_ssize_t step
    if type(v) is not cnp.ndarray:
        return False
    a = <cnp.ndarray>v
    if (cnp.PyArray_TYPE(a) != typenum or not cnp.PyArray_ISNOTSWAPPED(a)
            or cnp.PyArray_NDIM(a) != 1 or cnp.PyArray_DIM(a, 0) != channels
            or not cnp.PyArray_ISALIGNED(a)):
        return False
    step = cnp.PyArray_STRIDE(a, 0)
    if step % cnp.PyArray_ITEMSIZE(a) != 0:
        return False
    return not written or (cnp.PyArray_ISWRITEABLE(a) and (step != 0 or channels == 1))


cdef bint _optional_vector(object v, int typenum, Py_ssize_t channels):
    return v is None or _plain_vector(v, typenum, channels, False)


cdef struct _span:
    char *lo
    char *hi


cdef _span _extent(cnp.ndarray a):
    """[lo, hi): the bytes the elements of a (which holds values) lie in."""
    cdef _span s
    cdef Py_ssize_t i, reach
    s.lo = s.hi = <char *>cnp.PyArray_DATA(a)
    for i in range(cnp.PyArray_NDIM(a)):
        reach = (cnp.PyArray_DIM(a, i) - 1) * cnp.PyArray_STRIDE(a, i)
        if reach < 0:
            s.lo += reach
        else:
            s.hi += reach
    s.hi += cnp.PyArray_ITEMSIZE(a)
    return s


cdef bint _apart(_span a, _span b):
    return a.hi <= b.lo or b.hi <= a.lo


cdef bint _written_apart(object first, object second, object x, object gamma, object beta,
                         object residual):
    """no_overlap: the running statistics ``first`` and ``second`` (arrays, written)
    each lie apart in memory from the other and from x, gamma, beta and the residual."""
    cdef _span one = _extent(<cnp.ndarray>first), two = _extent(<cnp.ndarray>second), other
    if not _apart(one, two):
        return False
    for arr in (x, gamma, beta, residual):
        if arr is not None:
            other = _extent(<cnp.ndarray>arr)
            if not (_apart(one, other) and _apart(two, other)):
                return False
    return True


cdef bint _laid_out_as_x(object v, cnp.ndarray x, _plain_x *p):
    """like_x, and x's memory layout (so that the kernels take both views alike): an exact
    numpy.ndarray of x's dtype and shape in native byte order, aligned, C-contiguous or
    channels-last as x is (dy; the residual z; the forward's y)."""
    cdef cnp.ndarray a
    if type(v) is not cnp.ndarray:
        return False
    a = <cnp.ndarray>v
    return (cnp.PyArray_TYPE(a) == p.typenum and cnp.PyArray_ISNOTSWAPPED(a)
            and cnp.PyArray_ISALIGNED(a) and cnp.PyArray_SAMESHAPE(a, x)
            and (_channels_last(a, p.axis) if p.moved else cnp.PyArray_IS_C_CONTIGUOUS(a)))


cdef bint _relu(object activation, bint *out):
    """activation: None, or the exact str "relu"."""
    if activation is None:
        out[0] = False
    elif type(activation) is str and activation == "relu":
        out[0] = True
    else:
        return False
    return True


cdef bint _none_below(object v, bint allow_zero):
    """positive_stats: no value of the per-channel array v (float32 or float64) is
    negative, nor zero unless ``allow_zero`` (NaN passes)."""
    cdef cnp.ndarray a = <cnp.ndarray>v
    cdef char *at = <char *>cnp.PyArray_DATA(a)
    cdef Py_ssize_t i, step = cnp.PyArray_STRIDE(a, 0)
    cdef bint single = cnp.PyArray_TYPE(a) == cnp.NPY_FLOAT32
    cdef double value
    for i in range(cnp.PyArray_DIM(a, 0)):
        value = (<float *>at)[0] if single else (<double *>at)[0]
        if value < 0.0 or (value == 0.0 and not allow_zero):
            return False
        at += step
    return True


cdef bint _float_in(object value, double low, double high, bint low_open):
    """number: an exact float in [low, high] ((low, high] with ``low_open``); NaN is not."""
    cdef double v
    if type(value) is not float:
        return False
    v = <double>value
    return (v > low if low_open else v >= low) and v <= high


cdef object _output_like(cnp.ndarray x, _plain_x *p):
    """A new array of x's shape and dtype, laid out as the cpu backend's _Arrangement
    restores a kernel output: C-contiguous, or for channels-last x a C-contiguous array
    with the channel axis last, moved back to its place."""
    return _outputs_like(x, p, 0)


cdef object _outputs_like(cnp.ndarray x, _plain_x *p, int count):
    """``count`` (> 0) such arrays as one allocation, stacked on a first axis (0: one array,
    not stacked). A fused backward's dz and dx are made so: as two blocks of 1 MB, glibc
    gave the top of its heap back to the system after every call and the next call paid
    for fresh pages (NC 256x1024 float32 backward: 1.5 ms a call against 0.3 ms)."""
    cdef cnp.npy_intp dims[65]
    cdef cnp.npy_intp order[65]
    cdef cnp.PyArray_Dims permutation
    cdef cnp.npy_intp *shape = cnp.PyArray_DIMS(x)
    cdef int i, nd = cnp.PyArray_NDIM(x), axis = <int>p.axis, lead = 1 if count else 0
    dims[0], order[0] = count, 0
    for i in range(nd):
        dims[lead + i], order[lead + i] = shape[i], lead + i
    if not p.moved:
        return cnp.PyArray_SimpleNew(nd + lead, dims, p.typenum)
    for i in range(nd):
        if i < axis:
            dims[lead + i], order[lead + i] = shape[i], lead + i
        elif i > axis:
            dims[lead + i - 1], order[lead + i] = shape[i], lead + i - 1
    dims[lead + nd - 1], order[lead + axis] = shape[axis], lead + nd - 1
    permutation.ptr, permutation.len = order, nd + lead
    return cnp.PyArray_Transpose(cnp.PyArray_SimpleNew(nd + lead, dims, p.typenum), &permutation)


cdef object _rows(Py_ssize_t count, Py_ssize_t n, int typenum):
    """``count`` new 1-D arrays of n values of ``typenum``, the rows of one C-contiguous
    block (the cpu backend's per-channel outputs), as a list."""
    cdef cnp.npy_intp dims[2]
    cdef cnp.ndarray block, row
    cdef char *data
    cdef Py_ssize_t i
    dims[0], dims[1] = count, n
    block = <cnp.ndarray>cnp.PyArray_SimpleNew(2, dims, typenum)
    data = <char *>cnp.PyArray_DATA(block)
    rows = []
    for i in range(count):
        row = <cnp.ndarray>cnp.PyArray_New(cnp.ndarray, 1, &dims[1], typenum, NULL,
                                          data + i * cnp.PyArray_STRIDE(block, 0), 0,
                                          cnp.NPY_ARRAY_CARRAY, None)
        cnp.set_array_base(row, block)
        rows.append(row)
    return rows


cdef object _plain_forward(object x, object gamma, object beta, object first, object second,
                           object training, object momentum, object eps, object axis,
                           bint renorm, bint unbiased, double rmax, double dmax,
                           object residual, object activation):
    """forward_args (and positive_stats) on BN's or BRN's arguments, then the op (with the
    epilogue, for a residual laid out as x)."""
    cdef _plain_x p
    cdef nm_forward_args A
    cdef bint train, relu = False
    cdef Py_ssize_t C, itemsize
    cdef cnp.ndarray xa
    cdef list keep = []
    if training is True or training is False:
        train = training is True
    else:
        return None
    if not (_relu(activation, &relu) and _plain_input(x, axis, &p)
            and _float_in(momentum, 0.0, 1.0, False) and _float_in(eps, 0.0, DBL_MAX, True)):
        return None
    if residual is not None and not _laid_out_as_x(residual, <cnp.ndarray>x, &p):
        return None
    C = p.sh.channels
    if not (_optional_vector(gamma, p.typenum, C) and _optional_vector(beta, p.typenum, C)):
        return None
    if first is None and second is None:
        if renorm or not train:   # BRN needs running statistics, BN's eval mode too
            return None
    elif not (_plain_vector(first, p.typenum, C, train)
              and _plain_vector(second, p.typenum, C, train)
              and (not train or _written_apart(first, second, x, gamma, beta, residual))
              and (train and not renorm or _none_below(second, not renorm))):
        return None
    if train and p.sh.outer * p.sh.inner == 1:   # training_batch
        return None
    xa = <cnp.ndarray>x
    itemsize = cnp.PyArray_ITEMSIZE(xa)
    if not _fresh(cnp.PyArray_SIZE(xa) * itemsize, itemsize):
        return None   # pooled or streamed memory: the general path's _empty_like
    y = _output_like(xa, &p)
    stats = _rows(4 if renorm and train else 2, C, cnp.NPY_FLOAT64)
    if renorm:
        A.mode = NM_FWD_BRN_TRAIN if train else NM_FWD_BRN_EVAL
    else:
        A.mode = NM_FWD_BN_TRAIN if train else NM_FWD_BN_EVAL
    A.gamma = _vec(gamma, xa, C, False, "gamma", keep)
    A.beta = _vec(beta, xa, C, False, "beta", keep)
    A.running_mean = _vec(first, xa, C, train, "running_mean", keep)
    A.running_spread = _vec(second, xa, C, train, "running_spread", keep)
    A.eps, A.momentum, A.rmax, A.dmax, A.unbiased = eps, momentum, rmax, dmax, unbiased
    A.a_in = A.b_in = A.m2 = A.r = A.d = NULL
    A.residual = NULL if residual is None else cnp.PyArray_DATA(<cnp.ndarray>residual)
    A.relu = relu
    A.mean = _f64(stats[0], C, True, "mean", keep)
    A.invstd = _f64(stats[1], C, True, "invstd", keep)
    if len(stats) == 4:
        A.r, A.d = _f64(stats[2], C, True, "r", keep), _f64(stats[3], C, True, "d", keep)
    _run_forward(_kind(xa), p.sh, cnp.PyArray_DATA(xa), cnp.PyArray_DATA(<cnp.ndarray>y), &A)
    with_residual = residual is not None
    if not renorm:
        return y, BatchNormSaved(stats[0], stats[1], train, p.axis, x.shape,
                                 activation=activation, residual=with_residual)
    r, d = (stats[2], stats[3]) if train else (None, None)
    return y, BatchRenormSaved(stats[0], stats[1], r, d, train, p.axis, x.shape,
                               activation=activation, residual=with_residual)


def plain_batch_norm(x, gamma, beta, running_mean, running_var, training, momentum, eps, axis,
                     convention, residual=None, activation=None):
    """normops.batch_norm on plain arguments: None, or ``(y, saved)``, the running
    statistics updated when training."""
    cdef bint unbiased
    if type(convention) is not str:
        return None
    if convention == "pytorch":
        unbiased = True
    elif convention == "keras":
        unbiased = False
    else:
        return None
    return _plain_forward(x, gamma, beta, running_mean, running_var, training, momentum, eps,
                          axis, False, unbiased, 1.0, 0.0, residual, activation)


def plain_batch_renorm(x, gamma, beta, running_mean, running_std, training, rmax, dmax,
                       momentum, eps, axis, residual=None, activation=None):
    """normops.batch_renorm on plain arguments: None, or ``(y, saved)``."""
    if not (_float_in(rmax, 1.0, INFINITY, False) and _float_in(dmax, 0.0, INFINITY, False)):
        return None
    return _plain_forward(x, gamma, beta, running_mean, running_std, training, momentum, eps,
                          axis, True, True, rmax, dmax, residual, activation)


cdef bint _plain_saved_array(object v, Py_ssize_t channels):
    """saved_state's arrays as the forward made them: an exact numpy.ndarray of float64
    in native byte order, shape (channels,), C-contiguous and aligned."""
    cdef cnp.ndarray a
    if type(v) is not cnp.ndarray:
        return False
    a = <cnp.ndarray>v
    return (cnp.PyArray_TYPE(a) == cnp.NPY_FLOAT64 and cnp.PyArray_ISNOTSWAPPED(a)
            and cnp.PyArray_NDIM(a) == 1 and cnp.PyArray_DIM(a, 0) == channels
            and cnp.PyArray_IS_C_CONTIGUOUS(a) and cnp.PyArray_ISALIGNED(a))


cdef bint _same_shape(object shape, cnp.ndarray x):
    """saved.shape: a tuple of exact ints equal to x's shape."""
    cdef Py_ssize_t i, nd = cnp.PyArray_NDIM(x)
    if type(shape) is not tuple or len(<tuple>shape) != nd:
        return False
    for i in range(nd):
        n = (<tuple>shape)[i]
        if type(n) is not int or n != cnp.PyArray_DIM(x, i):
            return False
    return True


def plain_batch_norm_backward(dy, x, saved, gamma, axis, y=None):
    """normops.batch_norm_backward on plain arguments: None, or ``(dx, dgamma, dbeta)``
    (and dz after a forward with a residual)."""
    if type(saved) is not BatchNormSaved:
        return None
    return _plain_backward(dy, x, saved, gamma, axis, False, y)


def plain_batch_renorm_backward(dy, x, saved, gamma, axis, y=None):
    """normops.batch_renorm_backward on plain arguments: None, or ``(dx, dgamma, dbeta)``
    (and dz after a forward with a residual)."""
    if type(saved) is not BatchRenormSaved:
        return None
    return _plain_backward(dy, x, saved, gamma, axis, True, y)


cdef object _plain_backward(object dy, object x, object saved, object gamma, object axis,
                            bint renorm, object y):
    """saved_state (``saved`` a BatchNormSaved, or a BatchRenormSaved with ``renorm``:
    the forward's, without a communicator; a BatchRenormSaved holds r and d in training
    and neither in eval mode), gradient, forward_output and per_channel, then the op:
    after a forward with relu, dy masked by y (laid out as x) first; dz, that masked dy
    (a copy of dy without relu), after a forward with a residual."""
    cdef _plain_x p
    cdef nm_backward_args A
    cdef Py_ssize_t C, itemsize, given
    cdef cnp.ndarray xa, dya
    cdef nm_dtype kind
    cdef bint relu = False
    cdef list keep = []
    try:
        training, saved_axis, shape, comm = saved.training, saved.axis, saved.shape, saved.comm
        mean, invstd = saved.mean, saved.invstd
        r, d = (saved.r, saved.d) if renorm else (None, None)
        activation, with_residual = saved.activation, saved.residual
    except AttributeError:   # a state without its fields: the general path says so
        return None
    if not (_relu(activation, &relu) and (with_residual is True or with_residual is False)
            and (y is not None or not relu)):
        return None
    if (comm is not None or not (training is True or training is False)
            or type(saved_axis) is not int or saved_axis < 0
            or not _plain_input(x, saved_axis, &p) or not _same_shape(shape, <cnp.ndarray>x)):
        return None
    if axis is not None and not (_axis(axis, cnp.PyArray_NDIM(<cnp.ndarray>x), &given)
                                 and given == p.axis):
        return None
    C = p.sh.channels
    if not (_plain_saved_array(mean, C) and _plain_saved_array(invstd, C)
            and (_plain_saved_array(r, C) and _plain_saved_array(d, C) if renorm and training
                 else r is None and d is None)
            and _optional_vector(gamma, p.typenum, C)):
        return None
    xa = <cnp.ndarray>x
    if type(dy) is not cnp.ndarray:   # gradient: x's shape and dtype, and here its layout
        return None
    dya = <cnp.ndarray>dy
    # (y is checked where given, as the general path does, and read only after relu)
    if not (_laid_out_as_x(dya, xa, &p) and (y is None or _laid_out_as_x(y, xa, &p))):
        return None
    itemsize = cnp.PyArray_ITEMSIZE(xa)
    if not _fresh(cnp.PyArray_SIZE(xa) * itemsize, itemsize):
        return None
    kind = _kind(xa)
    dz = None
    if (relu or with_residual) and cnp.PyArray_NDIM(xa) >= 32:
        return None   # no room for the stacking axis in every NumPy (see _outputs_like)
    if relu or with_residual:   # dz: dy masked by y, or copied; the backward then reads it
        dz, dx = _outputs_like(xa, &p, 2)
        if relu:
            _mask(kind, cnp.PyArray_SIZE(xa), cnp.PyArray_DATA(dya),
                  cnp.PyArray_DATA(<cnp.ndarray>y), cnp.PyArray_DATA(<cnp.ndarray>dz))
        else:
            _copy(cnp.PyArray_DATA(<cnp.ndarray>dz), cnp.PyArray_DATA(dya),
                  cnp.PyArray_SIZE(xa) * itemsize)
        dya = <cnp.ndarray>dz
    else:
        dx = _output_like(xa, &p)
    grads = _rows(2, C, p.typenum)
    A.mode = NM_BWD_FUSED
    A.training = training is True
    A.mean, A.invstd = _f64(mean, C, False, "mean", keep), _f64(invstd, C, False, "invstd", keep)
    A.r, A.d = _f64(r, C, False, "r", keep), _f64(d, C, False, "d", keep)
    A.gamma = _vec(gamma, xa, C, False, "gamma", keep)
    A.dgamma = _contiguous(grads[0], xa, C, True, "dgamma", keep)
    A.dbeta = _contiguous(grads[1], xa, C, True, "dbeta", keep)
    A.grad_dtype = kind   # dgamma's and dbeta's: x's, as gamma's
    A.sum_dy = A.sum_dy_xmu = NULL
    A.p = A.q = A.s = NULL
    _run_backward(kind, p.sh, cnp.PyArray_DATA(dya), cnp.PyArray_DATA(xa),
                  cnp.PyArray_DATA(<cnp.ndarray>dx), &A)
    if with_residual:
        return dx, grads[0], grads[1], dz
    return dx, grads[0], grads[1]


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
