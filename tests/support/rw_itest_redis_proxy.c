/*
 * rw_itest_redis_proxy: RESP-aware TCP proxy with an error-reply switch,
 * for the fault suite (see the header). One thread, one poll() loop,
 * non-blocking sockets and growable buffers; each client connection has
 * its own server connection and a queue of the answers it is owed, in
 * command order: "the server's next reply" or "this error". Test support
 * only: nothing here is linked into the daemons.
 */
#include "rw_itest_redis_proxy.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Nesting deeper than this is treated as malformed (no real reply is). */
#define MAX_DEPTH  32
#define READ_CHUNK 65536

typedef struct buf {
    char *d;
    size_t len, cap;
} buf_t;

/* One answer a client is owed: the server's next reply, or err. */
typedef struct slot {
    char *err; /* NULL = forwarded to the server; else "-...\r\n", owned */
} slot_t;

typedef struct conn {
    int cfd, sfd;
    buf_t c_in, c_out; /* from and to the client */
    buf_t s_in, s_out; /* from and to the server */
    slot_t *slots;
    size_t head, n, cap; /* queue slots[head..n) */
    bool dead;
} conn_t;

struct rw_itest_redis_proxy {
    char host[256];
    int upstream_port;
    int lfd;
    int port;
    int wake[2];
    pthread_t thread;
    bool started;
    pthread_mutex_t mu;
    /* under mu */
    bool stop;
    char *error; /* "-...\r\n" while failing, else NULL */
    long long faulted, forwarded;
    /* thread only */
    conn_t **conns;
    size_t n_conns;
};

/* ---- buffers ---- */

static bool buf_add(buf_t *b, const char *d, size_t n)
{
    if (n == 0)
        return true;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        char *nd;
        while (cap < b->len + n)
            cap *= 2;
        nd = realloc(b->d, cap);
        if (!nd)
            return false;
        b->d = nd;
        b->cap = cap;
    }
    memcpy(b->d + b->len, d, n);
    b->len += n;
    return true;
}

static void buf_drop(buf_t *b, size_t n)
{
    /* nothing read yet: the buffer may not exist */
    if (n == 0)
        return;
    memmove(b->d, b->d + n, b->len - n);
    b->len -= n;
}

/* ---- RESP framing ---- */

/* Offset just past the CRLF ending the line at b[0..len), 0 if none. */
static size_t line_end(const char *b, size_t len)
{
    for (size_t i = 1; i + 1 < len; i++)
        if (b[i] == '\r' && b[i + 1] == '\n')
            return i + 2;
    return 0;
}

static bool line_int(const char *b, size_t end, long long *v)
{
    char tmp[32], *stop = NULL;
    size_t n = end - 3; /* type byte and CRLF */

    if (n == 0 || n >= sizeof(tmp))
        return false;
    memcpy(tmp, b + 1, n);
    tmp[n] = '\0';
    *v = strtoll(tmp, &stop, 10);
    return *stop == '\0';
}

/*
 * Length of the one complete RESP value (RESP2 or RESP3) at the start of
 * b[0..len): > 0 when complete, 0 when more bytes are needed, -1 when it
 * is not RESP.
 */
static long value_len(const char *b, size_t len, int depth)
{
    size_t end, off;
    long long n, items;

    if (len == 0)
        return 0;
    if (depth > MAX_DEPTH)
        return -1;
    end = line_end(b, len);
    if (!end)
        return 0;
    switch (b[0]) {
    case '+':
    case '-':
    case ':':
    case '_':
    case '#':
    case ',':
    case '(':
        return (long)end;
    case '$':
    case '=':
    case '!':
        if (!line_int(b, end, &n))
            return -1;
        if (n < 0)
            return (long)end;
        if (len < end + (size_t)n + 2)
            return 0;
        return (long)(end + (size_t)n + 2);
    case '*':
    case '~':
    case '>':
    case '%':
    case '|':
        if (!line_int(b, end, &n))
            return -1;
        if (n < 0)
            return (long)end;
        items = b[0] == '%' || b[0] == '|' ? 2 * n : n;
        /* an attribute annotates the value that follows it */
        if (b[0] == '|')
            items++;
        off = end;
        for (long long i = 0; i < items; i++) {
            long m = value_len(b + off, len - off, depth + 1);
            if (m <= 0)
                return m;
            off += (size_t)m;
        }
        return (long)off;
    default:
        return -1;
    }
}

