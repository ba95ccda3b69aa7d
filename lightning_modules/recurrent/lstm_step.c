/* The elementwise part of one LSTM time step, forward and backward, for float32 on x86-64 with AVX2
 * and FMA; the matmuls stay in torch. Built and loaded by lightning_modules/recurrent/native.py, which
 * says why this exists. The equations are those of cells.py (gate order i, f, g, o; peepholes: i and f
 * see s_{t-1}, o sees s_t); the Python loops in fused.py compute the same thing op by op.
 *
 * Layouts (row-major, contiguous): pre/acts/d_pre [B, 4H], states [B, H], peep/d_peep [3, H].
 * The g slot of the pre-activations arrives scaled by 2, as in fused.py: tanh(z) = 2 sigmoid(2z) - 1.
 */
#include <immintrin.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define INLINE static inline __attribute__((always_inline))

/* Threads. Built with -fopenmp, the library is linked to the libgomp torch already loaded (the same
 * soname), so its parallel regions run on torch's own thread team; the caller passes the team size
 * (torch.get_num_threads()), as a thread's OpenMP setting need not follow torch.set_num_threads. With one
 * thread, or under PAR_MIN elements of [B, H] (where a region's fork and join, a few us, would cost more
 * than the split saves), a step runs inline as a single loop. Splitting never changes a result: both
 * directions split the rows, which are independent, and the peephole grads (a sum over the rows) are then
 * formed in a pass split by columns, each column summed over the rows in the same order as one loop does. */
#define PAR_MIN 8192

static int last_team = 1;  /* threads of the last step's region (always 1 without OpenMP), for the tests */

/* 1 when this build can spread a step over threads (native.py reports it). */
int lstm_step_openmp(void) {
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

/* How many threads ran the last step (1 when it ran inline). */
int lstm_step_last_team(void) { return last_team; }

INLINE int use_threads(long threads, long B, long H) {
#ifdef _OPENMP
    return threads > 1 && B * H >= PAR_MIN;
#else
    (void)threads, (void)B, (void)H;
    return 0;
#endif
}

INLINE void note_team(void) {
#ifdef _OPENMP
    if (omp_get_thread_num() == 0) last_team = omp_get_num_threads();
#endif
}

/* e^x, Cephes' single-precision polynomial (max error ~2 ulp). Inputs are clamped to the float range
 * with x as the second operand of min/max, which is the one those return for a NaN: NaN propagates. */
INLINE __m256 exp8(__m256 x) {
    const __m256 lim = _mm256_set1_ps(88.3762626647949f);
    x = _mm256_max_ps(_mm256_sub_ps(_mm256_setzero_ps(), lim), _mm256_min_ps(lim, x));
    __m256 fx = _mm256_floor_ps(_mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(0.5f)));
    x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);  /* x - fx ln 2, in two parts */
    x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), x);
    __m256 y = _mm256_set1_ps(1.9875691500e-4f);
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507e-3f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073e-3f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894e-2f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459e-1f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201e-1f));
    y = _mm256_fmadd_ps(y, _mm256_mul_ps(x, x), _mm256_add_ps(x, _mm256_set1_ps(1.0f)));
    __m256i n = _mm256_add_epi32(_mm256_cvttps_epi32(fx), _mm256_set1_epi32(127));
    return _mm256_mul_ps(y, _mm256_castsi256_ps(_mm256_slli_epi32(n, 23)));  /* y 2^fx */
}

INLINE __m256 sigmoid8(__m256 x) {
    const __m256 one = _mm256_set1_ps(1.0f);
    return _mm256_div_ps(one, _mm256_add_ps(one, exp8(_mm256_sub_ps(_mm256_setzero_ps(), x))));
}

INLINE __m256 two_sigmoid_minus_one8(__m256 z) {  /* tanh(z / 2) */
    return _mm256_fmsub_ps(_mm256_set1_ps(2.0f), sigmoid8(z), _mm256_set1_ps(1.0f));
}

/* Loads and stores of 8 floats, or of the first few under a lane mask at the tail of a row
 * (`masked` is a constant at every call, so each loop body is compiled twice, without branches). */
INLINE __m256 ld(const float *p, __m256i m, int masked) {
    return masked ? _mm256_maskload_ps(p, m) : _mm256_loadu_ps(p);
}
INLINE void st(float *p, __m256 v, __m256i m, int masked) {
    if (masked) _mm256_maskstore_ps(p, m, v); else _mm256_storeu_ps(p, v);
}

