/*
 * ctl_dlq: "rollwavectl dlq list [--limit N] | show PARTITION:OFFSET |
 * requeue PARTITION:OFFSET [--json]". Reads the dead-letter topic
 * (<prefix>dlq) and sends single dead letters back to the topic they came
 * from.
 *
 * Reading never joins a consumer group and never commits: a reader
 * (rw_kafka_reader_new) assigns one partition at a time from its low
 * watermark (list) or at the requested offset (show, requeue), so looking
 * leaves no trace and any number of operators can look at once. list goes
 * partition by partition in offset order and stops after --limit messages
 * (default 50).
 *
 * requeue produces the dead letter's key and payload to its rw-source-topic
 * header's topic with its headers except the dead-letter (rw-*) ones
 * (rw_kafka_requeue, the rule rw_kafka.h writes down), waits for the
 * delivery report and prints where it landed. It does not remove the dead
 * letter (Kafka cannot delete one record), so requeueing twice sends it
 * twice; the consumers are idempotent against Postgres (DESIGN.md section
 * 3), and a message that is still poison simply comes back to the
 * dead-letter topic with a new reason. It does not decode payloads.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "ctl.h"
#include "rw_daemon.h"
#include "rw_kafka.h"

#define CMD           "dlq"
#define TIMEOUT_MS    10000
#define DEFAULT_LIMIT 50
#define PREVIEW_TEXT  48  /* payload bytes in a table row */
#define PREVIEW_JSON  256 /* payload bytes in list --json */
#define REASON_TEXT   40
#define KEY_TEXT      32

typedef struct dlq {
    const rw_settings_t *s;
    char topic[256];
    rw_kafka_consumer_t *kc; /* the reader; also watermarks and counts */
    char errstr[512];
} dlq_t;

typedef struct msg_list {
    rw_kafka_msg_t **v;
    size_t n, cap;
} msg_list_t;

/* Delivery report of the one requeued message. */
typedef struct delivery {
    int done;
    rw_err_t result;
    int32_t partition;
    int64_t offset;
    char errmsg[256];
} delivery_t;

/* ---- reading ------------------------------------------------------------ */

static rw_err_t dlq_open(dlq_t *d, const rw_settings_t *s)
{
    d->s = s;
    rw_kafka_topic(d->topic, sizeof(d->topic), s, "dlq");
    return rw_kafka_reader_new(&d->kc, s, d->errstr, sizeof(d->errstr));
}

static void dlq_close(dlq_t *d)
{
    rw_kafka_consumer_destroy(d->kc);
}

static rw_err_t list_add(msg_list_t *l, rw_kafka_msg_t *msg, char *errstr,
                         size_t errlen)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        rw_kafka_msg_t **v = realloc(l->v, cap * sizeof(*v));
        if (!v)
            return rw_err_set(errstr, errlen, RW_ERR_NOMEM, "dlq messages");
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = msg;
    return RW_OK;
}

static void list_free(msg_list_t *l)
{
    for (size_t i = 0; i < l->n; i++)
        rw_kafka_msg_destroy(l->v[i]);
    free(l->v);
}

/*
 * Read partition from offset up to (not including) end, at most max
 * messages, appending them to l (which then owns them).
 */
