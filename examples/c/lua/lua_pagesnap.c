/* A Lua 5.4 interpreter whose whole state lives in a pagesnap heap: cycles of
 * snapshot / mutate / restore against a Lua deep copy and against fork(), and a
 * fresh process that continues a saved state at its origin address.
 *
 * Build (non-PIE, Lua linked statically: the state holds pointers to Lua's C
 * functions, which must be at the same addresses in every process that
 * continues it):
 *   cc -O2 -Wall -Wextra -Werror -no-pie -I /usr/include/lua5.4 \
 *      -I crates/pagesnap-ffi/include -I examples/c examples/c/lua/lua_pagesnap.c \
 *      -o lua_pagesnap -L target/release -lpagesnap \
 *      -Wl,-Bstatic -llua5.4 -Wl,-Bdynamic -lm -ldl
 * Run:
 *   lua_pagesnap check DIR        correctness checks (what `cargo test` runs)
 *   lua_pagesnap bench [ENTRIES]  figures: a cycle against a deep copy and fork
 *
 * Only the base, table, string and math libraries are opened: io keeps pointers
 * to the C library's stdin/stdout, whose addresses differ between processes. */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <sys/wait.h>

#include "example_util.h"

static ps_region *heap; /* outside the region: set in each process */

/* lua_Alloc over ps_heap_*: Lua passes nsize 0 to free. */
static void *l_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
    (void)ud;
    (void)osize;
    if (nsize == 0) {
        ps_heap_free(heap, ptr);
        return NULL;
    }
    return ps_heap_realloc(heap, ptr, nsize);
}

static const char *WORLD =
    "function build(n)\n"
    "  world = {}\n"
    "  for i = 1, n do\n"
    "    world[i] = {id = i, name = 'entity' .. i, vals = {i, i * 2, i * 3, i % 7}}\n"
    "  end\n"
    "end\n"
    "function checksum()\n"
    "  local s = 0\n"
    "  for i, e in ipairs(world) do\n"
    "    s = (s * 31 + e.id + #e.name + e.vals[1] + e.vals[#e.vals]) % 1000000007\n"
    "  end\n"
    "  return s * 1000 + #world % 1000\n"
    "end\n"
    "function mutate(k)\n"
    "  for i = k % 100 + 1, #world, 100 do\n"
    "    local e = world[i]\n"
    "    e.name = e.name .. '!' ; e.vals[#e.vals + 1] = k\n"
    "  end\n"
    "  for j = 1, 50 do world[#world + 1] = {id = -j, name = 'new', vals = {k}} end\n"
    "end\n"
    "function deepcopy(t)\n"
    "  if type(t) ~= 'table' then return t end\n"
    "  local c = {}\n"
    "  for k, v in pairs(t) do c[k] = deepcopy(v) end\n"
    "  return c\n"
    "end\n";

static void run(lua_State *L, const char *code) {
    if (luaL_dostring(L, code) != LUA_OK) {
        fprintf(stderr, "Lua error: %s\n", lua_tostring(L, -1));
        exit(1);
    }
}

static long long call_checksum(lua_State *L) {
    lua_getglobal(L, "checksum");
    EXPECT(lua_pcall(L, 0, 1, 0) == LUA_OK);
    long long v = (long long)lua_tointeger(L, -1);
    lua_pop(L, 1);
    return v;
}

static lua_State *new_state(ps_region *r, long entries) {
    heap = r;
    lua_State *L = lua_newstate(l_alloc, NULL);
    EXPECT(L != NULL);
    luaL_requiref(L, "_G", luaopen_base, 1);
    luaL_requiref(L, LUA_TABLIBNAME, luaopen_table, 1);
    luaL_requiref(L, LUA_STRLIBNAME, luaopen_string, 1);
    luaL_requiref(L, LUA_MATHLIBNAME, luaopen_math, 1);
    lua_settop(L, 0);
    run(L, WORLD);
    char build[64];
    snprintf(build, sizeof build, "build(%ld)", entries);
    run(L, build);
    lua_gc(L, LUA_GCCOLLECT);
    EXPECT(ps_heap_set_root(r, 0, L) == 0);
    return L;
}

static void mutate(lua_State *L, int k) {
    char code[64];
    snprintf(code, sizeof code, "mutate(%d)", k);
    run(L, code);
}

/* One cycle each way; returns ms per cycle. */
static double cycles_pagesnap(ps_region *r, lua_State *L, int n, long long want) {
    ps_snapshot *s = ps_snapshot_take(r);
    EXPECT(s != NULL);
    double t = now_ms();
    for (int k = 0; k < n; k++) {
        ps_snapshot *before = ps_snapshot_take(r);
        mutate(L, k);
        EXPECT(ps_restore(r, before) == 0);
        ps_snapshot_free(before);
    }
    double ms = (now_ms() - t) / n;
    EXPECT(call_checksum(L) == want);
    ps_snapshot_free(s);
    return ms;
}

static double cycles_deepcopy(lua_State *L, int n, long long want) {
    double t = now_ms();
    for (int k = 0; k < n; k++) {
        run(L, "saved = deepcopy(world)");
        mutate(L, k);
        run(L, "world = saved; saved = nil");
    }
    double ms = (now_ms() - t) / n;
    lua_gc(L, LUA_GCCOLLECT);
    EXPECT(call_checksum(L) == want);
    return ms;
}

