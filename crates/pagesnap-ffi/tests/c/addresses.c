/* Regions and clones at chosen addresses: ps_region_new_at(),
 * ps_snapshot_instantiate_at(), ps_snapshot_origin(); a heap saved to a file
 * and continued by a fresh process (exec, not fork) at the same address.
 *
 *   addresses DIR           the test (re-executes itself for the second process)
 *   addresses child FILE    load FILE, instantiate at its origin, check the list */
#define _GNU_SOURCE
#include <stdint.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"

struct node {
    struct node *next;
    long value;
};

#define NODES 5000

/* A free address for `len` bytes far from the usual mappings, tried in turn. */
static ps_region *region_somewhere_fixed(ps_store *store, size_t len) {
    for (uintptr_t a = 0x5a0000000000u; a < 0x5b0000000000u; a += 0x1000000000u) {
        ps_region *r = ps_region_new_at(store, (void *)a, len, PS_TRACKING_AUTO);
        if (r != NULL) return r;
        CHECK(ps_last_error_code() == PS_ERR_ADDRESS_TAKEN);
    }
    return NULL;
}

static long walk(struct node *n) {
    long sum = 0, count = 0;
    for (long expect = NODES - 1; n != NULL; n = n->next, expect--) {
        CHECK(n->value == expect * 3);
        sum += n->value;
        count++;
    }
    CHECK(count == NODES);
    return sum;
}

static int child(const char *file) {
    ps_store *store = ps_store_new();
    ps_snapshot *snap = ps_snapshot_load(store, file);
    CHECK(snap != NULL);
    void *origin = ps_snapshot_origin(snap);
    CHECK(origin != NULL);
    ps_region *r = ps_snapshot_instantiate_at(snap, origin, PS_TRACKING_AUTO);
    CHECK(r != NULL);
    CHECK(ps_region_ptr(r) == origin);
    struct node *head = ps_heap_root(r, 0);
    CHECK(head != NULL);
    long sum = walk(head);
    /* continue it: the heap works here, and a reset goes back to the file's state */
    struct node *n = ps_heap_alloc(r, sizeof *n);
    CHECK(n != NULL);
    n->value = -1;
    n->next = head;
    CHECK(ps_heap_set_root(r, 0, n) == 0);
    CHECK(ps_region_reset(r) == 0);
    CHECK(ps_heap_root(r, 0) == head);
    CHECK(walk(ps_heap_root(r, 0)) == sum);
    printf("child sum %ld\n", sum);
    CHECK(ps_region_free(r) == 0);
    CHECK(ps_snapshot_free(snap) == 0);
    CHECK(ps_store_free(store) == 0);
    DONE();
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "child") == 0) return child(argv[2]);
    CHECK(argc == 2);
    ps_store *store = ps_store_new();
    size_t len = 8u << 20;
    ps_region *r = region_somewhere_fixed(store, len);
    CHECK(r != NULL);
    char *base = ps_region_ptr(r);
    CHECK(((uintptr_t)base & 0xfffffffffu) == 0);

    /* never replaces: the same range, an overlap, and a range mapped by someone else */
    CHECK(ps_region_new_at(store, base, len, PS_TRACKING_AUTO) == NULL);
    CHECK(ps_last_error_code() == PS_ERR_ADDRESS_TAKEN);
    CHECK_ERROR("not free");
    CHECK(ps_region_new_at(store, base + len - ps_page_size(), len, PS_TRACKING_AUTO) == NULL);
    CHECK(ps_last_error_code() == PS_ERR_ADDRESS_TAKEN);
    void *mine = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(mine != MAP_FAILED);
    memset(mine, 7, 1 << 20);
    CHECK(ps_region_new_at(store, mine, 1 << 20, PS_TRACKING_AUTO) == NULL);
    CHECK(((unsigned char *)mine)[12345] == 7);
    CHECK(munmap(mine, 1 << 20) == 0);
    CHECK(ps_region_new_at(store, base + 1, len, PS_TRACKING_AUTO) == NULL);
    CHECK(ps_last_error_code() == PS_ERR_ARGUMENT);
    CHECK(ps_region_new_at(store, NULL, len, PS_TRACKING_AUTO) == NULL);
    CHECK(ps_last_error_code() == PS_ERR_ARGUMENT);

    /* a heap holding a list of pointers */
    CHECK(ps_heap_init(r) == 0);
    struct node *head = NULL;
    for (long i = 0; i < NODES; i++) {
        struct node *n = ps_heap_alloc(r, sizeof *n);
        CHECK(n != NULL);
        n->value = i * 3;
        n->next = head;
        head = n;
    }
    CHECK(ps_heap_set_root(r, 0, head) == 0);
    long sum = walk(head);
    ps_snapshot *snap = ps_snapshot_take(r);
    CHECK(snap != NULL);
    CHECK(ps_snapshot_origin(snap) == base);

    /* a clone at the origin needs the range free */
    CHECK(ps_snapshot_instantiate_at(snap, base, PS_TRACKING_AUTO) == NULL);
    CHECK(ps_last_error_code() == PS_ERR_ADDRESS_TAKEN);

    char file[4096];
    snprintf(file, sizeof file, "%s/heap.snap", argv[1]);
    CHECK(ps_snapshot_save(snap, file) == 0);
    CHECK(ps_region_free(r) == 0);

    /* same process: instantiate at the origin, the list is there */
    ps_region *c = ps_snapshot_instantiate_at(snap, ps_snapshot_origin(snap), PS_TRACKING_AUTO);
    CHECK(c != NULL);
    CHECK(walk(ps_heap_root(c, 0)) == sum);
    CHECK(ps_region_free(c) == 0);

    /* a fresh process: exec this program, which loads the file */
    fflush(stdout);
    int pipefd[2];
    CHECK(pipe(pipefd) == 0);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        dup2(pipefd[1], 1);
        close(pipefd[0]);
        execl("/proc/self/exe", argv[0], "child", file, (char *)NULL);
        _exit(127);
    }
    close(pipefd[1]);
    char out[4096] = {0};
    size_t got = 0;
    ssize_t k;
    while ((k = read(pipefd[0], out + got, sizeof out - 1 - got)) > 0) got += (size_t)k;
    close(pipefd[0]);
    int status;
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    char expect[64];
    snprintf(expect, sizeof expect, "child sum %ld\n", sum);
    CHECK(strstr(out, expect) != NULL);
    CHECK(strstr(out, "ok: ") != NULL);

    CHECK(ps_snapshot_free(snap) == 0);
    CHECK(ps_store_free(store) == 0);
    DONE();
}