static rw_err_t read_range(dlq_t *d, int32_t partition, int64_t from,
                           int64_t end, size_t max, msg_list_t *l)
{
    long long deadline = rw_now_mono_ms() + TIMEOUT_MS;
    size_t got = 0;
    rw_err_t err = RW_OK;

    if (from >= end || max == 0)
        return RW_OK;
    err = rw_kafka_reader_assign(d->kc, d->topic, partition, from, d->errstr,
                                 sizeof(d->errstr));
    if (err)
        return err;
    while (got < max) {
        rw_kafka_msg_t *msg = NULL;
        bool eof = false;
        int64_t offset;

        err = rw_kafka_reader_poll(d->kc, 100, &msg, &eof, d->errstr,
                                   sizeof(d->errstr));
        if (err || eof)
            break;
        if (!msg) {
            if (rw_now_mono_ms() < deadline)
                continue;
            err = rw_err_set(d->errstr, sizeof(d->errstr), RW_ERR_TIMEOUT,
                             "reading %s[%" PRId32 "]: nothing for %d ms",
                             d->topic, partition, TIMEOUT_MS);
            break;
        }
        offset = rw_kafka_msg_offset(msg);
        if (rw_kafka_msg_partition(msg) != partition || offset < from) {
            rw_kafka_msg_destroy(msg);
            continue;
        }
        if (offset >= end) {
            rw_kafka_msg_destroy(msg);
            break;
        }
        err = list_add(l, msg, d->errstr, sizeof(d->errstr));
        if (err) {
            rw_kafka_msg_destroy(msg);
            break;
        }
        got++;
        deadline = rw_now_mono_ms() + TIMEOUT_MS;
        if (offset >= end - 1)
            break;
    }
    rw_kafka_reader_unassign(d->kc);
    return err;
}

/* The dead letter at partition:offset into *msgp (caller destroys). */
static rw_err_t fetch_one(dlq_t *d, int32_t partition, int64_t offset,
                          rw_kafka_msg_t **msgp)
{
    msg_list_t l = {NULL, 0, 0};
    int64_t low, high;
    int n = 0;
    rw_err_t err = RW_OK;

    *msgp = NULL;
    err = rw_kafka_partition_count(d->kc, d->topic, &n, TIMEOUT_MS, d->errstr,
                                   sizeof(d->errstr));
    if (err)
        goto out;
    if (partition >= n) {
        err = rw_err_set(d->errstr, sizeof(d->errstr), RW_ERR_NOT_FOUND,
                         "%s has no partition %" PRId32 " (%d partitions)",
                         d->topic, partition, n);
        goto out;
    }
    err = rw_kafka_watermarks(d->kc, d->topic, partition, &low, &high,
                              TIMEOUT_MS, d->errstr, sizeof(d->errstr));
    if (err)
        goto out;
    if (offset < low || offset >= high) {
        err = rw_err_set(d->errstr, sizeof(d->errstr), RW_ERR_NOT_FOUND,
                         "no message at %" PRId32 ":%" PRId64
                         " (partition %" PRId32 " holds offsets %" PRId64
                         "..%" PRId64 ")",
                         partition, offset, partition, low, high - 1);
        goto out;
    }
    err = read_range(d, partition, offset, offset + 1, 1, &l);
    if (err)
        goto out;
    if (l.n != 1 || rw_kafka_msg_offset(l.v[0]) != offset) {
        err = rw_err_set(d->errstr, sizeof(d->errstr), RW_ERR_NOT_FOUND,
                         "no message at %" PRId32 ":%" PRId64
                         " (compacted away?)",
                         partition, offset);
        goto out;
    }
    *msgp = l.v[0];
    l.n = 0;
out:
    list_free(&l);
    return err;
}

/* ---- presenting --------------------------------------------------------- */

static int utf8_valid(const void *p, size_t len)
{
    json_t *j = json_stringn(p, len);
    int ok = j != NULL;

    json_decref(j);
    return ok;
}

/* Bytes to keep of a cut to max: never inside a UTF-8 sequence. */
static size_t cut_len(const unsigned char *p, size_t len, size_t max, int utf8)
{
    size_t n = len;

    if (max && len > max) {
        n = max;
        while (utf8 && n > 0 && (p[n] & 0xC0) == 0x80)
            n--;
    }
    return n;
}

/*
 * Text for a terminal: valid UTF-8 stays, control bytes (newline and tab
 * too, unless keep_nl) and the bytes of invalid UTF-8 become \xNN; at most
 * max input bytes (0 = all) with "..." marking a cut. Caller frees.
 */
static char *printable(const void *data, size_t len, size_t max, int keep_nl)
{
    const unsigned char *p = data;
    int utf8 = utf8_valid(p, len);
    size_t n = cut_len(p, len, max, utf8), o = 0;
    char *out = malloc(n * 4 + 4);

    if (!out)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = p[i];
        int keep = (c >= 0x20 && c < 0x7f) || (c >= 0x80 && utf8) ||
                   (keep_nl && (c == '\n' || c == '\t'));
        if (keep)
            out[o++] = (char)c;
        else
            o += (size_t)sprintf(out + o, "\\x%02x", c);
    }
    if (n < len)
        o += (size_t)sprintf(out + o, "...");
    out[o] = '\0';
    return out;
}

