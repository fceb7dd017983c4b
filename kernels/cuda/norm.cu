/* Row normalizations: RMSNorm, fused residual-add + RMSNorm, LayerNorm, fused residual-add of a
 * LayerNorm'd branch. The residual stream (x of rmsnorm, resid of the fused ops) may be f32.
 *
 * One block of 256 threads per row; the row is read once into registers-worth of fp32 in shared
 * memory-free passes (each thread keeps its strided elements' sums), statistics are reduced
 * across the block, then the row is re-read (it is in L1/L2) and written once. */
#include "kernels/cuda/act_fp8.cuh"
#include "kernels/cuda/common.cuh"

#define NORM_THREADS 256

/* Sum of v across the block; every thread gets the result. */
__device__ float block_sum(float v)
{
    __shared__ float partial[NORM_THREADS / 32];
    __shared__ float total;
    v = warp_sum(v);
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    if (warp == 0) {
        float t = lane < NORM_THREADS / 32 ? partial[lane] : 0.f;
        t = warp_sum(t);
        if (lane == 0) total = t;
    }
    __syncthreads();
    float r = total;
    __syncthreads(); /* partial/total reused by the next call */
    return r;
}

/* Loads and stores of 8 (vectorized) or 1 element(s) of a row in either float kind: the residual
 * streams are f32, everything else the 16-bit storage type T. */
template <typename T> __device__ __forceinline__ void load8(const T *p, int64_t c, float *f)
{
    half8_to_f32(((const half8<T> *)p)[c], f);
}
__device__ __forceinline__ void load8(const float *p, int64_t c, float *f)
{
    float4 a = ((const float4 *)p)[2 * c], b = ((const float4 *)p)[2 * c + 1];
    f[0] = a.x, f[1] = a.y, f[2] = a.z, f[3] = a.w, f[4] = b.x, f[5] = b.y, f[6] = b.z, f[7] = b.w;
}
template <typename T> __device__ __forceinline__ void store8(T *p, int64_t c, const float *f)
{
    ((half8<T> *)p)[c] = f32_to_half8<T>(f);
}
__device__ __forceinline__ void store8(float *p, int64_t c, const float *f)
{
    ((float4 *)p)[2 * c] = make_float4(f[0], f[1], f[2], f[3]);
    ((float4 *)p)[2 * c + 1] = make_float4(f[4], f[5], f[6], f[7]);
}
template <typename T> __device__ __forceinline__ float load1(const T *p, int64_t i)
{
    return to_f32(p[i]);
}
__device__ __forceinline__ float load1(const float *p, int64_t i)
{
    return p[i];
}
template <typename T> __device__ __forceinline__ void store1(T *p, int64_t i, float v)
{
    p[i] = from_f32<T>(v);
}
__device__ __forceinline__ void store1(float *p, int64_t i, float v)
{
    p[i] = v;
}

/* mode 0: rmsnorm; 1: add_rmsnorm (resid += delta first, written back); 2: layernorm.
 * T is the storage type, R the type of x (the residual stream for modes 0 and 1: f32 or T). */
template <typename T, typename R>
__global__ void norm_kernel(T *y, R *x, const T *delta, const T *w, const T *b, int64_t cols,
                            float eps, int mode, int vec8)
{
    pdl_wait(); /* started through cuda_launch: x and delta come from the kernels ahead */
    pdl_trigger();
    int64_t row = blockIdx.x;
    R *xr = x + row * cols;
    T *yr = y + row * cols;
    const T *dr = delta ? delta + row * cols : NULL;
    float sum = 0.f, sumsq = 0.f;
    if (vec8) {
        for (int64_t c = threadIdx.x; c < cols / 8; c += blockDim.x) {
            float f[8];
            load8(xr, c, f);
            if (dr) {
                float d[8];
                load8(dr, c, d);
#pragma unroll
                for (int j = 0; j < 8; j++) f[j] += d[j];
                store8(xr, c, f);
                load8(xr, c, f); /* statistics of the stored (16-bit: rounded) residual */
            }
#pragma unroll
            for (int j = 0; j < 8; j++) {
                sum += f[j];
                sumsq += f[j] * f[j];
            }
        }
    } else {
        for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
            float f = load1(xr, c);
            if (dr) {
                store1(xr, c, f + load1(dr, c));
                f = load1(xr, c);
            }
            sum += f;
            sumsq += f * f;
        }
    }
    float mean = 0.f, inv;
    if (mode == 2) {
        mean = block_sum(sum) / (float)cols;
        /* second pass for the variance: exact even when |mean| >> std */
        float var = 0.f;
        for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
            float d = load1(xr, c) - mean;
            var += d * d;
        }
        inv = rsqrtf(block_sum(var) / (float)cols + eps);
    } else {
        __syncthreads(); /* add_rmsnorm: the residual writes above are re-read below */
        inv = rsqrtf(block_sum(sumsq) / (float)cols + eps);
    }
    if (vec8) {
        for (int64_t c = threadIdx.x; c < cols / 8; c += blockDim.x) {
            float f[8], fw[8], fb[8] = {0};
            load8(xr, c, f);
            load8(w, c, fw);
            if (b) load8(b, c, fb);
#pragma unroll
            for (int j = 0; j < 8; j++) f[j] = (f[j] - mean) * inv * fw[j] + fb[j];
            store8(yr, c, f);
        }
    } else {
        for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
            float f = (load1(xr, c) - mean) * inv * load1(w, c);
            if (b) f += load1(b, c);
            store1(yr, c, f);
        }
    }
}

