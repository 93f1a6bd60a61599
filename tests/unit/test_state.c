/*
 * test_state: the run, target and chunk machines accept exactly the edges
 * written out below (retry-only edges only with retry), names round-trip,
 * the outcome and Lagoon-status rules hold, and the SQL state lists name
 * the states their C predicates accept. The Postgres writers are
 * covered by tests/integration/test_state.c.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "rw_state.h"

/* Expected cells: '.' no edge, 'E' edge, 'R' only on a retry. */

/* Columns in enum order: pend run paus comp part fail canc */
static const char *const run_expected[RW_RUN__COUNT] = {
    /* pending        */ ".E.EEEE",
    /* running        */ "..EEEEE",
    /* paused         */ ".E.EEEE",
    /* completed      */ ".R.....",
    /* partial_failed */ ".R.....",
    /* failed         */ ".R.....",
    /* cancelled      */ ".......",
};

/* Columns: pend clai trig depl succ fail skip tout canc */
static const char *const target_expected[RW_TARGET__COUNT] = {
    /* pending   */ ".E....E.E",
    /* claimed   */ "E.E..E...", /* -> pending: never sent */
    /* triggered */ "...EEE.E.",
    /* deploying */ "....EE.E.",
    /* succeeded */ ".........",
    /* failed    */ "R........",
    /* skipped   */ ".........",
    /* timed_out */ "R........",
    /* cancelled */ ".........",
};

/* Columns: pend trig'ing trig'ed done fail */
static const char *const chunk_expected[RW_CHUNK__COUNT] = {
    /* pending    */ ".E.E.",
    /* triggering */ "E.E.E", /* -> pending: never sent */
    /* triggered  */ "...E.",
    /* done       */ "R....",
    /* failed     */ "R....",
};

/* pending baking awaiting_promotion running done cancelled */
static const char *const wave_expected[RW_WAVE__COUNT] = {
    /* pending            */ ".EEE.E", /* -> running: resumed */
    /* baking             */ "...E.E",
    /* awaiting_promotion */ "...E.E",
    /* running            */ "....EE",
    /* done               */ "......",
    /* cancelled          */ "......",
};

typedef bool (*edge_fn)(int from, int to, bool retry);

static bool run_edge(int f, int t, bool r)
{
    return rw_run_edge_ok((rw_run_state_t)f, (rw_run_state_t)t, r);
}

static bool target_edge(int f, int t, bool r)
{
    return rw_target_edge_ok((rw_target_state_t)f, (rw_target_state_t)t, r);
}

static bool chunk_edge(int f, int t, bool r)
{
    return rw_chunk_edge_ok((rw_chunk_state_t)f, (rw_chunk_state_t)t, r);
}

static void check_table(const char *machine, const char *const *expected,
                        int count, edge_fn ok, const char *(*name)(int))
{
    int edges = 0;

    for (int f = 0; f < count; f++) {
        assert_int_equal(strlen(expected[f]), (size_t)count);
        for (int t = 0; t < count; t++) {
            char cell = expected[f][t];
            bool want_plain = cell == 'E';
            bool want_retry = cell == 'E' || cell == 'R';
            if (ok(f, t, false) != want_plain || ok(f, t, true) != want_retry)
                fail_msg("%s %s -> %s: got plain=%d retry=%d, want %c", machine,
                         name(f), name(t), ok(f, t, false), ok(f, t, true),
                         cell);
            edges += want_retry;
        }
        /* Out-of-range states are never legal. */
        assert_false(ok(f, count, true));
        assert_false(ok(f, -1, true));
        assert_false(ok(count, f, true));
        assert_false(ok(-1, f, true));
    }
    assert_true(edges > 0);
}

static bool wave_edge(int f, int t, bool r)
{
    return rw_wave_edge_ok((rw_wave_state_t)f, (rw_wave_state_t)t, r);
}

static const char *wave_name(int s)
{
    return rw_wave_state_name((rw_wave_state_t)s);
}