/* JSON string of data: verbatim when it is UTF-8, else printable(). */
static json_t *json_text(const void *data, size_t len, size_t max)
{
    json_t *j;
    char *txt;

    if (!data)
        return json_null();
    if (utf8_valid(data, len))
        return json_stringn(data, cut_len(data, len, max, 1));
    txt = printable(data, len, max, 1);
    j = txt ? json_string(txt) : json_null();
    free(txt);
    return j;
}

static json_t *header_int_json(const rw_kafka_msg_t *msg, const char *name)
{
    char buf[32], *end = NULL;
    long long v;

    if (!rw_kafka_msg_header_str(msg, name, buf, sizeof(buf)) || !buf[0])
        return json_null();
    v = strtoll(buf, &end, 10);
    return *end ? json_string(buf) : json_integer(v);
}

static void fmt_time(char *buf, size_t len, const rw_kafka_msg_t *msg)
{
    int64_t ts = rw_kafka_msg_timestamp(msg);
    time_t t;
    struct tm tm;

    if (ts < 0) {
        snprintf(buf, len, "-");
        return;
    }
    t = (time_t)(ts / 1000);
    gmtime_r(&t, &tm);
    snprintf(buf, len, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
             (int)(ts % 1000));
}

/* Header name of msg as JSON text, null when absent. */
static json_t *header_json(const rw_kafka_msg_t *msg, const char *name)
{
    char buf[1024];

    if (!rw_kafka_msg_header_str(msg, name, buf, sizeof(buf)))
        return json_null();
    return json_text(buf, strlen(buf), 0);
}

/* A dead letter as JSON; payload whole (full) or as a preview. */
static json_t *msg_json(const rw_kafka_msg_t *msg, int full)
{
    json_t *o = json_object();
    int64_t ts = rw_kafka_msg_timestamp(msg);
    size_t keylen, len;
    const void *key = rw_kafka_msg_key(msg, &keylen);
    const void *payload = rw_kafka_msg_payload(msg, &len);

    json_object_set_new(o, "partition",
                        json_integer(rw_kafka_msg_partition(msg)));
    json_object_set_new(o, "offset", json_integer(rw_kafka_msg_offset(msg)));
    json_object_set_new(o, "timestamp_ms",
                        ts >= 0 ? json_integer(ts) : json_null());
    json_object_set_new(o, "reason", header_json(msg, RW_KAFKA_HDR_REASON));
    json_object_set_new(o, "source_topic",
                        header_json(msg, RW_KAFKA_HDR_SOURCE_TOPIC));
    json_object_set_new(o, "source_partition",
                        header_int_json(msg, RW_KAFKA_HDR_SOURCE_PARTITION));
    json_object_set_new(o, "source_offset",
                        header_int_json(msg, RW_KAFKA_HDR_SOURCE_OFFSET));
    json_object_set_new(o, "key", json_text(key, keylen, 0));
    json_object_set_new(o, "payload_bytes", json_integer((json_int_t)len));
    json_object_set_new(o, full ? "payload" : "payload_preview",
                        json_text(payload, len, full ? 0 : PREVIEW_JSON));
    if (full && rw_kafka_msg_header_count(msg) > 0) {
        json_t *h = json_array();
        rw_kafka_header_t hdr;

        for (size_t i = 0; rw_kafka_msg_header_at(msg, i, &hdr); i++) {
            json_t *e = json_object();
            json_object_set_new(e, "name", json_string(hdr.name));
            json_object_set_new(e, "value", json_text(hdr.value, hdr.len, 0));
            json_array_append_new(h, e);
        }
        json_object_set_new(o, "headers", h);
    }
    return o;
}

static int dump_json(json_t *root)
{
    int rc = json_dumpf(root, stdout, JSON_INDENT(2));

    if (rc == 0)
        fputc('\n', stdout);
    json_decref(root);
    return rc;
}

