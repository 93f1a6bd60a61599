/* rw_metrics: placeholder until the module lands. */
typedef int rw_metrics_placeholder_t;