/* resid += layernorm(delta) * w + b; y = resid in T. y may alias delta: every thread reads the
 * delta elements it later overwrites itself, and the statistics passes end in barriers. */
template <typename T, typename R>
__global__ void add_layernorm_kernel(T *y, R *resid, const T *delta, const T *w, const T *b,
                                     int64_t cols, float eps, int vec8)
{
    pdl_wait();
    pdl_trigger();
    int64_t row = blockIdx.x;
    R *rr = resid + row * cols;
    const T *dr = delta + row * cols;
    T *yr = y + row * cols;
    float sum = 0.f;
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) sum += load1(dr, c);
    float mean = block_sum(sum) / (float)cols, var = 0.f;
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
        float d = load1(dr, c) - mean;
        var += d * d;
    }
    float inv = rsqrtf(block_sum(var) / (float)cols + eps);
    if (vec8) {
        for (int64_t c = threadIdx.x; c < cols / 8; c += blockDim.x) {
            float d[8], r[8], fw[8], fb[8];
            load8(dr, c, d);
            load8(rr, c, r);
            load8(w, c, fw);
            load8(b, c, fb);
#pragma unroll
            for (int j = 0; j < 8; j++) r[j] += (d[j] - mean) * inv * fw[j] + fb[j];
            store8(rr, c, r);
            load8(rr, c, r); /* y is the stored residual (for a 16-bit stream: the rounded one) */
            store8(yr, c, r);
        }
    } else {
        for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
            float v = load1(rr, c) + (load1(dr, c) - mean) * inv * load1(w, c) + load1(b, c);
            store1(rr, c, v);
            store1(yr, c, load1(rr, c));
        }
    }
}

/* add_layernorm_kernel, and the row of y (as stored in T) quantized to E4M3 codes + its scale
 * (act_fp8.cuh): the fp8 GEMM that reads y next needs no quantization pass. vec8 also says the
 * codes are 8-byte aligned. */
template <typename T, typename R>
__global__ void add_layernorm_q8_kernel(T *y, R *resid, const T *delta, const T *w, const T *b,
                                        uint8_t *codes, float *scales, int64_t cols, float eps,
                                        int vec8)
{
    pdl_wait();
    pdl_trigger();
    int64_t row = blockIdx.x;
    R *rr = resid + row * cols;
    const T *dr = delta + row * cols;
    T *yr = y + row * cols;
    uint8_t *qr = codes + row * cols;
    float sum = 0.f;
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) sum += load1(dr, c);
    float mean = block_sum(sum) / (float)cols, var = 0.f;
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
        float d = load1(dr, c) - mean;
        var += d * d;
    }
    float inv = rsqrtf(block_sum(var) / (float)cols + eps);
    float amax = 0.f;
    if (vec8) {
        for (int64_t c = threadIdx.x; c < cols / 8; c += blockDim.x) {
            float d[8], r[8], fw[8], fb[8];
            load8(dr, c, d);
            load8(rr, c, r);
            load8(w, c, fw);
            load8(b, c, fb);
#pragma unroll
            for (int j = 0; j < 8; j++) r[j] += (d[j] - mean) * inv * fw[j] + fb[j];
            store8(rr, c, r);
            load8(rr, c, r);
            store8(yr, c, r);
            load8(yr, c, r); /* the stored y, rounded to T */
#pragma unroll
            for (int j = 0; j < 8; j++) amax = fmaxf(amax, fabsf(r[j]));
        }
    } else {
        for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
            float v = load1(rr, c) + (load1(dr, c) - mean) * inv * load1(w, c) + load1(b, c);
            store1(rr, c, v);
            store1(yr, c, load1(rr, c));
            amax = fmaxf(amax, fabsf(load1(yr, c)));
        }
    }
    amax = act_block_max(amax); /* its barrier makes every thread's y visible to the block */
    float q = act_inv(amax);
    if (vec8) {
        for (int64_t c = threadIdx.x; c < cols / 8; c += blockDim.x) {
            float v[8];
            load8(yr, c, v);
            ((uint2 *)qr)[c] = act_pack8(v, q);
        }
    } else {
        for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) qr[c] = act_e4m3(load1(yr, c) * q);
    }
    if (threadIdx.x == 0) scales[row] = act_scale(amax);
}

