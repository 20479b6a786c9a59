#if defined(__linux__)
#define _GNU_SOURCE
#include <sys/mman.h>
#endif
#include <stdlib.h>

#include "pages.h"

#define NM_PAGE_ALIGN 4096

void *nm_pages_alloc(size_t nbytes)
{
#if defined(_WIN32)
    return malloc(nbytes);
#else
    void *block = NULL;
    if (posix_memalign(&block, NM_PAGE_ALIGN, nbytes ? nbytes : 1) != 0)
        return NULL;
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    madvise(block, nbytes, MADV_HUGEPAGE);   /* advice only: failure changes nothing */
#endif
    return block;
#endif
}

void nm_pages_free(void *block)
{
    free(block);
}