static void test_wave_edges(void **state)
{
    static const char *const names[] = {
        "pending", "baking", "awaiting_promotion",
        "running", "done",   "cancelled"};
    (void)state;
    check_table("wave", wave_expected, RW_WAVE__COUNT, wave_edge, wave_name);
    for (int s = 0; s < RW_WAVE__COUNT; s++) {
        assert_string_equal(rw_wave_state_name((rw_wave_state_t)s), names[s]);
        assert_int_equal(rw_wave_state_parse(names[s]), s);
    }
    assert_int_equal(rw_wave_state_parse("released"), -1);
    assert_string_equal(rw_wave_state_name(RW_WAVE__COUNT), "unknown");
}

static const char *run_name(int s)
{
    return rw_run_state_name((rw_run_state_t)s);
}

static const char *target_name(int s)
{
    return rw_target_state_name((rw_target_state_t)s);
}

static const char *chunk_name(int s)
{
    return rw_chunk_state_name((rw_chunk_state_t)s);
}

static void test_run_edges(void **state)
{
    (void)state;
    check_table("run", run_expected, RW_RUN__COUNT, run_edge, run_name);
    /* The brief's path (docs/DESIGN.md section 6), spelled out. */
    assert_true(rw_run_edge_ok(RW_RUN_PENDING, RW_RUN_RUNNING, false));
    assert_true(rw_run_edge_ok(RW_RUN_RUNNING, RW_RUN_PAUSED, false));
    assert_true(rw_run_edge_ok(RW_RUN_PAUSED, RW_RUN_RUNNING, false));
    assert_false(rw_run_edge_ok(RW_RUN_FAILED, RW_RUN_RUNNING, false));
    assert_true(rw_run_edge_ok(RW_RUN_FAILED, RW_RUN_RUNNING, true));
    assert_false(rw_run_edge_ok(RW_RUN_CANCELLED, RW_RUN_RUNNING, true));
    assert_false(rw_run_edge_ok(RW_RUN_RUNNING, RW_RUN_PENDING, true));
}

static void test_target_edges(void **state)
{
    (void)state;
    check_table("target", target_expected, RW_TARGET__COUNT, target_edge,
                target_name);
    assert_false(rw_target_edge_ok(RW_TARGET_FAILED, RW_TARGET_PENDING, false));
    assert_true(
        rw_target_edge_ok(RW_TARGET_TIMED_OUT, RW_TARGET_PENDING, true));
    /* A succeeded target is never sent again, not even by a retry. */
    for (int t = 0; t < RW_TARGET__COUNT; t++)
        assert_false(
            rw_target_edge_ok(RW_TARGET_SUCCEEDED, (rw_target_state_t)t, true));
}

static void test_chunk_edges(void **state)
{
    (void)state;
    check_table("chunk", chunk_expected, RW_CHUNK__COUNT, chunk_edge,
                chunk_name);
}

