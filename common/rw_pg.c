/* rw_pg: placeholder until the module lands. */
typedef int rw_pg_placeholder_t;
