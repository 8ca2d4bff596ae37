/* The compiled sampling step of an LSTM: one character for every row of a batch, every layer,
   in one call (charrnn/kernel.py builds, loads and calls it).

   Each layer's output h feeds one product with int8 weights AND int8 activations (h scaled
   by max|h| / 127 per batch row, offset by 128 to be unsigned, so the dot products are exact
   int32 sums, which compilers turn into VNNI's vpdpbusd where the CPU has it). The product's
   rows make both what reads h now (the next layer's gates, or the logits) and the layer's own
   recurrent term for the next step. Every batch row is computed on its own, so its numbers do
   not depend on the rows beside it (a served request gives the text it gives alone).

   Built with -ffp-contract=off and without -ffast-math: every float operation is IEEE's and
   the loops give the same bits vectorised or not, so the same inputs (the state, and the input
   table torch computes) give the same logits on any machine, with any number of threads.
   Plain C99, stdint.h, POSIX threads (a helper for small batches, threads per call for large
   ones) and the compilers' __atomic builtins. */

#include <pthread.h>
#include <stdint.h>

typedef struct {
    int layers, hidden, vocab;
    const float *table;             /* (vocab, 4 hidden): the first layer's input term */
    const int8_t *const *weights;   /* per layer: (rows, hidden) int8, rows = width + 4 hidden */
    const int32_t *const *row_sums; /* per layer: each row's sum of weights (the offset's share) */
    const float *const *scales;     /* per layer: each row's weight scale */
    const float *const *biases;     /* per layer: each row's bias (the recurrent rows: 0) */
    const int *widths;              /* per layer: the rows read now (4 hidden, or vocab) */
} Net;

/* A call's buffer (the caller's, one per call, so calls from several threads never share
   one): the batch's products, layer after layer, (batch, rows) floats each; then room for
   the quantised h (batch * hidden bytes, in whole floats) and each batch row's step. */
static long rows_of(const Net *n, int k) { return n->widths[k] + 4L * n->hidden; }

static float *layer_rows(const Net *n, float *products, int k, int batch) {
    for (int j = 0; j < k; j++) products += batch * rows_of(n, j);
    return products;
}

static uint8_t *quantised_room(const Net *n, float *buffer, int batch) {
    return (uint8_t *)layer_rows(n, buffer, n->layers, batch);
}

static float *steps_room(const Net *n, float *buffer, int batch) {
    return layer_rows(n, buffer, n->layers, batch) + (batch * (long)n->hidden + 3) / 4;
}

/* exp(x) as 2^n * p(r), r = x - n ln2 (Cephes' expf polynomial, ~1 ulp); no library call, so
   the loops around it vectorise. */
static inline float exp_(float x) {
    x = x < -87.3f ? -87.3f : (x > 88.3f ? 88.3f : x);
    float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f; /* round to nearest */
    float r = x - n * 0.693359375f + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    /* 2^n into the exponent bits; a NaN x (n NaN) adds nothing and stays NaN through p. */
    uint32_t bits, shift = (uint32_t)(int32_t)(n == n ? n : 0.0f) << 23;
    __builtin_memcpy(&bits, &p, 4);
    bits += shift;
    __builtin_memcpy(&p, &bits, 4);
    return p;
}

static inline float sigmoid_(float x) { return 1.0f / (1.0f + exp_(-x)); }
static inline float tanh_(float x) { return 2.0f / (1.0f + exp_(-2.0f * x)) - 1.0f; }

/* h (hidden floats) as unsigned bytes: round(h / step) + 128, step = max|h| / 127. Returns
   the step: NaN when h holds a NaN or an infinity, so that the products (and the logits) are
   NaN and the draw refuses them, as it refuses torch's. (restrict: the buffers do not
   overlap, so the loops vectorise.) */
static float quantise(const float *restrict h, uint8_t *restrict out, int hidden) {
    float top = 0.0f, poison = 0.0f;
    for (int j = 0; j < hidden; j++) {
        float a = h[j] < 0 ? -h[j] : h[j];
        top = a > top ? a : top;
        poison += h[j] * 0.0f; /* NaN from a NaN or an infinity, else 0 */
    }
    if (poison != 0.0f) {
        for (int j = 0; j < hidden; j++) out[j] = 128;
        return poison;
    }
    float step = top > 1e-30f ? top / 127.0f : 1.0f, inverse = 1.0f / step;
    for (int j = 0; j < hidden; j++) {
        float v = h[j] * inverse;
        int32_t q = (int32_t)(v + (v < 0 ? -0.5f : 0.5f)); /* in [-127, 127] */
        out[j] = (uint8_t)(q + 128);
    }
    return step;
}

/* What one thread of a product computes: weight rows [first, last) for every batch row. */
typedef struct {
    const Net *n;
    int k, batch;
    long first, last;
    const uint8_t *quantised;
    const float *steps;
    float *out;
} Rows;

