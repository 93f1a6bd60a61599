/* rw_redis: placeholder until the module lands. */
typedef int rw_redis_placeholder_t;