/* The value v as stored in S and read back (the residual stream's and y's rounding). */
template <typename S> __device__ __forceinline__ float as_stored(float v)
{
    return to_f32(from_f32<S>(v));
}
template <> __device__ __forceinline__ float as_stored<float>(float v)
{
    return v;
}

/* add_layernorm (and with Q8 add_layernorm_q8) for rows of at most 256 chunks of 8 (the vision
 * tower's 1792): one warp per row, the row's delta held in registers from the statistics to the
 * output, so there is no block barrier and no second read of the row (the block-per-row kernels
 * above reached ~40 % of the copy rate on the tower's 6401 x 1792 rows, profile in PERF.md).
 * Lane l takes chunks l, l + 32, ..; CH chunks a lane at most. Same arithmetic as above (two-pass
 * statistics; y is the stored residual rounded to T; the codes are made from y as stored); only
 * the order of the fp32 sums differs. */
template <typename T, typename R, bool Q8, int CH>
__global__ void __launch_bounds__(NORM_THREADS)
    add_layernorm_rows_kernel(T *y, R *resid, const T *delta, const T *w, const T *b,
                              uint8_t *codes, float *scales, int64_t rows, int64_t cols, float eps)
{
    pdl_wait();
    pdl_trigger();
    const int lane = threadIdx.x % 32;
    const int64_t row = (int64_t)blockIdx.x * (NORM_THREADS / 32) + threadIdx.x / 32;
    if (row >= rows) return;
    const int64_t n8 = cols / 8;
    R *rr = resid + row * cols;
    const T *dr = delta + row * cols;
    T *yr = y + row * cols;
    float d[CH][8];
    float sum = 0.f;
#pragma unroll
    for (int i = 0; i < CH; i++) {
        const int64_t c = lane + 32 * i;
        if (c < n8) {
            load8(dr, c, d[i]);
#pragma unroll
            for (int j = 0; j < 8; j++) sum += d[i][j];
        }
    }
    const float mean = warp_sum(sum) / (float)cols;
    float var = 0.f;
#pragma unroll
    for (int i = 0; i < CH; i++)
        if (lane + 32 * i < n8)
#pragma unroll
            for (int j = 0; j < 8; j++) var += (d[i][j] - mean) * (d[i][j] - mean);
    const float inv = rsqrtf(warp_sum(var) / (float)cols + eps);
    float amax = 0.f;
#pragma unroll
    for (int i = 0; i < CH; i++) {
        const int64_t c = lane + 32 * i;
        if (c >= n8) continue;
        float r[8], fw[8], fb[8];
        load8(rr, c, r);
        load8(w, c, fw);
        load8(b, c, fb);
#pragma unroll
        for (int j = 0; j < 8; j++) r[j] = as_stored<R>(r[j] + (d[i][j] - mean) * inv * fw[j] + fb[j]);
        store8(rr, c, r);
        store8(yr, c, r);
        if (Q8)
#pragma unroll
            for (int j = 0; j < 8; j++) {
                d[i][j] = as_stored<T>(r[j]); /* y as stored: what the codes are made of */
                amax = fmaxf(amax, fabsf(d[i][j]));
            }
    }
    if (!Q8) return;
    amax = warp_max(amax);
    const float q = act_inv(amax);
#pragma unroll
    for (int i = 0; i < CH; i++) {
        const int64_t c = lane + 32 * i;
        if (c < n8) ((uint2 *)(codes + row * cols))[c] = act_pack8(d[i], q);
    }
    if (lane == 0) scales[row] = act_scale(amax);
}

/* add_layernorm_rows_kernel when it takes the shape (vec8, at most 256 chunks of 8 a row);
 * false: the caller runs the block-per-row kernel. */
