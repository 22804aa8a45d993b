/* fan_out: run one task per thread on a persistent pool of worker threads, the caller's thread among them.

   Included by each extension, which gets its own pool. Workers start on first need; after a task a worker spins
   for FAN_OUT_SPIN_NS before it sleeps on a condition variable, so calls that follow each other closely (a
   mixture's experts, a layer's q, k and v) find it awake; the caller, done with its own task, spins as long for
   the workers'. One fan_out runs at a time (callers from several threads queue); a child process after fork()
   starts with no workers. */
#ifndef FAN_OUT_H
#define FAN_OUT_H

#include <immintrin.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define FAN_OUT_MAX_THREADS 64
#ifndef FAN_OUT_SPIN_NS
#define FAN_OUT_SPIN_NS 100000
#endif

typedef void *(*fan_out_task)(void *);

static struct {
    pthread_mutex_t call;  /* held for a whole fan_out */
    pthread_mutex_t lock;  /* guards the fields below, but generation is also read while spinning */
    pthread_cond_t wake, done;
    int workers;           /* worker i (1..workers) runs task i */
    int active, pending;   /* tasks 1..active-1 go to workers; how many are still running */
    unsigned long generation;
    unsigned long seen[FAN_OUT_MAX_THREADS];  /* the last generation worker i took */
    fan_out_task fn;
    char *args;
    size_t arg_size;
} fan_out_pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER,
                  PTHREAD_COND_INITIALIZER};

static int64_t fan_out_now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static void *fan_out_worker(void *arg) {
    const int index = (int)(intptr_t)arg;
    pthread_mutex_lock(&fan_out_pool.lock);
    for (;;) {
        if (fan_out_pool.generation == fan_out_pool.seen[index]) {  /* spin a while, then sleep */
            pthread_mutex_unlock(&fan_out_pool.lock);
            const int64_t until = fan_out_now_ns() + FAN_OUT_SPIN_NS;
            while (__atomic_load_n(&fan_out_pool.generation, __ATOMIC_ACQUIRE) == fan_out_pool.seen[index]
                   && fan_out_now_ns() < until)
                _mm_pause();
            pthread_mutex_lock(&fan_out_pool.lock);
            while (fan_out_pool.generation == fan_out_pool.seen[index])
                pthread_cond_wait(&fan_out_pool.wake, &fan_out_pool.lock);
        }
        fan_out_pool.seen[index] = fan_out_pool.generation;
        if (index >= fan_out_pool.active) continue;
        const fan_out_task fn = fan_out_pool.fn;
        void *task = fan_out_pool.args + index * fan_out_pool.arg_size;
        pthread_mutex_unlock(&fan_out_pool.lock);
        fn(task);
        pthread_mutex_lock(&fan_out_pool.lock);
        if (--fan_out_pool.pending == 0) pthread_cond_signal(&fan_out_pool.done);
    }
    return NULL;
}

static void fan_out_forget_workers(void) {  /* in a child after fork(): the parent's workers are not there */
    pthread_mutex_init(&fan_out_pool.call, NULL);
    pthread_mutex_init(&fan_out_pool.lock, NULL);
    pthread_cond_init(&fan_out_pool.wake, NULL);
    pthread_cond_init(&fan_out_pool.done, NULL);
    fan_out_pool.workers = fan_out_pool.active = fan_out_pool.pending = 0;
}

static void fan_out_register_fork(void) { pthread_atfork(NULL, NULL, fan_out_forget_workers); }

/* The threads to split `units` pieces of work over: nthreads, at most one per unit and FAN_OUT_MAX_THREADS, at
   least 1. */
static int fan_out_threads(int64_t units, int nthreads) {
    if (nthreads > FAN_OUT_MAX_THREADS) nthreads = FAN_OUT_MAX_THREADS;
    if (nthreads > units) nthreads = (int)units;
    return nthreads < 1 ? 1 : nthreads;
}

/* Runs fn(args + t arg_size) for t < nthreads, task 0 on the calling thread, and returns when all are done; -1 if
   a worker could not be started (its task then ran on the calling thread), else 0. */
static int fan_out(fan_out_task fn, void *args, size_t arg_size, int nthreads) {
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, fan_out_register_fork);
    if (nthreads > FAN_OUT_MAX_THREADS) nthreads = FAN_OUT_MAX_THREADS;
    pthread_mutex_lock(&fan_out_pool.call);
    pthread_mutex_lock(&fan_out_pool.lock);
    while (fan_out_pool.workers < nthreads - 1) {
        const int index = fan_out_pool.workers + 1;
        pthread_t thread;
        fan_out_pool.seen[index] = fan_out_pool.generation;
        if (pthread_create(&thread, NULL, fan_out_worker, (void *)(intptr_t)index) != 0) break;
        pthread_detach(thread);
        fan_out_pool.workers = index;
    }
    const int helpers = fan_out_pool.workers < nthreads - 1 ? fan_out_pool.workers : nthreads - 1;
    fan_out_pool.fn = fn;
    fan_out_pool.args = (char *)args;
    fan_out_pool.arg_size = arg_size;
    fan_out_pool.active = helpers + 1;
    fan_out_pool.pending = helpers;
    fan_out_pool.generation++;
    if (helpers > 0) pthread_cond_broadcast(&fan_out_pool.wake);
    pthread_mutex_unlock(&fan_out_pool.lock);
    fn(args);
    for (int t = helpers + 1; t < nthreads; t++) fn((char *)args + t * arg_size);
    const int64_t until = fan_out_now_ns() + FAN_OUT_SPIN_NS;  /* the workers are about done: spin, then sleep */
    while (__atomic_load_n(&fan_out_pool.pending, __ATOMIC_ACQUIRE) > 0 && fan_out_now_ns() < until) _mm_pause();
    pthread_mutex_lock(&fan_out_pool.lock);
    while (fan_out_pool.pending > 0) pthread_cond_wait(&fan_out_pool.done, &fan_out_pool.lock);
    pthread_mutex_unlock(&fan_out_pool.lock);
    pthread_mutex_unlock(&fan_out_pool.call);
    return helpers + 1 < nthreads ? -1 : 0;
}

#endif