static void *dot_rows(void *arg) {
    const Rows *job = arg;
    const Net *n = job->n;
    int hidden = n->hidden, k = job->k;
    long rows = rows_of(n, k);
    const int8_t *restrict w = n->weights[k];
    const int32_t *restrict sums = n->row_sums[k];
    const float *restrict scales = n->scales[k], *restrict bias = n->biases[k];
    for (long r = job->first; r < job->last; r++) {
        const int8_t *restrict row = w + r * hidden;
        for (int b = 0; b < job->batch; b++) { /* the weight row stays in cache across them */
            const uint8_t *restrict a = job->quantised + (long)b * hidden;
            int32_t acc = 0;
            for (int j = 0; j < hidden; j++) acc += (int32_t)a[j] * (int32_t)row[j];
            job->out[b * rows + r] =
                (float)(acc - 128 * sums[r]) * (job->steps[b] * scales[r]) + bias[r];
        }
    }
    return 0;
}

/* Batches this large share a product's rows among `threads` threads started for the call.
   Starting threads costs tens of microseconds: measured on 2 cores, a batch of 8 stepped
   slower on two threads (289 against 221 us), a batch of 32 faster (643 against 973). Smaller
   batches share the rows with the team below instead. Every number is computed the same way
   whichever thread computes it. */
#define BATCH_FOR_THREADS 16
#define MOST_THREADS 64

/* The team: one helper thread that stays alive between calls and takes the second half of a
   small batch's product, so each core's cache keeps its half of the weights from one
   character to the next (a 1x768 model's 2.4 MB of int8 rows exceed one core's L2 on some
   CPUs). The helper spins for a while after each job (a character's step is ~100 us away),
   then sleeps until the next; one call at a time uses it (the others run alone). */
#define SPINS 200000
#if defined(__x86_64__) || defined(__i386__)
#define RELAX() __builtin_ia32_pause() /* a spinning core's hint: less power, no lost cycles */
#elif defined(__aarch64__)
#define RELAX() __asm__ __volatile__("yield")
#else
#define RELAX() ((void)0)
#endif
static pthread_mutex_t team_lock = PTHREAD_MUTEX_INITIALIZER; /* held by the call using it */
static pthread_mutex_t team_sleep = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t team_wake = PTHREAD_COND_INITIALIZER;
static volatile int team_started, team_posted, team_finished; /* job counters */
static Rows team_job;

static void *team_helper(void *unused) {
    (void)unused;
    int seen = 0;
    for (;;) {
        for (long spin = 0; __atomic_load_n(&team_posted, __ATOMIC_ACQUIRE) == seen; spin++) {
            if (spin < SPINS) {
                RELAX();
                continue;
            }
            pthread_mutex_lock(&team_sleep);
            while (__atomic_load_n(&team_posted, __ATOMIC_ACQUIRE) == seen)
                pthread_cond_wait(&team_wake, &team_sleep);
            pthread_mutex_unlock(&team_sleep);
        }
        seen = __atomic_load_n(&team_posted, __ATOMIC_ACQUIRE);
        dot_rows(&team_job);
        __atomic_store_n(&team_finished, seen, __ATOMIC_RELEASE);
    }
    return 0;
}

/* A forked child has no helper (only the forking thread survives a fork): it starts its own,
   with fresh locks, when it first needs one. */
static void team_forget(void) {
    pthread_mutex_t unlocked = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t quiet = PTHREAD_COND_INITIALIZER;
    team_lock = unlocked;
    team_sleep = unlocked;
    team_wake = quiet;
    team_started = team_posted = team_finished = 0;
}

/* Rows [first, last) of `job` on this thread and the team's helper, half each; 0 if the team
   is busy or cannot start (the caller then computes them alone). */
static int team_product(const Rows *job) {
    static int fork_handled;
    if (pthread_mutex_trylock(&team_lock) != 0) return 0;
    if (!team_started) {
        if (!fork_handled) fork_handled = pthread_atfork(0, 0, team_forget) == 0;
        pthread_t helper;
        if (!fork_handled || pthread_create(&helper, 0, team_helper, 0) != 0) {
            pthread_mutex_unlock(&team_lock);
            return 0;
        }
        pthread_detach(helper);
        team_started = 1;
    }
    Rows mine = *job;
    mine.last = job->first + (job->last - job->first) / 2;
    team_job = *job;
    team_job.first = mine.last;
    pthread_mutex_lock(&team_sleep);
    int posted = team_posted + 1;
    __atomic_store_n(&team_posted, posted, __ATOMIC_RELEASE);
    pthread_cond_signal(&team_wake);
    pthread_mutex_unlock(&team_sleep);
    dot_rows(&mine);
    while (__atomic_load_n(&team_finished, __ATOMIC_ACQUIRE) != posted) RELAX();
    pthread_mutex_unlock(&team_lock);
    return 1;
}