template <typename T, typename R, bool Q8>
static bool launch_add_layernorm_rows(const cuda_backend *cb, cudaError_t *e, T *y, R *resid,
                                      const T *delta, const T *w, const T *b, uint8_t *codes,
                                      float *scales, int64_t rows, int64_t cols, float eps,
                                      int vec8)
{
    const int64_t n8 = cols / 8, per_lane = (n8 + 31) / 32;
    if (!vec8 || per_lane > 8) return false;
    const unsigned grid = (unsigned)((rows + NORM_THREADS / 32 - 1) / (NORM_THREADS / 32));
#define GLM4V_ALN_ROWS(CH)                                                                         \
    cuda_launch(cb, grid, NORM_THREADS, 0, add_layernorm_rows_kernel<T, R, Q8, CH>, y, resid,      \
                delta, w, b, codes, scales, rows, cols, eps)
    *e = per_lane <= 1   ? GLM4V_ALN_ROWS(1)
         : per_lane <= 2 ? GLM4V_ALN_ROWS(2)
         : per_lane <= 4 ? GLM4V_ALN_ROWS(4)
                         : GLM4V_ALN_ROWS(8);
#undef GLM4V_ALN_ROWS
    return true;
}

template <typename T, typename R>
static cudaError_t launch_norm_as(const cuda_backend *cb, const glm_tensor &y,
                                  const glm_tensor &x, const glm_tensor *delta,
                                  const glm_tensor &w, const glm_tensor *b, float eps, int mode,
                                  int vec8)
{
    unsigned rows = (unsigned)glm_tensor_rows(&x);
    int64_t cols = glm_tensor_cols(&x);
    T *yd = (T *)y.data;
    const T *dd = delta ? (const T *)delta->data : NULL;
    const T *bd = b ? (const T *)b->data : NULL;
    cudaError_t e;
    if (mode == 3 &&
        launch_add_layernorm_rows<T, R, false>(cb, &e, yd, (R *)x.data, dd, (const T *)w.data, bd,
                                               NULL, NULL, rows, cols, eps, vec8))
        return e;
    if (mode == 3)
        return cuda_launch(cb, rows, NORM_THREADS, 0, add_layernorm_kernel<T, R>, yd, (R *)x.data,
                           dd, (const T *)w.data, bd, cols, eps, vec8);
    return cuda_launch(cb, rows, NORM_THREADS, 0, norm_kernel<T, R>, yd, (R *)x.data, dd,
                       (const T *)w.data, bd, cols, eps, mode, vec8);
}

static void launch_norm(glm_backend *be, glm_tensor y, glm_tensor x, const glm_tensor *delta,
                        glm_tensor w, const glm_tensor *b, float eps, int mode)
{
    cuda_backend *cb = cuda_impl(be);
    int64_t rows = glm_tensor_rows(&x), cols = glm_tensor_cols(&x);
    glm_dtype t = y.dtype;
    CUDA_REQUIRE(be, cuda_is_half(t) && (x.dtype == t || x.dtype == GLM_F32) && w.dtype == t &&
                         (!delta || delta->dtype == t) && (!b || b->dtype == t),
                 "norm: y, w, delta and bias must share one 16-bit dtype, x/resid that or f32; "
                 "got x %s y %s w %s",
                 glm_dtype_name(x.dtype), glm_dtype_name(y.dtype), glm_dtype_name(w.dtype));
    CUDA_REQUIRE(be, glm_tensor_numel(&y) == rows * cols && glm_tensor_numel(&w) == cols,
                 "norm: x [%lld,%lld], y %lld elements, w %lld", (long long)rows, (long long)cols,
                 (long long)glm_tensor_numel(&y), (long long)glm_tensor_numel(&w));
    CUDA_REQUIRE(be, !delta || glm_tensor_numel(delta) == rows * cols, "norm: delta size");
    CUDA_REQUIRE(be, !b || glm_tensor_numel(b) == cols, "norm: bias size");
    if (rows == 0) return;
    int vec8 = cols % 8 == 0 && cuda_aligned16(x.data) && cuda_aligned16(y.data) &&
               cuda_aligned16(w.data) && (!b || cuda_aligned16(b->data)) &&
               (!delta || cuda_aligned16(delta->data));
    cudaError_t e;
    GLM_DISPATCH_HALF(t, T, {
        if (x.dtype == GLM_F32)
            e = launch_norm_as<T, float>(cb, y, x, delta, w, b, eps, mode, vec8);
        else
            e = launch_norm_as<T, T>(cb, y, x, delta, w, b, eps, mode, vec8);
    });
    CUDA_CHECK(be, e);
}

