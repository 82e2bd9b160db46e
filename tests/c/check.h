/* check.h — the CHECK of the C programs that test the public API
 * (appealnet.h): a failed condition is printed with the library's last
 * error and counted in `failures`, and the program goes on. */
#ifndef AN_TEST_CHECK_H
#define AN_TEST_CHECK_H

#include <stdio.h>

static int failures = 0;

#define CHECK(cond)                                                          \
    do {                                                                     \
        if (!(cond)) {                                                       \
            fprintf(stderr, "%s:%d: CHECK failed: %s (last error: %s)\n",   \
                    __FILE__, __LINE__, #cond, an_last_error());             \
            failures++;                                                      \
        }                                                                    \
    } while (0)

#endif