static void test_names_round_trip(void **state)
{
    static const char *const runs[] = {"pending",   "running",        "paused",
                                       "completed", "partial_failed", "failed",
                                       "cancelled"};
    static const char *const targets[] = {
        "pending", "claimed", "triggered", "deploying", "succeeded",
        "failed",  "skipped", "timed_out", "cancelled"};
    static const char *const chunks[] = {"pending", "triggering", "triggered",
                                         "done", "failed"};
    (void)state;

    for (int s = 0; s < RW_RUN__COUNT; s++) {
        assert_string_equal(rw_run_state_name((rw_run_state_t)s), runs[s]);
        assert_int_equal(rw_run_state_parse(runs[s]), s);
    }
    for (int s = 0; s < RW_TARGET__COUNT; s++) {
        assert_string_equal(rw_target_state_name((rw_target_state_t)s),
                            targets[s]);
        assert_int_equal(rw_target_state_parse(targets[s]), s);
    }
    for (int s = 0; s < RW_CHUNK__COUNT; s++) {
        assert_string_equal(rw_chunk_state_name((rw_chunk_state_t)s),
                            chunks[s]);
        assert_int_equal(rw_chunk_state_parse(chunks[s]), s);
    }
    assert_int_equal(rw_target_state_parse("timed_out"), RW_TARGET_TIMED_OUT);
    assert_int_equal(rw_target_state_parse("deploying"), RW_TARGET_DEPLOYING);
    assert_int_equal(rw_chunk_state_parse("triggering"), RW_CHUNK_TRIGGERING);
    assert_int_equal(rw_chunk_state_parse("done"), RW_CHUNK_DONE);

    assert_int_equal(rw_run_state_parse("Running"), -1);
    assert_int_equal(rw_run_state_parse("partial-failed"), -1);
    assert_int_equal(rw_run_state_parse(""), -1);
    assert_int_equal(rw_run_state_parse(NULL), -1);
    assert_int_equal(rw_target_state_parse("complete"), -1);
    assert_int_equal(rw_chunk_state_parse("claimed"), -1);
    assert_string_equal(rw_run_state_name(RW_RUN__COUNT), "unknown");
    assert_string_equal(rw_target_state_name((rw_target_state_t)-1), "unknown");
    assert_string_equal(rw_chunk_state_name(RW_CHUNK__COUNT), "unknown");
}

static void test_predicates(void **state)
{
    /* Written out per state: in flight, terminal. */
    /* clang-format off */
    static const struct {
        rw_target_state_t s;
        bool in_flight;
        bool terminal;
    } t[] = {
        {RW_TARGET_PENDING, false, false},
        {RW_TARGET_CLAIMED, true, false},
        {RW_TARGET_TRIGGERED, true, false},
        {RW_TARGET_DEPLOYING, true, false},
        {RW_TARGET_SUCCEEDED, false, true},
        {RW_TARGET_FAILED, false, true},
        {RW_TARGET_SKIPPED, false, true},
        {RW_TARGET_TIMED_OUT, false, true},
        {RW_TARGET_CANCELLED, false, true},
    }; /* clang-format on */

    (void)state;

    assert_int_equal(sizeof(t) / sizeof(t[0]), RW_TARGET__COUNT);
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        assert_int_equal(rw_target_in_flight(t[i].s), t[i].in_flight);
        assert_int_equal(rw_target_terminal(t[i].s), t[i].terminal);
    }
    assert_false(rw_run_terminal(RW_RUN_PENDING));
    assert_false(rw_run_terminal(RW_RUN_RUNNING));
    assert_false(rw_run_terminal(RW_RUN_PAUSED));
    assert_true(rw_run_terminal(RW_RUN_COMPLETED));
    assert_true(rw_run_terminal(RW_RUN_PARTIAL_FAILED));
    assert_true(rw_run_terminal(RW_RUN_FAILED));
    assert_true(rw_run_terminal(RW_RUN_CANCELLED));
    assert_false(rw_chunk_terminal(RW_CHUNK_PENDING));
    assert_false(rw_chunk_terminal(RW_CHUNK_TRIGGERING));
    assert_false(rw_chunk_terminal(RW_CHUNK_TRIGGERED));
    assert_true(rw_chunk_terminal(RW_CHUNK_DONE));
    assert_true(rw_chunk_terminal(RW_CHUNK_FAILED));
}

static void test_outcome(void **state)
{
    (void)state;
    assert_int_equal(rw_run_outcome(10, 0), RW_RUN_COMPLETED);
    /* Nothing succeeded and nothing failed: every target was skipped. */
    assert_int_equal(rw_run_outcome(0, 0), RW_RUN_COMPLETED);
    assert_int_equal(rw_run_outcome(0, 3), RW_RUN_FAILED);
    assert_int_equal(rw_run_outcome(1, 1), RW_RUN_PARTIAL_FAILED);
    assert_int_equal(rw_run_outcome(49, 1), RW_RUN_PARTIAL_FAILED);
    assert_int_equal(rw_run_outcome(1, 49), RW_RUN_PARTIAL_FAILED);
    assert_int_equal(rw_run_outcome(1000000, 0), RW_RUN_COMPLETED);
}

