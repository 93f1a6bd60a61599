/* rw_lagoon: placeholder until the module lands. */
typedef int rw_lagoon_placeholder_t;
