/* What the kernels were built with, for normops.show_config(). */
#include "normops.h"

#ifndef NM_BUILD_FLAGS
#define NM_BUILD_FLAGS "unknown"
#endif

#if defined(__clang__)
#define NM_COMPILER "clang " __clang_version__
#elif defined(__GNUC__)
#define NM_COMPILER "gcc " __VERSION__
#elif defined(_MSC_VER)
#define NM_STR2(v) #v
#define NM_STR(v) NM_STR2(v)
#define NM_COMPILER "msvc " NM_STR(_MSC_VER)
#else
#define NM_COMPILER "unknown compiler"
#endif

const char *nm_build_info(void)
{
    return NM_COMPILER "; flags: " NM_BUILD_FLAGS;
}
