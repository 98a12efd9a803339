/* Fused float32 CPU kernels for one decode step of the fast decoder (llmrl/rollout/sampler.py).
 *
 * Compiled on first use by llmrl/rollout/ckernels.py (cc -O3 -march=native -fopenmp, HD = head dim fixed at
 * compile time) and called through ctypes; every kernel has a pure-torch twin in sampler.py that is used when
 * no C compiler is available, and tests check that both give the same tokens and log-probs.
 *
 * Why: a decode step of a small model on CPU is a few small GEMMs plus ~100 tiny elementwise ops. The GEMMs
 * stay in torch (MKL); these kernels replace the elementwise ops, each with one pass over memory:
 *   rms_norm     RMSNorm without its weight (folded into the next GEMM by sampler._fold)
 *   swiglu       silu(gate) * up
 *   attn_step    rotary embedding, KV-cache write and softmax attention for every row and head
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#ifndef HD
#error "compile with -DHD=<head dim>"
#endif

/* e^x for x in [-87, 88], vectorisable (no libm call): 2^n * p(r) with r = x - n ln2, |r| <= ln2 / 2 and a
 * degree-7 polynomial (Cephes expf coefficients); relative error about 1e-7, like torch's vectorised exp. */
static inline float fast_exp(float x)
{
    x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
    const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  /* round to nearest (1.5 * 2^23) */
    float r = x - n * 0.693359375f;
    r = r + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    const int32_t bits = ((int32_t)n + 127) << 23;  /* 2^n, n in [-126, 127]: a normal float */
    float two_n;
    memcpy(&two_n, &bits, sizeof two_n);  /* (a union here stops gcc from vectorising the callers' loops) */
    return p * two_n;
}

/* out[r] = x[r] / sqrt(sum(x[r]^2) + d_eps) for rows of length D (d_eps = D * eps: RMSNorm / sqrt(D)). */
void rms_norm(const float *x, float *out, int64_t rows, int64_t D, float d_eps)
{
    #pragma omp parallel for schedule(static) if (rows * D >= 16384)
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * D;
        float ss = 0.f;
        #pragma omp simd reduction(+:ss)
        for (int64_t i = 0; i < D; i++) ss += xr[i] * xr[i];
        const float inv = 1.0f / sqrtf(ss + d_eps);
        float *o = out + r * D;
        #pragma omp simd
        for (int64_t i = 0; i < D; i++) o[i] = xr[i] * inv;
    }
}

/* out[i] = silu(gu[i]) * gu[n + i] for i < n (gu = [gate; up]). */
void swiglu(const float *gu, float *out, int64_t n)
{
    #pragma omp parallel for schedule(static) if (n >= 16384)
    for (int64_t c = 0; c < n; c += 4096) {
        const int64_t e = c + 4096 < n ? c + 4096 : n;
        #pragma omp simd
        for (int64_t i = c; i < e; i++) {
            const float g = gu[i];
            out[i] = g / (1.0f + fast_exp(-g)) * gu[n + i];
        }
    }
}

/* x * cos + rotate_half(x) * sin (rotate_half's minus sign is folded into sin), times scale. */
static inline void rope(float *dst, const float *x, const float *c, const float *sn, float scale)
{
    #pragma omp simd
    for (int64_t i = 0; i < HD / 2; i++) dst[i] = (x[i] * c[i] + x[i + HD / 2] * sn[i]) * scale;
    #pragma omp simd
    for (int64_t i = HD / 2; i < HD; i++) dst[i] = (x[i] * c[i] + x[i - HD / 2] * sn[i]) * scale;
}

/* Vectors of VW floats (GCC/Clang vector extensions: AVX-512, AVX2 or SSE registers, whatever -march has). */
#define VW (HD % 16 == 0 ? 16 : HD % 8 == 0 ? 8 : HD % 4 == 0 ? 4 : 1)
typedef float vf __attribute__((vector_size(VW * 4), aligned(4)));

static inline vf vload(const float *p) { vf v; memcpy(&v, p, sizeof v); return v; }
static inline void vstore(float *p, vf v) { memcpy(p, &v, sizeof v); }

/* Number of floats in a vector: keys are stored in tiles of VW keys, [HD, VW] each, dimension-major. */
int64_t tile_width(void) { return VW; }

/* sc[t] = q . k_t for t < T, keys in tiles ([ceil(T / VW), HD, VW]): VW keys are scored at once in one register
 * (a dot product per key would end in a horizontal sum per key) and each tile is one contiguous read. Writes up
 * to VW - 1 values past sc[T - 1] (from the unused slots of the last tile). */