INLINE __m256i tail_mask(long H) {  /* lanes 0 .. H % 8 - 1 set */
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(H % 8)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

INLINE void fwd8(const float *pre, const float *rec, float *act, const float *sp, float *s, float *c, float *y,
                 const float *peep, long H, long j, __m256i m, int masked) {
    __m256 s_prev = ld(sp + j, m, masked);
    __m256 ip = ld(pre + j, m, masked), fp = ld(pre + H + j, m, masked), gp = ld(pre + 2 * H + j, m, masked);
    __m256 op = ld(pre + 3 * H + j, m, masked);
    if (rec) {  /* the recurrent term W y_{t-1}, when the matmul did not add it in place */
        ip = _mm256_add_ps(ip, ld(rec + j, m, masked));
        fp = _mm256_add_ps(fp, ld(rec + H + j, m, masked));
        gp = _mm256_add_ps(gp, ld(rec + 2 * H + j, m, masked));
        op = _mm256_add_ps(op, ld(rec + 3 * H + j, m, masked));
    }
    if (peep) {
        ip = _mm256_fmadd_ps(s_prev, ld(peep + j, m, masked), ip);
        fp = _mm256_fmadd_ps(s_prev, ld(peep + H + j, m, masked), fp);
    }
    __m256 i = sigmoid8(ip), f = sigmoid8(fp), g = two_sigmoid_minus_one8(gp);
    __m256 sv = _mm256_fmadd_ps(g, i, _mm256_mul_ps(s_prev, f));  /* s_t = s_{t-1} f + g i */
    if (peep) op = _mm256_fmadd_ps(sv, ld(peep + 2 * H + j, m, masked), op);
    __m256 o = sigmoid8(op);
    __m256 cv = two_sigmoid_minus_one8(_mm256_add_ps(sv, sv));  /* tanh(s_t) */
    st(act + j, i, m, masked); st(act + H + j, f, m, masked); st(act + 2 * H + j, g, m, masked);
    st(act + 3 * H + j, o, m, masked);
    st(s + j, sv, m, masked); st(c + j, cv, m, masked); st(y + j, _mm256_mul_ps(cv, o), m, masked);
}

/* Forward: pre + rec [B, 4H] the pre-activations (U x_t + b, W y_{t-1}; g scaled by 2; rec may be NULL when
 * pre holds both) -> act [B, 4H] (i, f, g, o after their nonlinearity; may be pre itself), s = s_t,
 * c = tanh(s_t), y = y_t. peep may be NULL. */
void lstm_step_forward(const float *pre, const float *rec, float *act, const float *s_prev, float *s, float *c,
                       float *y, const float *peep, long B, long H, long threads) {
    const long full = H - H % 8;
    const __m256i m = tail_mask(H);
    const int par = use_threads(threads, B, H);
    (void)par;  /* unused in a build without OpenMP */
#pragma omp parallel if (par) num_threads(par ? threads : 1)
    {
        note_team();
#pragma omp for schedule(static)
        for (long b = 0; b < B; ++b) {
            const long r4 = b * 4 * H, r = b * H;
            const float *rec_b = rec ? rec + r4 : 0;
            for (long j = 0; j < full; j += 8)
                fwd8(pre + r4, rec_b, act + r4, s_prev + r, s + r, c + r, y + r, peep, H, j, m, 0);
            if (full < H) fwd8(pre + r4, rec_b, act + r4, s_prev + r, s + r, c + r, y + r, peep, H, full, m, 1);
        }
    }
}

INLINE void bwd8(const float *act, const float *sp, const float *s, const float *c, const float *dy,
                 const float *dy2, float *ds, float *dp, const float *peep, float *d_peep, long H, long j, __m256i m,
                 int masked) {
    const __m256 one = _mm256_set1_ps(1.0f);
    __m256 i = ld(act + j, m, masked), f = ld(act + H + j, m, masked), g = ld(act + 2 * H + j, m, masked);
    __m256 o = ld(act + 3 * H + j, m, masked), cv = ld(c + j, m, masked), dyv = ld(dy + j, m, masked);
    if (dy2) dyv = _mm256_add_ps(dyv, ld(dy2 + j, m, masked));
    __m256 s_prev = ld(sp + j, m, masked);
    __m256 l_o = _mm256_mul_ps(_mm256_mul_ps(cv, o), _mm256_sub_ps(one, o));  /* tanh(s_t) sigma'(o) */
    __m256 k = _mm256_mul_ps(o, _mm256_fnmadd_ps(cv, cv, one));               /* o (1 - tanh^2 s_t) */
    if (peep) k = _mm256_fmadd_ps(l_o, ld(peep + 2 * H + j, m, masked), k);  /* o_pre also sees s_t */
    __m256 dsv = _mm256_fmadd_ps(dyv, k, ld(ds + j, m, masked));             /* ds_t */
    __m256 l_i = _mm256_mul_ps(_mm256_mul_ps(i, _mm256_sub_ps(one, i)), g);
    __m256 l_f = _mm256_mul_ps(_mm256_mul_ps(f, _mm256_sub_ps(one, f)), s_prev);
    __m256 l_g = _mm256_mul_ps(i, _mm256_fnmadd_ps(g, g, one));
    __m256 d_i = _mm256_mul_ps(dsv, l_i), d_f = _mm256_mul_ps(dsv, l_f), d_o = _mm256_mul_ps(dyv, l_o);
    st(dp + j, d_i, m, masked); st(dp + H + j, d_f, m, masked);
    st(dp + 2 * H + j, _mm256_mul_ps(dsv, l_g), m, masked); st(dp + 3 * H + j, d_o, m, masked);
    __m256 carry = f;  /* d s_t / d s_{t-1} */
    if (peep) {
        carry = _mm256_fmadd_ps(l_i, ld(peep + j, m, masked), carry);
        carry = _mm256_fmadd_ps(l_f, ld(peep + H + j, m, masked), carry);
    }
    st(ds + j, _mm256_mul_ps(dsv, carry), m, masked);
    if (d_peep) {  /* the inline loop only; the threaded one sums them in peep8 */
        __m256 sv = ld(s + j, m, masked);
        st(d_peep + j, _mm256_fmadd_ps(d_i, s_prev, ld(d_peep + j, m, masked)), m, masked);
        st(d_peep + H + j, _mm256_fmadd_ps(d_f, s_prev, ld(d_peep + H + j, m, masked)), m, masked);
        st(d_peep + 2 * H + j, _mm256_fmadd_ps(d_o, sv, ld(d_peep + 2 * H + j, m, masked)), m, masked);
    }
}

/* d_peep [3, H] += the peephole grads of columns j .. j+7 of a step, summed over the rows in order:
 * p^i and p^f multiply s_{t-1}, p^o multiplies s_t; d_pre [B, 4H] holds the step's grads. */
INLINE void peep8(const float *d_pre, const float *s_prev, const float *s, float *d_peep, long B, long H, long j,
                  __m256i m, int masked) {
    __m256 gi = ld(d_peep + j, m, masked), gf = ld(d_peep + H + j, m, masked), go = ld(d_peep + 2 * H + j, m, masked);
    for (long b = 0; b < B; ++b) {
        const float *dp = d_pre + b * 4 * H;
        const __m256 sp = ld(s_prev + b * H + j, m, masked);
        gi = _mm256_fmadd_ps(ld(dp + j, m, masked), sp, gi);
        gf = _mm256_fmadd_ps(ld(dp + H + j, m, masked), sp, gf);
        go = _mm256_fmadd_ps(ld(dp + 3 * H + j, m, masked), ld(s + b * H + j, m, masked), go);
    }
    st(d_peep + j, gi, m, masked); st(d_peep + H + j, gf, m, masked); st(d_peep + 2 * H + j, go, m, masked);
}

/* Backward: act [B, 4H], s_prev, s, c = tanh(s_t) [B, H]; dy + dy2 [B, H] the grad reaching y_t (from the next
 * step and from above; dy2 may be NULL); ds [B, H] holds
 * ds_{t+1} F_{t+1} on entry and ds_t F_t on return; d_pre [B, 4H] gets the grads wrt the (unscaled)
 * pre-activations; d_peep [3, H] (may be NULL) accumulates the peephole grads. */
void lstm_step_backward(const float *act, const float *s_prev, const float *s, const float *c, const float *dy,
                        const float *dy2, float *ds, float *d_pre, const float *peep, float *d_peep, long B, long H,
                        long threads) {
    const long full = H - H % 8;
    const __m256i m = tail_mask(H);
    const int par = use_threads(threads, B, H);
    /* Inline, the peephole grads are summed as the rows go; threaded, after them (peep8). */
    float *d_peep_rows = par ? 0 : d_peep;
#pragma omp parallel if (par) num_threads(par ? threads : 1)
    {
        note_team();
#pragma omp for schedule(static)
        for (long b = 0; b < B; ++b) {
            const long r4 = b * 4 * H, r = b * H;
            const float *a = act + r4, *sp = s_prev + r, *sb = s + r, *cb = c + r, *dyb = dy + r,
                        *dy2b = dy2 ? dy2 + r : 0;
            for (long j = 0; j < full; j += 8)
                bwd8(a, sp, sb, cb, dyb, dy2b, ds + r, d_pre + r4, peep, d_peep_rows, H, j, m, 0);
            if (full < H) bwd8(a, sp, sb, cb, dyb, dy2b, ds + r, d_pre + r4, peep, d_peep_rows, H, full, m, 1);
        }
        if (par && d_peep) {
            const long blocks = (H + 7) / 8;  /* blocks of 8 columns; the last one may be partial */
#pragma omp for schedule(static)
            for (long k = 0; k < blocks; ++k) {
                if (8 * k + 8 <= H) peep8(d_pre, s_prev, s, d_peep, B, H, 8 * k, m, 0);
                else peep8(d_pre, s_prev, s, d_peep, B, H, 8 * k, m, 1);
            }
        }
    }
}
