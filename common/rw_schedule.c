/* rw_schedule: placeholder until the module lands. */
typedef int rw_schedule_placeholder_t;