/* One table row's cells, each malloc'ed. */
enum { C_POS, C_TIME, C_REASON, C_SOURCE, C_KEY, C_PAYLOAD, N_COLS };

static const char *const col_names[N_COLS] = {
    "POSITION", "TIME", "REASON", "SOURCE", "KEY", "PAYLOAD",
};

static void row_cells(const rw_kafka_msg_t *msg, char **cell)
{
    char buf[1024], t[64], p[32], o[32];
    size_t keylen, len;
    const void *key = rw_kafka_msg_key(msg, &keylen);
    const void *payload = rw_kafka_msg_payload(msg, &len);

    snprintf(buf, sizeof(buf), "%" PRId32 ":%" PRId64,
             rw_kafka_msg_partition(msg), rw_kafka_msg_offset(msg));
    cell[C_POS] = strdup(buf);
    fmt_time(buf, sizeof(buf), msg);
    cell[C_TIME] = strdup(buf);
    rw_kafka_msg_header_str(msg, RW_KAFKA_HDR_REASON, buf, sizeof(buf));
    cell[C_REASON] = printable(buf, strlen(buf), REASON_TEXT, 0);
    if (rw_kafka_msg_header_str(msg, RW_KAFKA_HDR_SOURCE_TOPIC, t, sizeof(t))) {
        rw_kafka_msg_header_str(msg, RW_KAFKA_HDR_SOURCE_PARTITION, p,
                                sizeof(p));
        rw_kafka_msg_header_str(msg, RW_KAFKA_HDR_SOURCE_OFFSET, o, sizeof(o));
        snprintf(buf, sizeof(buf), "%s[%s]@%s", t, p, o);
    } else {
        snprintf(buf, sizeof(buf), "-");
    }
    cell[C_SOURCE] = printable(buf, strlen(buf), 0, 0);
    cell[C_KEY] = key ? printable(key, keylen, KEY_TEXT, 0) : strdup("-");
    cell[C_PAYLOAD] = printable(payload, len, PREVIEW_TEXT, 0);
}

static void print_rows(const msg_list_t *l)
{
    char **cells = calloc(l->n * N_COLS + 1, sizeof(char *));
    int w[N_COLS];

    if (!cells)
        return;
    for (int c = 0; c < N_COLS; c++)
        w[c] = (int)strlen(col_names[c]);
    for (size_t i = 0; i < l->n; i++) {
        row_cells(l->v[i], &cells[i * N_COLS]);
        for (int c = 0; c < N_COLS; c++) {
            const char *v = cells[i * N_COLS + c];
            int len = v ? (int)strlen(v) : 0;
            if (len > w[c])
                w[c] = len;
        }
    }
    for (int c = 0; c < N_COLS - 1; c++)
        printf("%-*s  ", w[c], col_names[c]);
    printf("%s\n", col_names[N_COLS - 1]);
    for (size_t i = 0; i < l->n; i++)
        for (int c = 0; c < N_COLS; c++) {
            const char *v = cells[i * N_COLS + c];
            if (c < N_COLS - 1)
                printf("%-*s  ", w[c], v ? v : "");
            else
                printf("%s\n", v ? v : "");
        }
    for (size_t i = 0; i < l->n * N_COLS; i++)
        free(cells[i]);
    free(cells);
}

/* ---- subcommands -------------------------------------------------------- */

static int parse_pos(const char *arg, int32_t *partition, int64_t *offset)
{
    char *end = NULL;
    long long p, o;

    if (!arg)
        return -1;
    p = strtoll(arg, &end, 10);
    if (end == arg || *end != ':' || p < 0 || p > INT32_MAX)
        return -1;
    arg = end + 1;
    o = strtoll(arg, &end, 10);
    if (end == arg || *end || o < 0)
        return -1;
    *partition = (int32_t)p;
    *offset = o;
    return 0;
}

