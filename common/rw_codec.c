/* rw_codec: placeholder until the module lands. */
typedef int rw_codec_placeholder_t;