void cuda_rmsnorm(glm_backend *be, glm_tensor y, glm_tensor x, glm_tensor w, float eps)
{
    launch_norm(be, y, x, NULL, w, NULL, eps, 0);
}

void cuda_add_rmsnorm(glm_backend *be, glm_tensor y, glm_tensor resid, glm_tensor delta,
                      glm_tensor w, float eps)
{
    launch_norm(be, y, resid, &delta, w, NULL, eps, 1);
}

void cuda_layernorm(glm_backend *be, glm_tensor y, glm_tensor x, glm_tensor w, glm_tensor b,
                    float eps)
{
    launch_norm(be, y, x, NULL, w, &b, eps, 2);
}

void cuda_add_layernorm(glm_backend *be, glm_tensor y, glm_tensor resid, glm_tensor delta,
                        glm_tensor w, glm_tensor b, float eps)
{
    launch_norm(be, y, resid, &delta, w, &b, eps, 3);
}

template <typename T, typename R>
static cudaError_t launch_add_layernorm_q8_as(const cuda_backend *cb, const glm_tensor &y,
                                              const glm_tensor &resid, const glm_tensor &delta,
                                              const glm_tensor &w, const glm_tensor &b, float eps,
                                              const glm_weight &q, int vec8)
{
    int64_t rows = glm_tensor_rows(&resid), cols = glm_tensor_cols(&resid);
    T *yd = (T *)y.data;
    R *rd = (R *)resid.data;
    const T *dd = (const T *)delta.data, *wd = (const T *)w.data, *bd = (const T *)b.data;
    cudaError_t e;
    if (launch_add_layernorm_rows<T, R, true>(cb, &e, yd, rd, dd, wd, bd, (uint8_t *)q.data,
                                              q.scales, rows, cols, eps, vec8))
        return e;
    return cuda_launch(cb, (unsigned)rows, NORM_THREADS, 0, add_layernorm_q8_kernel<T, R>, yd, rd,
                       dd, wd, bd, (uint8_t *)q.data, q.scales, cols, eps, vec8);
}

void cuda_add_layernorm_q8(glm_backend *be, glm_tensor y, glm_tensor resid, glm_tensor delta,
                           glm_tensor w, glm_tensor b, float eps, glm_weight q)
{
    cuda_backend *cb = cuda_impl(be);
    int64_t rows = glm_tensor_rows(&resid), cols = glm_tensor_cols(&resid);
    glm_dtype t = y.dtype;
    CUDA_REQUIRE(be,
                 cuda_is_half(t) && (resid.dtype == t || resid.dtype == GLM_F32) &&
                     w.dtype == t && delta.dtype == t && b.dtype == t,
                 "add_layernorm_q8: y, w, delta and bias must share one 16-bit dtype, resid that "
                 "or f32; got resid %s y %s w %s",
                 glm_dtype_name(resid.dtype), glm_dtype_name(y.dtype), glm_dtype_name(w.dtype));
    CUDA_REQUIRE(be,
                 glm_tensor_numel(&y) == rows * cols && glm_tensor_numel(&delta) == rows * cols &&
                     glm_tensor_numel(&w) == cols && glm_tensor_numel(&b) == cols,
                 "add_layernorm_q8: resid [%lld,%lld], y %lld, delta %lld, w %lld, b %lld",
                 (long long)rows, (long long)cols, (long long)glm_tensor_numel(&y),
                 (long long)glm_tensor_numel(&delta), (long long)glm_tensor_numel(&w),
                 (long long)glm_tensor_numel(&b));
    CUDA_REQUIRE(be,
                 q.format == GLM_WEIGHT_FP8 && q.data && q.scales && q.rows == rows &&
                     q.cols == cols,
                 "add_layernorm_q8: q must be fp8 codes [%lld, %lld] with scales", (long long)rows,
                 (long long)cols);
    if (rows == 0) return;
    int vec8 = cols % 8 == 0 && cuda_aligned16(resid.data) && cuda_aligned16(y.data) &&
               cuda_aligned16(w.data) && cuda_aligned16(b.data) && cuda_aligned16(delta.data) &&
               ((uintptr_t)q.data & 7) == 0;
    cudaError_t e = cudaSuccess;
    GLM_DISPATCH_HALF(t, T, {
        if (resid.dtype == GLM_F32)
            e = launch_add_layernorm_q8_as<T, float>(cb, y, resid, delta, w, b, eps, q, vec8);
        else
            e = launch_add_layernorm_q8_as<T, T>(cb, y, resid, delta, w, b, eps, q, vec8);
    });
    CUDA_CHECK(be, e);
}