static rw_err_t do_list(dlq_t *d, long long limit, int json)
{
    msg_list_t l = {NULL, 0, 0};
    int64_t total = 0;
    int n = 0;
    rw_err_t err = RW_OK;

    err = rw_kafka_partition_count(d->kc, d->topic, &n, TIMEOUT_MS, d->errstr,
                                   sizeof(d->errstr));
    for (int p = 0; !err && p < n; p++) {
        int64_t low, high;

        err = rw_kafka_watermarks(d->kc, d->topic, p, &low, &high, TIMEOUT_MS,
                                  d->errstr, sizeof(d->errstr));
        if (err)
            break;
        total += high - low;
        if (l.n < (size_t)limit)
            err = read_range(d, p, low, high, (size_t)limit - l.n, &l);
    }
    if (err)
        goto out;
    if (json) {
        json_t *root = json_object();
        json_t *msgs = json_array();

        json_object_set_new(root, "topic", json_string(d->topic));
        json_object_set_new(root, "total", json_integer(total));
        json_object_set_new(root, "shown", json_integer((json_int_t)l.n));
        json_object_set_new(root, "messages", msgs);
        for (size_t i = 0; i < l.n; i++)
            json_array_append_new(msgs, msg_json(l.v[i], 0));
        if (dump_json(root))
            err = rw_err_set(d->errstr, sizeof(d->errstr), RW_ERR_IO,
                             "cannot write the JSON output");
        goto out;
    }
    if (l.n == 0) {
        printf("no dead letters in %s\n", d->topic);
        goto out;
    }
    print_rows(&l);
    printf("%zu of %" PRId64 " dead letter(s) in %s shown\n", l.n, total,
           d->topic);
out:
    list_free(&l);
    return err;
}

static rw_err_t do_show(dlq_t *d, int32_t partition, int64_t offset, int json)
{
    rw_kafka_msg_t *msg = NULL;
    rw_kafka_header_t hdr;
    char buf[1024];
    char *txt;
    size_t keylen, len;
    const void *key, *payload;
    rw_err_t err = RW_OK;

    err = fetch_one(d, partition, offset, &msg);
    if (err)
        goto out;
    if (json) {
        if (dump_json(msg_json(msg, 1)))
            err = rw_err_set(d->errstr, sizeof(d->errstr), RW_ERR_IO,
                             "cannot write the JSON output");
        goto out;
    }
    printf("position  %s %" PRId32 ":%" PRId64 "\n", d->topic, partition,
           offset);
    fmt_time(buf, sizeof(buf), msg);
    printf("time      %s\n", buf);
    for (size_t i = 0; rw_kafka_msg_header_at(msg, i, &hdr); i++) {
        txt = printable(hdr.value, hdr.len, 0, 0);
        printf("header    %s: %s\n", hdr.name, txt ? txt : "");
        free(txt);
    }
    key = rw_kafka_msg_key(msg, &keylen);
    payload = rw_kafka_msg_payload(msg, &len);
    txt = key ? printable(key, keylen, 0, 0) : NULL;
    printf("key       %s\n", txt ? txt : "(none)");
    free(txt);
    printf("payload   %zu byte(s)\n", len);
    txt = printable(payload, len, 0, 1);
    printf("%s\n", txt ? txt : "");
    free(txt);
out:
    rw_kafka_msg_destroy(msg);
    return err;
}

/* Delivery report of the one requeued message, into *(delivery_t *). */
static void requeue_report(void *dr_opaque, void *msg_opaque, rw_err_t result,
                           int32_t partition, int64_t offset,
                           const char *errmsg)
{
    delivery_t *dv = dr_opaque;

    (void)msg_opaque;
    dv->done = 1;
    dv->result = result;
    dv->partition = partition;
    dv->offset = offset;
    snprintf(dv->errmsg, sizeof(dv->errmsg), "%s", errmsg);
}

