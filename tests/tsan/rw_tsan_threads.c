/*
 * rw_tsan_threads: C11 threads (threads.h) over POSIX threads, linked into
 * every binary of the ThreadSanitizer tree only (RW_TSAN).
 *
 * Debian's librdkafka uses glibc's C11 threads. glibc implements them by
 * calling its pthread internals directly, past the pthread interceptors
 * ThreadSanitizer relies on: a thread made by thrd_create is unknown to it
 * (the first malloc there crashes) and mtx_lock/cnd_wait order nothing in
 * its eyes (every librdkafka queue would be reported as a race). These
 * definitions in the executable take precedence over glibc's for every
 * shared library, and go through the intercepted pthread calls, so TSan
 * sees librdkafka's threads and locks as what they are.
 *
 * Only what librdkafka imports is here (nm -D --undefined-only); it relies
 * on glibc laying mtx_t, cnd_t and once_flag out as the pthread types,
 * which glibc itself does, and which the static asserts check.
 *
 * A lock or condition variable is initialized before any thread uses it;
 * librdkafka hands a new object to its other threads (already running)
 * through its own atomics, which TSan cannot see, so a first lock on
 * another thread looked like a race with the initialization. Each object's
 * init releases and each later use acquires on the object's own address:
 * the order the program relies on, per object, and nothing more (it orders
 * no access of rollwave's own).
 */
#include <errno.h>
#include <pthread.h>
#include <sanitizer/tsan_interface.h>
#include <stdint.h>
#include <stdlib.h>
#include <threads.h>

_Static_assert(sizeof(mtx_t) == sizeof(pthread_mutex_t), "mtx_t layout");
_Static_assert(sizeof(cnd_t) == sizeof(pthread_cond_t), "cnd_t layout");
_Static_assert(sizeof(once_flag) == sizeof(pthread_once_t), "once_flag");
_Static_assert(sizeof(thrd_t) == sizeof(pthread_t), "thrd_t layout");

/* The C11 result for a pthread error number. */
static int result_of(int rc)
{
    switch (rc) {
    case 0:
        return thrd_success;
    case ENOMEM:
        return thrd_nomem;
    case EBUSY:
        return thrd_busy;
    case ETIMEDOUT:
        return thrd_timedout;
    default:
        return thrd_error;
    }
}

typedef struct start {
    thrd_start_t func;
    void *arg;
} start_t;

/* A C11 thread returns int; a pthread returns void *. */
static void *trampoline(void *p)
{
    start_t st = *(start_t *)p;

    free(p);
    return (void *)(intptr_t)st.func(st.arg);
}

int thrd_create(thrd_t *thr, thrd_start_t func, void *arg)
{
    start_t *st = malloc(sizeof(*st));
    pthread_t t;
    int rc;

    if (!st)
        return thrd_nomem;
    st->func = func;
    st->arg = arg;
    rc = pthread_create(&t, NULL, trampoline, st);
    if (rc != 0) {
        free(st);
        return result_of(rc);
    }
    *thr = (thrd_t)t;
    return thrd_success;
}

int thrd_join(thrd_t thr, int *res)
{
    void *v = NULL;
    int rc = pthread_join((pthread_t)thr, &v);

    if (rc == 0 && res)
        *res = (int)(intptr_t)v;
    return result_of(rc);
}

int mtx_init(mtx_t *mtx, int type)
{
    pthread_mutexattr_t attr;
    int rc;

    rc = pthread_mutexattr_init(&attr);
    if (rc != 0)
        return result_of(rc);
    if (type & mtx_recursive)
        rc = pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_RECURSIVE);
    if (rc == 0)
        rc = pthread_mutex_init((pthread_mutex_t *)mtx, &attr);
    pthread_mutexattr_destroy(&attr);
    if (rc == 0)
        __tsan_release(mtx);
    return result_of(rc);
}

int mtx_lock(mtx_t *mtx)
{
    __tsan_acquire(mtx);
    return result_of(pthread_mutex_lock((pthread_mutex_t *)mtx));
}

int mtx_unlock(mtx_t *mtx)
{
    return result_of(pthread_mutex_unlock((pthread_mutex_t *)mtx));
}

void mtx_destroy(mtx_t *mtx)
{
    pthread_mutex_destroy((pthread_mutex_t *)mtx);
}

int cnd_init(cnd_t *cnd)
{
    int rc = pthread_cond_init((pthread_cond_t *)cnd, NULL);

    if (rc == 0)
        __tsan_release(cnd);
    return result_of(rc);
}

int cnd_signal(cnd_t *cnd)
{
    __tsan_acquire(cnd);
    return result_of(pthread_cond_signal((pthread_cond_t *)cnd));
}

int cnd_broadcast(cnd_t *cnd)
{
    __tsan_acquire(cnd);
    return result_of(pthread_cond_broadcast((pthread_cond_t *)cnd));
}

int cnd_wait(cnd_t *cnd, mtx_t *mtx)
{
    __tsan_acquire(cnd);
    return result_of(
        pthread_cond_wait((pthread_cond_t *)cnd, (pthread_mutex_t *)mtx));
}

/* ts is absolute, CLOCK_REALTIME (TIME_UTC), as pthread's default. */
int cnd_timedwait(cnd_t *restrict cnd, mtx_t *restrict mtx,
                  const struct timespec *restrict ts)
{
    __tsan_acquire(cnd);
    return result_of(pthread_cond_timedwait((pthread_cond_t *)cnd,
                                            (pthread_mutex_t *)mtx, ts));
}

void cnd_destroy(cnd_t *cnd)
{
    pthread_cond_destroy((pthread_cond_t *)cnd);
}

void call_once(once_flag *flag, void (*func)(void))
{
    pthread_once((pthread_once_t *)flag, func);
}
