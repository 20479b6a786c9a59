# cython: language_level=3
"""Output buffers of the cpu backend. A large output takes memory that an earlier output
of the same size gave back, instead of fresh pages, which the operating system must map
and zero on first touch (as long as the kernel takes to write them). Idle blocks are kept
up to a byte limit. Every function here runs with the GIL held, which serializes the
pool."""
from cpython.buffer cimport PyBuffer_FillInfo

cdef extern from "pages.h":
    void *nm_pages_alloc(size_t nbytes)
    void nm_pages_free(void *block)

cdef enum:
    SLOTS = 16

cdef void *idle_block[SLOTS]
cdef Py_ssize_t idle_size[SLOTS]
cdef int idle_count = 0
cdef Py_ssize_t idle_bytes = 0
cdef Py_ssize_t idle_limit = 256 * 1024 * 1024


cdef void _give_back(void *block, Py_ssize_t nbytes):
    global idle_count, idle_bytes
    if idle_count < SLOTS and idle_bytes + nbytes <= idle_limit:
        idle_block[idle_count] = block
        idle_size[idle_count] = nbytes
        idle_count += 1
        idle_bytes += nbytes
    else:
        nm_pages_free(block)


cdef void *_take(Py_ssize_t nbytes):
    """An idle block of exactly nbytes (the most recently given back), or NULL."""
    global idle_count, idle_bytes
    cdef int i
    cdef void *block
    for i in range(idle_count - 1, -1, -1):
        if idle_size[i] == nbytes:
            block = idle_block[i]
            idle_count -= 1
            idle_block[i] = idle_block[idle_count]
            idle_size[i] = idle_size[idle_count]
            idle_bytes -= nbytes
            return block
    return NULL


cdef class Block:
    """nbytes of writable memory exported through the buffer protocol; when the last
    array viewing it is gone, its memory goes back to the pool."""
    cdef void *data
    cdef readonly Py_ssize_t nbytes

    def __cinit__(self, Py_ssize_t nbytes):
        if nbytes <= 0:
            raise ValueError(f"a block holds a positive number of bytes, got {nbytes}")
        self.data = _take(nbytes)
        if self.data == NULL:
            self.data = nm_pages_alloc(<size_t>nbytes)
        if self.data == NULL:
            raise MemoryError(f"normops: could not allocate {nbytes} bytes for an output")
        self.nbytes = nbytes

    def __getbuffer__(self, Py_buffer *view, int flags):
        PyBuffer_FillInfo(view, self, self.data, self.nbytes, 0, flags)

    def __dealloc__(self):
        if self.data != NULL:
            _give_back(self.data, self.nbytes)


def set_idle_limit(Py_ssize_t nbytes):
    """Keep at most nbytes of idle blocks from now on; blocks beyond it are freed."""
    global idle_limit, idle_count, idle_bytes
    if nbytes < 0:
        raise ValueError(f"the limit is a number of bytes >= 0, got {nbytes}")
    idle_limit = nbytes
    while idle_count and idle_bytes > idle_limit:
        idle_count -= 1
        idle_bytes -= idle_size[idle_count]
        nm_pages_free(idle_block[idle_count])


def idle_limit_bytes():
    return idle_limit


def idle_bytes_now():
    return idle_bytes
