/* A C program that handles signals in one thread, as many servers do, and
 * pagesnap's write faults:
 *  1. with every signal blocked in main (and so in every thread it starts),
 *     mprotect tracking and background snapshots are refused with
 *     PS_ERR_UNAVAILABLE and a message naming the thread, instead of the
 *     process dying at the first write;
 *  2. with every signal blocked but the four a fault raises (the fix the
 *     message asks for), pthread writers that inherit that mask write through
 *     background snapshots, and each snapshot is its instant;
 *  3. a SIGUSR1 handler that writes into the region, sent to a writer again and
 *     again during background snapshots, runs when pagesnap's handler has
 *     returned (it used to fault inside it and kill the process). */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>

#include "check.h"

#define LEN (8u << 20)

static unsigned char *mem;
static size_t page;
static volatile int stop;
static volatile size_t at; /* where the writer writes now */
static volatile unsigned long stamped;

static void stamp(int sig) {
    (void)sig;
    size_t a = at;
    mem[a + 8] = 0x5a; /* next to the writer, often in a batch not yet copied */
    stamped++;
}

static void *writer(void *arg) {
    (void)arg;
    unsigned char round = 2;
    while (!stop) {
        for (size_t off = 0; off + 16 < LEN && !stop; off += 256) {
            at = off;
            mem[off] = round;
        }
        round++;
    }
    return NULL;
}

static void block_all_but_faults(int but_faults) {
    sigset_t set;
    sigfillset(&set);
    if (but_faults) {
        sigdelset(&set, SIGSEGV);
        sigdelset(&set, SIGBUS);
        sigdelset(&set, SIGFPE);
        sigdelset(&set, SIGILL);
        sigdelset(&set, SIGUSR1); /* for part 3 */
    }
    CHECK(pthread_sigmask(but_faults ? SIG_SETMASK : SIG_BLOCK, &set, NULL) == 0);
}

int main(void) {
    page = (size_t)sysconf(_SC_PAGESIZE);
    ps_store *store = ps_store_new();
    CHECK(store != NULL);
    ps_region *region = ps_region_new(store, LEN, PS_TRACKING_AUTO);
    CHECK(region != NULL);
    mem = ps_region_ptr(region);
    memset(mem, 1, LEN);

    /* 1. Everything blocked. */
    block_all_but_faults(0);
    CHECK(ps_background_snapshot(region) == NULL);
    CHECK(ps_last_error_code() == PS_ERR_UNAVAILABLE);
    CHECK_ERROR("blocks SIGSEGV");
    if (ps_tracking_available(PS_TRACKING_MPROTECT)) {
        CHECK(ps_region_new(store, LEN, PS_TRACKING_MPROTECT) == NULL);
        CHECK(ps_last_error_code() == PS_ERR_UNAVAILABLE);
        CHECK_ERROR("blocks SIGSEGV");
    }

    /* 2. and 3. Everything but the fault signals (and SIGUSR1) blocked. */
    block_all_but_faults(1);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = stamp;
    CHECK(sigaction(SIGUSR1, &sa, NULL) == 0);
    pthread_t t;
    CHECK(pthread_create(&t, NULL, writer, NULL) == 0);
    unsigned char *copy = malloc(LEN);
    CHECK(copy != NULL);
    for (int i = 0; i < 20; i++) {
        ps_background *bg = ps_background_snapshot(region);
        CHECK(bg != NULL);
        for (int k = 0; k < 50; k++) {
            pthread_kill(t, SIGUSR1);
            struct timespec ts = {0, 20000};
            nanosleep(&ts, NULL);
        }
        ps_snapshot *snap = ps_background_wait(bg);
        CHECK(snap != NULL);
        CHECK(ps_snapshot_read(snap, 0, copy, LEN) == 0);
        /* One instant of a writer going up the region round after round: the
         * bytes it writes (every 256th) are one round up to some point and the
         * round before after it (rounds count modulo 256). */
        int steps = 0;
        for (size_t off = 256; off + 16 < LEN; off += 256) {
            unsigned char prev = copy[off - 256], cur = copy[off];
            if (cur == prev) continue;
            CHECK((unsigned char)(cur + 1) == prev);
            steps++;
        }
        CHECK(steps <= 1);
        CHECK(ps_snapshot_free(snap) == 0);
    }
    free(copy);
    stop = 1;
    CHECK(pthread_join(t, NULL) == 0);
    CHECK(stamped > 0);

    ps_region_free(region);
    ps_store_free(store);
    DONE();
}
