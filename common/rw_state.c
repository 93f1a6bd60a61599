/* rw_state: placeholder until the module lands. */
typedef int rw_state_placeholder_t;
