/* Minimal test harness for the C API tests: CHECK(cond) prints the failing line
 * and ps_last_error(), then exits 1. Each program prints "ok: N checks" at the end. */
#ifndef PAGESNAP_CHECK_H
#define PAGESNAP_CHECK_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pagesnap.h"

static unsigned long checks_run;

#define CHECK(cond)                                                                   \
    do {                                                                              \
        checks_run++;                                                                 \
        if (!(cond)) {                                                                \
            fprintf(stderr, "%s:%d: CHECK(%s) failed; ps_last_error: \"%s\"\n",       \
                    __FILE__, __LINE__, #cond, ps_last_error());                      \
            exit(1);                                                                  \
        }                                                                             \
    } while (0)

/* The last call failed and its message contains `needle`. */
#define CHECK_ERROR(needle)                                                           \
    do {                                                                              \
        const char *msg_ = ps_last_error();                                           \
        CHECK(msg_ != NULL);                                                          \
        if (strstr(msg_, (needle)) == NULL) {                                         \
            fprintf(stderr, "%s:%d: ps_last_error \"%s\" lacks \"%s\"\n", __FILE__,   \
                    __LINE__, msg_, (needle));                                        \
            exit(1);                                                                  \
        }                                                                             \
        checks_run++;                                                                 \
    } while (0)

/* The last call succeeded: its message is empty. */
#define CHECK_NO_ERROR() CHECK(ps_last_error() != NULL && ps_last_error()[0] == '\0')

#define DONE()                                                                        \
    do {                                                                              \
        printf("ok: %lu checks\n", checks_run);                                       \
        return 0;                                                                     \
    } while (0)

#endif
