/* rw_kafka: placeholder until the module lands. */
typedef int rw_kafka_placeholder_t;
