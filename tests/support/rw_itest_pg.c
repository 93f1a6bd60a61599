/* rw_itest_pg: placeholder until the module lands. */
typedef int rw_itest_pg_placeholder_t;