static double cycles_fork(lua_State *L, int n, long long want) {
    double t = now_ms();
    for (int k = 0; k < n; k++) {
        fflush(stdout);
        pid_t pid = fork();
        EXPECT(pid >= 0);
        if (pid == 0) {
            mutate(L, k); /* the child mutates; the parent is the saved state */
            _exit(call_checksum(L) == want ? 1 : 0);
        }
        int status;
        EXPECT(waitpid(pid, &status, 0) == pid && WIFEXITED(status));
        EXPECT(WEXITSTATUS(status) == 0); /* the child saw its own mutation */
    }
    double ms = (now_ms() - t) / n;
    EXPECT(call_checksum(L) == want);
    return ms;
}

static int check(const char *dir, const char *self) {
    ps_store *store = ps_store_new();
    ps_region *r = region_at_fixed_address(store, 256u << 20);
    EXPECT(r != NULL && ps_heap_init(r) == 0);
    lua_State *L = new_state(r, 10000);
    long long want = call_checksum(L);

    /* restore brings back the interpreter, values and all */
    ps_snapshot *s0 = ps_snapshot_take(r);
    mutate(L, 3);
    long long mutated = call_checksum(L);
    EXPECT(mutated != want);
    EXPECT(ps_restore(r, s0) == 0);
    EXPECT(call_checksum(L) == want);
    run(L, "assert(world[101].name == 'entity101' and #world[101].vals == 4)");

    /* a few cycles each, to check them; figures come from `bench` */
    double p = cycles_pagesnap(r, L, 5, want);
    double d = cycles_deepcopy(L, 1, want);
    double f = cycles_fork(L, 2, want);
    ps_heap_usage u;
    EXPECT(ps_heap_stats(r, &u) == 0);
    printf("lua state %.1f MiB: cycle %.2f ms, deep copy %.2f ms, fork %.2f ms\n",
           (double)u.in_use_bytes / (1 << 20), p, d, f);

    /* a fresh process continues the saved state at its origin */
    EXPECT(ps_restore(r, s0) == 0);
    mutate(L, 5);
    long long saved_sum = call_checksum(L);
    ps_snapshot *s1 = ps_snapshot_take(r);
    char path[4096];
    snprintf(path, sizeof path, "%s/lua.snap", dir);
    EXPECT(ps_snapshot_save(s1, path) == 0);
    char want_s[32], next_s[32];
    snprintf(want_s, sizeof want_s, "%lld", saved_sum);
    mutate(L, 6);
    snprintf(next_s, sizeof next_s, "%lld", call_checksum(L)); /* what mutate(6) gives */
    char *args[] = {(char *)self, "continue", path, want_s, next_s, NULL};
    char *out = run_fresh_process(args);
    EXPECT(out != NULL && strstr(out, "continued: checksums match") != NULL);
    printf("%s", out);
    free(out);
    ps_snapshot_free(s1);
    ps_snapshot_free(s0);
    printf("ok: %s\n", LUA_RELEASE);
    return 0;
}

static int continue_saved(const char *path, const char *want, const char *next) {
    ps_store *store = ps_store_new();
    ps_snapshot *snap = ps_snapshot_load(store, path);
    EXPECT(snap != NULL && ps_snapshot_origin(snap) != NULL);
    ps_region *r = ps_snapshot_instantiate_at(snap, ps_snapshot_origin(snap), PS_TRACKING_AUTO);
    EXPECT(r != NULL);
    heap = r;
    lua_State *L = ps_heap_root(r, 0);
    EXPECT(L != NULL);
    lua_setallocf(L, l_alloc, NULL);
    EXPECT(call_checksum(L) == atoll(want));
    mutate(L, 6); /* the same step the first process took next */
    EXPECT(call_checksum(L) == atoll(next));
    EXPECT(ps_region_reset(r) == 0); /* between requests: back to the file's state */
    EXPECT(call_checksum(L) == atoll(want));
    printf("continued: checksums match (%s then %s)\n", want, next);
    return 0;
}

static int bench(long entries) {
    ps_store *store = ps_store_new();
    ps_region *r = region_at_fixed_address(store, 2048u << 20);
    EXPECT(r != NULL && ps_heap_init(r) == 0);
    lua_State *L = new_state(r, entries);
    long long want = call_checksum(L);
    ps_heap_usage u;
    EXPECT(ps_heap_stats(r, &u) == 0);
    double p = cycles_pagesnap(r, L, 20, want);
    double f = cycles_fork(L, 20, want);
    double d = cycles_deepcopy(L, 3, want);
    printf("lua state %.1f MiB (%ld entries): snapshot/mutate/restore cycle %.2f ms; "
           "fork per cycle %.2f ms (%.1fx); deep copy %.1f ms (%.0fx)\n",
           (double)u.in_use_bytes / (1 << 20), entries, p, f, f / p, d, d / p);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "check") == 0) return check(argv[2], argv[0]);
    if (argc == 5 && strcmp(argv[1], "continue") == 0)
        return continue_saved(argv[2], argv[3], argv[4]);
    if (argc >= 2 && strcmp(argv[1], "bench") == 0)
        return bench(argc > 2 ? atol(argv[2]) : 400000);
    fprintf(stderr, "usage: %s check DIR | continue FILE SUM NEXT | bench [ENTRIES]\n", argv[0]);
    return 2;
}