/*
 * Length of one complete command: a RESP array, or an inline command up
 * to LF (what redis-cli and telnet send). 0 = incomplete, -1 = not RESP.
 */
static long command_len(const char *b, size_t len)
{
    if (len == 0)
        return 0;
    if (b[0] == '*')
        return value_len(b, len, 0);
    for (size_t i = 0; i < len; i++)
        if (b[i] == '\n')
            return (long)(i + 1);
    return 0;
}

/* ---- connections ---- */

static void set_nonblock(int fd)
{
    int one = 1;

    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    /* commands and replies are small: do not let Nagle delay them */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static int connect_upstream(const rw_itest_redis_proxy_t *p)
{
    struct addrinfo hints, *res = NULL;
    char port_s[16];
    int fd = -1;

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    snprintf(port_s, sizeof(port_s), "%d", p->upstream_port);
    if (getaddrinfo(p->host, port_s, &hints, &res) != 0)
        return -1;
    for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
        if (fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    if (fd >= 0)
        set_nonblock(fd);
    return fd;
}

static void conn_free(conn_t *c)
{
    if (c->cfd >= 0)
        close(c->cfd);
    if (c->sfd >= 0)
        close(c->sfd);
    for (size_t i = c->head; i < c->n; i++)
        free(c->slots[i].err);
    free(c->slots);
    free(c->c_in.d);
    free(c->c_out.d);
    free(c->s_in.d);
    free(c->s_out.d);
    free(c);
}

static bool slot_push(conn_t *c, char *err)
{
    if (c->head > 0 && c->head == c->n)
        c->head = c->n = 0;
    if (c->n == c->cap) {
        size_t cap = c->cap ? 2 * c->cap : 64;
        slot_t *ns;
        if (c->head > 0) {
            /* reuse the consumed front before growing */
            memmove(c->slots, c->slots + c->head,
                    (c->n - c->head) * sizeof(*c->slots));
            c->n -= c->head;
            c->head = 0;
            return slot_push(c, err);
        }
        ns = realloc(c->slots, cap * sizeof(*ns));
        if (!ns)
            return false;
        c->slots = ns;
        c->cap = cap;
    }
    c->slots[c->n++].err = err;
    return true;
}

/* Error answers now at the head of the queue go out at once. */
static bool drain_errors(conn_t *c)
{
    while (c->head < c->n && c->slots[c->head].err) {
        char *e = c->slots[c->head].err;
        bool ok = buf_add(&c->c_out, e, strlen(e));
        free(e);
        c->slots[c->head++].err = NULL;
        if (!ok)
            return false;
    }
    return true;
}

/* Complete commands in c_in: forward each, or queue the error for it. */
static void client_commands(rw_itest_redis_proxy_t *p, conn_t *c)
{
    size_t off = 0;
    long long faulted = 0, forwarded = 0;
    char *error = NULL;

    pthread_mutex_lock(&p->mu);
    if (p->error)
        error = strdup(p->error);
    pthread_mutex_unlock(&p->mu);
    for (;;) {
        long n = command_len(c->c_in.d + off, c->c_in.len - off);
        if (n < 0) {
            c->dead = true;
            break;
        }
        if (n == 0)
            break;
        if (error) {
            /* behind replies still owed: queue; else answer now */
            char *e = c->head < c->n ? strdup(error) : NULL;
            bool ok = c->head < c->n ? e && slot_push(c, e)
                                     : buf_add(&c->c_out, error, strlen(error));
            if (!ok) {
                free(e);
                c->dead = true;
                break;
            }
            faulted++;
        } else {
            if (!buf_add(&c->s_out, c->c_in.d + off, (size_t)n) ||
                !slot_push(c, NULL)) {
                c->dead = true;
                break;
            }
            forwarded++;
        }
        off += (size_t)n;
    }
    buf_drop(&c->c_in, off);
    free(error);
    pthread_mutex_lock(&p->mu);
    p->faulted += faulted;
    p->forwarded += forwarded;
    pthread_mutex_unlock(&p->mu);
}

/* Complete replies in s_in go to the client, each into its place. */
static void server_replies(conn_t *c)
{
    size_t off = 0;

    for (;;) {
        long n = value_len(c->s_in.d + off, c->s_in.len - off, 0);
        if (n < 0) {
            c->dead = true;
            break;
        }
        if (n == 0)
            break;
        if (!buf_add(&c->c_out, c->s_in.d + off, (size_t)n)) {
            c->dead = true;
            break;
        }
        /* a RESP3 push answers no command */
        if (c->s_in.d[off] != '>' && c->head < c->n)
            c->head++;
        if (!drain_errors(c)) {
            c->dead = true;
            break;
        }
        off += (size_t)n;
    }
    buf_drop(&c->s_in, off);
}

/* Read what fd has into b; false on EOF or error. */
static bool read_into(int fd, buf_t *b)
{
    char tmp[READ_CHUNK];

    for (;;) {
        ssize_t r = recv(fd, tmp, sizeof(tmp), 0);
        if (r > 0) {
            if (!buf_add(b, tmp, (size_t)r))
                return false;
            continue;
        }
        if (r == 0)
            return false;
        return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
    }
}

/* Write what b holds to fd as far as it goes; false on error. */
static bool write_from(int fd, buf_t *b)
{
    while (b->len > 0) {
        ssize_t w = send(fd, b->d, b->len, MSG_NOSIGNAL);
        if (w > 0) {
            buf_drop(b, (size_t)w);
            continue;
        }
        return w < 0 &&
               (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR);
    }
    return true;
}

static void accept_one(rw_itest_redis_proxy_t *p)
{
    int cfd = accept(p->lfd, NULL, NULL);
    conn_t *c, **nc;

    if (cfd < 0)
        return;
    c = calloc(1, sizeof(*c));
    nc = realloc(p->conns, (p->n_conns + 1) * sizeof(*nc));
    if (!c || !nc) {
        free(c);
        if (nc)
            p->conns = nc;
        close(cfd);
        return;
    }
    p->conns = nc;
    c->cfd = cfd;
    set_nonblock(cfd);
    c->sfd = connect_upstream(p);
    /* no server: the client sees a dropped connection, as with Redis down */
    if (c->sfd < 0)
        c->dead = true;
    p->conns[p->n_conns++] = c;
}

static void *proxy_main(void *arg)
{
    rw_itest_redis_proxy_t *p = arg;
    struct pollfd *pfd = NULL;
    size_t cap = 0;

    for (;;) {
        size_t n = 2, k = 0;
        bool stop;

        pthread_mutex_lock(&p->mu);
        stop = p->stop;
        pthread_mutex_unlock(&p->mu);
        if (stop)
            break;
        /* forget dead connections before polling */
        for (size_t i = 0; i < p->n_conns;) {
            if (p->conns[i]->dead) {
                conn_free(p->conns[i]);
                p->conns[i] = p->conns[--p->n_conns];
            } else {
                i++;
            }
        }
        if (cap < 2 + 2 * p->n_conns) {
            struct pollfd *np;
            cap = 2 + 2 * p->n_conns + 16;
            np = realloc(pfd, cap * sizeof(*np));
            if (!np)
                break;
            pfd = np;
        }
        pfd[0] = (struct pollfd){.fd = p->wake[0], .events = POLLIN};
        pfd[1] = (struct pollfd){.fd = p->lfd, .events = POLLIN};
        for (size_t i = 0; i < p->n_conns; i++) {
            conn_t *c = p->conns[i];
            pfd[n++] = (struct pollfd){
                .fd = c->cfd,
                .events = (short)(POLLIN | (c->c_out.len ? POLLOUT : 0))};
            pfd[n++] = (struct pollfd){
                .fd = c->sfd,
                .events = (short)(POLLIN | (c->s_out.len ? POLLOUT : 0))};
        }
        if (poll(pfd, n, 1000) < 0 && errno != EINTR)
            break;
        if (pfd[0].revents & POLLIN) {
            char drain[64];
            while (read(p->wake[0], drain, sizeof(drain)) > 0)
                ;
        }
        for (size_t i = 0; i < p->n_conns; i++, k += 2) {
            conn_t *c = p->conns[i];
            short cr = pfd[2 + k].revents, sr = pfd[3 + k].revents;

            if ((cr & (POLLIN | POLLHUP | POLLERR)) &&
                !read_into(c->cfd, &c->c_in))
                c->dead = true;
            if ((sr & (POLLIN | POLLHUP | POLLERR)) &&
                !read_into(c->sfd, &c->s_in))
                c->dead = true;
            if (c->dead)
                continue;
            client_commands(p, c);
            server_replies(c);
            if (!write_from(c->sfd, &c->s_out) ||
                !write_from(c->cfd, &c->c_out))
                c->dead = true;
        }
        /* after the loop: accept_one may move the conns array */
        if (pfd[1].revents & POLLIN)
            accept_one(p);
    }
    free(pfd);
    return NULL;
}

/* ---- API ---- */

rw_itest_redis_proxy_t *rw_itest_redis_proxy_new(const char *host, int port)
{
    rw_itest_redis_proxy_t *p = calloc(1, sizeof(*p));
    struct sockaddr_in sa;
    socklen_t sl = sizeof(sa);
    int one = 1;

    assert_non_null(p);
    p->lfd = p->wake[0] = p->wake[1] = -1;
    snprintf(p->host, sizeof(p->host), "%s", host);
    p->upstream_port = port;
    pthread_mutex_init(&p->mu, NULL);
    if (pipe(p->wake) != 0)
        fail_msg("pipe: %s", strerror(errno));
    fcntl(p->wake[0], F_SETFL, O_NONBLOCK);
    p->lfd = socket(AF_INET, SOCK_STREAM, 0);
    if (p->lfd < 0)
        fail_msg("socket: %s", strerror(errno));
    setsockopt(p->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = 0;
    if (bind(p->lfd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
        listen(p->lfd, 128) != 0 ||
        getsockname(p->lfd, (struct sockaddr *)&sa, &sl) != 0)
        fail_msg("redis proxy listen: %s", strerror(errno));
    fcntl(p->lfd, F_SETFL, fcntl(p->lfd, F_GETFL) | O_NONBLOCK);
    p->port = ntohs(sa.sin_port);
    if (pthread_create(&p->thread, NULL, proxy_main, p) != 0)
        fail_msg("redis proxy thread: %s", strerror(errno));
    p->started = true;
    return p;
}

int rw_itest_redis_proxy_port(const rw_itest_redis_proxy_t *p)
{
    return p->port;
}

void rw_itest_redis_proxy_fail(rw_itest_redis_proxy_t *p, const char *error)
{
    char *e = NULL;

    if (error) {
        size_t len = strlen(error) + 4;
        if (strpbrk(error, "\r\n"))
            fail_msg("a RESP error reply is one line: %s", error);
        e = malloc(len);
        assert_non_null(e);
        snprintf(e, len, "-%s\r\n", error);
    }
    pthread_mutex_lock(&p->mu);
    free(p->error);
    p->error = e;
    pthread_mutex_unlock(&p->mu);
}

long long rw_itest_redis_proxy_faulted(rw_itest_redis_proxy_t *p)
{
    long long n;

    pthread_mutex_lock(&p->mu);
    n = p->faulted;
    pthread_mutex_unlock(&p->mu);
    return n;
}

long long rw_itest_redis_proxy_forwarded(rw_itest_redis_proxy_t *p)
{
    long long n;

    pthread_mutex_lock(&p->mu);
    n = p->forwarded;
    pthread_mutex_unlock(&p->mu);
    return n;
}

void rw_itest_redis_proxy_destroy(rw_itest_redis_proxy_t *p)
{
    if (!p)
        return;
    if (p->started) {
        pthread_mutex_lock(&p->mu);
        p->stop = true;
        pthread_mutex_unlock(&p->mu);
        if (write(p->wake[1], "x", 1) < 0) {
            /* the loop also wakes up within a second on its own */
        }
        pthread_join(p->thread, NULL);
    }
    for (size_t i = 0; i < p->n_conns; i++)
        conn_free(p->conns[i]);
    free(p->conns);
    if (p->lfd >= 0)
        close(p->lfd);
    if (p->wake[0] >= 0)
        close(p->wake[0]);
    if (p->wake[1] >= 0)
        close(p->wake[1]);
    free(p->error);
    pthread_mutex_destroy(&p->mu);
    free(p);
}