static void test_lagoon_mapping(void **state)
{
    static const struct {
        const char *status;
        rw_target_state_t want;
    } m[] = {
        {"complete", RW_TARGET_SUCCEEDED},
        {"failed", RW_TARGET_FAILED},
        {"error", RW_TARGET_FAILED},
        {"cancelled", RW_TARGET_FAILED},
        {"new", RW_TARGET_DEPLOYING},
        {"pending", RW_TARGET_DEPLOYING},
        {"queued", RW_TARGET_DEPLOYING},
        {"running", RW_TARGET_DEPLOYING},
        {"COMPLETE", RW_TARGET_SUCCEEDED},
        {"some-future-status", RW_TARGET_DEPLOYING},
        {"", RW_TARGET_DEPLOYING},
        {"completed", RW_TARGET_DEPLOYING}, /* not Lagoon's word */
    };
    (void)state;

    for (size_t i = 0; i < sizeof(m) / sizeof(m[0]); i++) {
        if (rw_target_from_lagoon(m[i].status, true) != m[i].want)
            fail_msg(
                "lagoon status \"%s\": got %s, want %s", m[i].status,
                rw_target_state_name(rw_target_from_lagoon(m[i].status, true)),
                rw_target_state_name(m[i].want));
        /* Without a deployment row the status is irrelevant. */
        assert_int_equal(rw_target_from_lagoon(m[i].status, false),
                         RW_TARGET_TRIGGERED);
    }
    assert_int_equal(rw_target_from_lagoon(NULL, false), RW_TARGET_TRIGGERED);
    assert_int_equal(rw_target_from_lagoon(NULL, true), RW_TARGET_DEPLOYING);
}

/*
 * The states named in an SQL list "('a', 'b')" are exactly those pred
 * accepts, each once, and the list has nothing else in it.
 */
static void check_sql_list(const char *what, const char *sql,
                           bool (*pred)(rw_target_state_t))
{
    bool seen[RW_TARGET__COUNT] = {false};
    char buf[256];
    const char *p = sql;

    assert_int_equal(*p++, '(');
    for (;;) {
        const char *end;
        int st;
        assert_int_equal(*p++, '\'');
        end = strchr(p, '\'');
        assert_non_null(end);
        assert_true((size_t)(end - p) < sizeof(buf));
        memcpy(buf, p, (size_t)(end - p));
        buf[end - p] = '\0';
        st = rw_target_state_parse(buf);
        if (st < 0 || !pred((rw_target_state_t)st) || seen[st])
            fail_msg("%s: \"%s\" does not belong in %s", what, buf, sql);
        seen[st] = true;
        p = end + 1;
        if (*p == ')')
            break;
        assert_int_equal(*p++, ',');
        assert_int_equal(*p++, ' ');
    }
    assert_int_equal(p[1], '\0');
    for (int s = 0; s < RW_TARGET__COUNT; s++)
        if (pred((rw_target_state_t)s) && !seen[s])
            fail_msg("%s: %s is missing from %s", what,
                     rw_target_state_name((rw_target_state_t)s), sql);
}

static void test_sql_lists(void **state)
{
    (void)state;
    check_sql_list("in flight", RW_TARGET_IN_FLIGHT_SQL, rw_target_in_flight);
    check_sql_list("terminal", RW_TARGET_TERMINAL_SQL, rw_target_terminal);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_run_edges),
        cmocka_unit_test(test_target_edges),
        cmocka_unit_test(test_chunk_edges),
        cmocka_unit_test(test_wave_edges),
        cmocka_unit_test(test_names_round_trip),
        cmocka_unit_test(test_predicates),
        cmocka_unit_test(test_outcome),
        cmocka_unit_test(test_lagoon_mapping),
        cmocka_unit_test(test_sql_lists),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
