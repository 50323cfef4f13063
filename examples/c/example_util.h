/* Helpers shared by the SQLite and Lua examples: a region at a fixed address,
 * running this program again as a fresh process (exec, not fork), timing.
 *
 * Build the examples as non-PIE executables with SQLite / Lua linked statically
 * (see each example's header comment): the state they keep in a region holds
 * pointers to the libraries' code and static data, which must sit at the same
 * addresses in every process that continues that state. */
#ifndef PAGESNAP_EXAMPLE_UTIL_H
#define PAGESNAP_EXAMPLE_UTIL_H

#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "pagesnap.h"

#define EXPECT(cond)                                                                  \
    do {                                                                              \
        if (!(cond)) {                                                                \
            fprintf(stderr, "%s:%d: EXPECT(%s) failed; ps_last_error: \"%s\"\n",      \
                    __FILE__, __LINE__, #cond, ps_last_error());                      \
            exit(1);                                                                  \
        }                                                                             \
    } while (0)

/* Where the examples put their heap: far from where Linux maps libraries, the
 * program's own heap and thread stacks; the next slots if it is taken. */
static inline ps_region *region_at_fixed_address(ps_store *store, size_t len) {
    for (uintptr_t a = 0x5a0000000000u; a < 0x5b0000000000u; a += 0x1000000000u) {
        ps_region *r = ps_region_new_at(store, (void *)a, len, PS_TRACKING_AUTO);
        if (r != NULL) return r;
        if (ps_last_error_code() != PS_ERR_ADDRESS_TAKEN) return NULL;
    }
    return NULL;
}

/* Runs this program again (execv of /proc/self/exe, a fresh address space) with
 * `args`, and returns its standard output (malloc'd) or NULL if it failed. */
static inline char *run_fresh_process(char *const args[]) {
    fflush(stdout);
    int fd[2];
    if (pipe(fd) != 0) return NULL;
    pid_t pid = fork();
    if (pid < 0) return NULL;
    if (pid == 0) {
        dup2(fd[1], 1);
        close(fd[0]);
        close(fd[1]);
        execv("/proc/self/exe", args);
        _exit(127);
    }
    close(fd[1]);
    size_t cap = 1 << 16, got = 0;
    char *out = calloc(1, cap);
    ssize_t k;
    while (out != NULL && (k = read(fd[0], out + got, cap - 1 - got)) > 0) got += (size_t)k;
    close(fd[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "fresh process failed (status %d); its output:\n%s\n", status,
                out ? out : "");
        free(out);
        return NULL;
    }
    return out;
}

static inline double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

#endif
