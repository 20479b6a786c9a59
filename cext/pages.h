/* Large blocks of memory for outputs: page-aligned, with transparent huge pages asked for
 * where the system has them (fewer TLB misses in the streaming loops). */
#ifndef NORMOPS_PAGES_H
#define NORMOPS_PAGES_H

#include <stddef.h>

void *nm_pages_alloc(size_t nbytes);   /* NULL when out of memory */
void nm_pages_free(void *block);

#endif