static inline void scores(float *restrict sc, const float *restrict q, const float *restrict kt, int64_t T)
{
    for (int64_t t = 0; t < T; t += VW) {
        const float *tile = kt + t * HD;
        vf a[4] = {{0.f}, {0.f}, {0.f}, {0.f}};  /* 4 independent FMA chains */
        int64_t i = 0;
        for (; i + 4 <= HD; i += 4)
            for (int64_t j = 0; j < 4; j++) a[j] += q[i + j] * vload(tile + (i + j) * VW);
        for (; i < HD; i++) a[0] += q[i] * vload(tile + i * VW);
        vstore(sc + t, (a[0] + a[1]) + (a[2] + a[3]));
    }
}

/* acc += sum_t w[t] * v_t for T rows of a [T, HD] value block */
static inline void weighted(vf *restrict acc, const float *restrict w, const float *restrict v, int64_t T)
{
    vf odd[HD / VW];  /* a second set of accumulators for odd t: two independent FMA chains */
    for (int64_t j = 0; j < HD / VW; j++) odd[j] = (vf){0.f};
    int64_t t = 0;
    for (; t + 2 <= T; t += 2)
        for (int64_t j = 0; j < HD / VW; j++) {
            acc[j] += w[t] * vload(v + t * HD + j * VW);
            odd[j] += w[t + 1] * vload(v + (t + 1) * HD + j * VW);
        }
    for (; t < T; t++)
        for (int64_t j = 0; j < HD / VW; j++) acc[j] += w[t] * vload(v + t * HD + j * VW);
    for (int64_t j = 0; j < HD / VW; j++) acc[j] += odd[j];
}

/* x[j] = e^(x[j] - max(x)) for j < nk; returns their sum (a softmax without the division). */
static inline float exp_shifted(float *restrict x, int64_t nk)
{
    float m = -INFINITY, tot = 0.f;
    #pragma omp simd reduction(max:m)
    for (int64_t j = 0; j < nk; j++) m = x[j] > m ? x[j] : m;
    #pragma omp simd reduction(+:tot)
    for (int64_t j = 0; j < nk; j++) {
        x[j] = fast_exp(x[j] - m);
        tot += x[j];
    }
    return tot;
}

/* Attention of generated token s of every row b (rows = prompts x n samples, prompt u = b / n).
 *   qkv   [B, (H + 2K) * HD]  the new token's q, k, v projections (before rotary)
 *   cosT, sinT [max_len, HD]  rotary tables by position
 *   pk, pv [Bu, K, P / VW, HD, VW], [Bu, K, P, HD]  rotated prompt keys (tiled) and values, shared by the prompt's
 *                             n samples: its plen[u] real tokens in slots 0 .. plen[u] - 1 (P: multiple of VW)
 *   gk, gv [B, K, S / VW, HD, VW], [B, K, S, HD]  generated keys (tiled) and values; this call writes slot s and
 *                             attends to slots 0 .. s (S: a multiple of VW)
 *   out   [B, H * HD]         attention output, heads concatenated (o_proj's input)
 * Query head h reads kv head h / (H / K); q is scaled by `scale` (1/sqrt(HD) for Llama). */
void attn_step(const float *qkv, const float *cosT, const float *sinT, const float *pk, const float *pv,
               const int64_t *plen, float *gk, float *gv, float *out, int64_t B, int64_t n, int64_t H, int64_t K,
               int64_t P, int64_t S, int64_t s, float scale)
{
    const int64_t R = H / K, W = (H + 2 * K) * HD, T = s + 1;
    #pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < B; b++) {
        const int64_t u = b / n, np = plen[u], pos = np + s;
        const float *c = cosT + pos * HD, *sn = sinT + pos * HD, *row = qkv + b * W;
        float q[HD], scbuf[P + S + VW];
        float *restrict sc = scbuf;
        for (int64_t k = 0; k < K; k++) {
            float kr[HD], *kd = gk + (b * K + k) * S * HD + (s / VW) * HD * VW + s % VW;
            rope(kr, row + (H + k) * HD, c, sn, 1.0f);
            for (int64_t i = 0; i < HD; i++) kd[i * VW] = kr[i];
            memcpy(gv + ((b * K + k) * S + s) * HD, row + (H + K + k) * HD, HD * sizeof(float));
        }
        for (int64_t h = 0; h < H; h++) {
            const int64_t k = h / R;
            vf acc[HD / VW];
            rope(q, row + h * HD, c, sn, scale);
            scores(sc, q, pk + (u * K + k) * P * HD, np);
            scores(sc + np, q, gk + (b * K + k) * S * HD, T);
            const float inv = 1.0f / exp_shifted(sc, np + T);
            for (int64_t j = 0; j < HD / VW; j++) acc[j] = (vf){0.f};
            weighted(acc, sc, pv + (u * K + k) * P * HD, np);
            weighted(acc, sc + np, gv + (b * K + k) * S * HD, T);
            for (int64_t j = 0; j < HD / VW; j++) vstore(out + (b * H + h) * HD + j * VW, acc[j] * inv);
        }
    }
}