static rw_err_t do_requeue(dlq_t *d, int32_t partition, int64_t offset,
                           int json)
{
    rw_kafka_msg_t *msg = NULL;
    rw_kafka_producer_t *kp = NULL;
    delivery_t dv;
    char src[256];
    rw_err_t err = RW_OK;

    memset(&dv, 0, sizeof(dv));
    err = fetch_one(d, partition, offset, &msg);
    if (err)
        goto out;
    rw_kafka_msg_header_str(msg, RW_KAFKA_HDR_SOURCE_TOPIC, src, sizeof(src));
    err = rw_kafka_producer_new(&kp, d->s, requeue_report, &dv, d->errstr,
                                sizeof(d->errstr));
    if (!err)
        err = rw_kafka_requeue(kp, msg, NULL, d->errstr, sizeof(d->errstr));
    if (!err)
        err =
            rw_kafka_producer_flush(kp, rw_kafka_producer_delivery_wait_ms(kp),
                                    d->errstr, sizeof(d->errstr));
    if (err)
        goto out;
    if (!dv.done || dv.result) {
        err =
            rw_err_set(d->errstr, sizeof(d->errstr),
                       dv.done ? dv.result : RW_ERR_KAFKA, "requeue to %s: %s",
                       src, dv.done ? dv.errmsg : "no delivery report");
        goto out;
    }
    if (json) {
        json_t *root = json_object();
        json_t *from = json_object();

        json_object_set_new(from, "topic", json_string(d->topic));
        json_object_set_new(from, "partition", json_integer(partition));
        json_object_set_new(from, "offset", json_integer(offset));
        json_object_set_new(root, "from", from);
        json_object_set_new(root, "topic", json_text(src, strlen(src), 0));
        json_object_set_new(root, "partition", json_integer(dv.partition));
        json_object_set_new(root, "offset", json_integer(dv.offset));
        if (dump_json(root))
            err = rw_err_set(d->errstr, sizeof(d->errstr), RW_ERR_IO,
                             "cannot write the JSON output");
        goto out;
    }
    printf("requeued %s %" PRId32 ":%" PRId64 " to %s partition %" PRId32
           " offset %" PRId64 "\n",
           d->topic, partition, offset, src, dv.partition, dv.offset);
out:
    /* Destroying the producer flushes; dv must outlive it. */
    rw_kafka_producer_destroy(kp);
    rw_kafka_msg_destroy(msg);
    return err;
}

static int usage_error(const char *what)
{
    rw_ctl_errorf(CMD, "%s (see rollwavectl dlq --help)", what);
    return RW_CTL_EXIT_USAGE;
}

int rw_ctl_dlq(int argc, char **argv, const rw_settings_t *s)
{
    const char *verb = argc > 1 ? argv[1] : NULL;
    const char *pos = NULL;
    long long limit = DEFAULT_LIMIT;
    int32_t partition = 0;
    int64_t offset = 0;
    int json = 0;
    dlq_t d;
    rw_err_t err = RW_OK;

    memset(&d, 0, sizeof(d));
    if (!verb || (strcmp(verb, "list") && strcmp(verb, "show") &&
                  strcmp(verb, "requeue")))
        return usage_error("needs list, show or requeue");
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];

        if (strcmp(a, "--json") == 0) {
            json = 1;
        } else if (strcmp(a, "--limit") == 0 && strcmp(verb, "list") == 0) {
            if (rw_ctl_parse_ll(CMD, a, i + 1 < argc ? argv[i + 1] : NULL, 1,
                                1000000, &limit))
                return RW_CTL_EXIT_USAGE;
            i++;
        } else if (strcmp(verb, "list") && !pos && a[0] != '-') {
            pos = a;
        } else {
            rw_ctl_errorf(CMD, "unknown argument '%s' for %s", a, verb);
            return RW_CTL_EXIT_USAGE;
        }
    }
    if (strcmp(verb, "list") && parse_pos(pos, &partition, &offset))
        return usage_error("needs PARTITION:OFFSET, e.g. 0:42");

    err = dlq_open(&d, s);
    if (!err && strcmp(verb, "list") == 0)
        err = do_list(&d, limit, json);
    else if (!err && strcmp(verb, "show") == 0)
        err = do_show(&d, partition, offset, json);
    else if (!err)
        err = do_requeue(&d, partition, offset, json);
    if (err)
        rw_ctl_errorf(CMD, "%s", d.errstr);
    dlq_close(&d);
    return err ? RW_CTL_EXIT_FAILED : RW_CTL_EXIT_OK;
}