/* out = W (quantised h) * scale + bias: every row of layer k's matrix, for each batch row of
   h (batch, hidden). `quantised`: batch * hidden bytes of room; `steps`: batch floats. */
static void product(const Net *n, int k, const float *h, int batch, float *out,
                    uint8_t *quantised, float *steps, int threads) {
    int hidden = n->hidden;
    long rows = rows_of(n, k);
    for (int b = 0; b < batch; b++)
        steps[b] = quantise(h + (long)b * hidden, quantised + (long)b * hidden, hidden);
    if (batch < BATCH_FOR_THREADS && threads >= 2) {
        Rows all = {n, k, batch, 0, rows, quantised, steps, out};
        if (team_product(&all)) return;
    }
    if (batch < BATCH_FOR_THREADS || threads < 2) threads = 1;
    if (threads > MOST_THREADS) threads = MOST_THREADS;
    Rows jobs[MOST_THREADS];
    pthread_t helpers[MOST_THREADS];
    int helped[MOST_THREADS], started = 0;
    for (int t = 0; t < threads; t++) {
        jobs[t] = (Rows){n, k, batch, rows * t / threads, rows * (t + 1) / threads, quantised,
                         steps, out};
        /* Shares 1.. go to helper threads; share 0, and any whose thread fails to start, run
           here. */
        helped[t] = t > 0 && pthread_create(&helpers[started], 0, dot_rows, &jobs[t]) == 0;
        started += helped[t];
    }
    for (int t = 0; t < threads; t++)
        if (!helped[t]) dot_rows(&jobs[t]);
    for (int i = 0; i < started; i++) pthread_join(helpers[i], 0);
}

/* How many products the helper thread has shared in this process (for the tests). */
int charrnn_team_jobs(void) { return __atomic_load_n(&team_finished, __ATOMIC_ACQUIRE); }

/* One layer's cell for one batch row: gates = input term + recurrent term, in i, f, g, o
   order; c_new = f c + i g, h_new = o tanh(c_new). */
static void cell(const float *restrict in, const float *restrict recurrent,
                 const float *restrict c, float *restrict h_new, float *restrict c_new,
                 int hidden) {
    for (int j = 0; j < hidden; j++) {
        float i = sigmoid_(in[j] + recurrent[j]);
        float f = sigmoid_(in[hidden + j] + recurrent[hidden + j]);
        float g = tanh_(in[2 * hidden + j] + recurrent[2 * hidden + j]);
        float o = sigmoid_(in[3 * hidden + j] + recurrent[3 * hidden + j]);
        c_new[j] = f * c[j] + i * g;
        h_new[j] = o * tanh_(c_new[j]);
    }
}

/* Every layer's products, its recurrent term for the next step among them, from a state's h
   (layers, batch, hidden). */
void charrnn_terms(const Net *n, const float *h, int batch, float *buffer, int threads) {
    uint8_t *quantised = quantised_room(n, buffer, batch);
    float *steps = steps_room(n, buffer, batch);
    for (int k = 0; k < n->layers; k++)
        product(n, k, h + (long)k * batch * n->hidden, batch, layer_rows(n, buffer, k, batch),
                quantised, steps, threads);
}

/* Read character ids[b] into batch row b of the state (h, c) (layers, batch, hidden), whose
   products are `terms` (read only): each layer's cell, then its product, into (h_new, c_new)
   and the buffer `products`. The logits: the last layer's first `vocab` rows of `products`. Returns 0, or -1
   (having written nothing) when an id is not a character of the vocabulary. */
int charrnn_step(const Net *n, const int64_t *ids, int batch, const float *c,
                 float *terms, float *h_new, float *c_new, float *products, int threads) {
    int hidden = n->hidden;
    uint8_t *quantised = quantised_room(n, products, batch);
    float *steps = steps_room(n, products, batch);
    for (int b = 0; b < batch; b++)
        if (ids[b] < 0 || ids[b] >= n->vocab) return -1;
    for (int k = 0; k < n->layers; k++) {
        long rows = rows_of(n, k), at = (long)k * batch * hidden;
        const float *recurrent = layer_rows(n, terms, k, batch) + n->widths[k];
        const float *below = k > 0 ? layer_rows(n, products, k - 1, batch) : 0;
        for (int b = 0; b < batch; b++) {
            const float *input = k == 0 ? n->table + ids[b] * 4 * hidden
                                        : below + b * rows_of(n, k - 1);
            long row = at + (long)b * hidden;
            cell(input, recurrent + b * rows, c + row, h_new + row, c_new + row, hidden);
        }
        product(n, k, h_new + at, batch, layer_rows(n, products, k, batch), quantised, steps,
                threads);
    }
    return 0;
}
