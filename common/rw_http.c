/* rw_http: placeholder until the module lands. */
typedef int rw_http_placeholder_t;
