/* One-shot push all-reduce over CUDA IPC memory for small messages (a decode step's hidden rows),
 * where NCCL's ~15 us per call dominates. Layout and contract: kernels/allreduce_p2p.h.
 *
 * Why one shot and push: at 8-512 KiB the cost is latency, not bandwidth, so each rank sends its
 * whole input to every peer at once (remote stores over NVLink are posted writes and need no round
 * trip) and then only reads local memory. One flag exchange per block is the only synchronisation.
 *
 * Why reusing the two parities is safe (stream order, not extra flags): rank r writes
 * data[e & 1][r] in peer p's region in epoch e, and writes there again in epoch e + 2. Rank r's
 * epoch e + 2 kernel starts after its epoch e + 1 kernel ended, which waited for p's epoch e + 1
 * flag; p raised that flag inside its epoch e + 1 kernel, which started only after p's whole
 * epoch e kernel, the one reading data[e & 1][r], had ended. The same argument covers a block
 * whose slice moves because the count changed: it is whole kernels that are ordered.
 *
 * Why a flag is waited for with >= and not ==: peer p may finish epoch e (it has all our data)
 * and raise flag e + 1 before this block has seen e. Its epoch e + 1 data goes to the other parity,
 * so what this block reads is still intact. Flags and epochs wrap at 2^32: compared as a signed
 * difference. */
#include "kernels/cuda/common.cuh"

extern "C" {
#include "kernels/allreduce_p2p.h"
}

#include <type_traits>

/* 32 blocks (kernels/allreduce_p2p.h) of 512 threads: on 2 H200s, 8 or 16 blocks saved 0.1-0.3 us at
 * 8 KiB but cost 3-4 us at 512 KiB; 64 blocks of 256 gained nothing at 8 KiB. */
#define P2P_THREADS 512

/* ---- memory helpers ---- */

__device__ __forceinline__ uint32_t *region_flags(void *region)
{
    return (uint32_t *)region;
}

__device__ __forceinline__ uint4 *region_data(void *region, int parity, int src_rank, int size,
                                              size_t max_bytes)
{
    char *base = (char *)region + GLM_P2P_FLAGS_BYTES;
    return (uint4 *)(base + ((size_t)parity * size + src_rank) * max_bytes);
}

/* Release at system scope: the block's data stores (ordered before by __syncthreads) become
 * visible to the peer no later than the flag. */
__device__ __forceinline__ void flag_store_release(uint32_t *p, uint32_t v)
{
    asm volatile("st.release.sys.global.u32 [%0], %1;" ::"l"(p), "r"(v) : "memory");
}

__device__ __forceinline__ uint32_t flag_load_acquire(const uint32_t *p)
{
    uint32_t v;
    asm volatile("ld.acquire.sys.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
    return v;
}

__device__ __forceinline__ uint64_t globaltimer_ns()
{
    uint64_t t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    return t;
}

/* Vector v (16 bytes) of the caller's buffer; a partial last vector or an unaligned buffer goes
 * element by element, padding with zeros (never stored back). Elem is the raw element type. */
template <typename Elem>
__device__ __forceinline__ uint4 load_input(const void *data, size_t v, size_t count, bool aligned)
{
    constexpr int per_vec = 16 / sizeof(Elem);
    const size_t first = v * per_vec;
    if (aligned && first + per_vec <= count) return ((const uint4 *)data)[v];
    union {
        uint4 v;
        Elem e[per_vec];
    } out;
    out.v = make_uint4(0, 0, 0, 0);
    for (int i = 0; i < per_vec; i++)
        if (first + i < count) out.e[i] = ((const Elem *)data)[first + i];
    return out.v;
}

template <typename Elem>
__device__ __forceinline__ void store_output(void *data, size_t v, size_t count, bool aligned,
                                             uint4 x)
{
    constexpr int per_vec = 16 / sizeof(Elem);
    const size_t first = v * per_vec;
    if (aligned && first + per_vec <= count) {
        ((uint4 *)data)[v] = x;
        return;
    }
    union {
        uint4 v;
        Elem e[per_vec];
    } in;
    in.v = x;
    for (int i = 0; i < per_vec; i++)
        if (first + i < count) ((Elem *)data)[first + i] = in.e[i];
}

/* One 16-byte vector of E (float: 4 elements; bf16 / fp16: 8) added into acc (or copied, first). */
template <typename E> __device__ __forceinline__ void accumulate(float *acc, uint4 x, bool first)
{
    float f[8];
    constexpr int n = 16 / sizeof(E);
    if constexpr (sizeof(E) == 4) {
        const float *p = (const float *)&x;
        for (int i = 0; i < 4; i++)
            f[i] = p[i];
    } else {
        half8<E> h;
        memcpy(&h, &x, sizeof(h));
        half8_to_f32(h, f);
    }
    for (int i = 0; i < n; i++)
        acc[i] = first ? f[i] : acc[i] + f[i];
}

template <typename E> __device__ __forceinline__ uint4 pack(const float *acc)
{
    if constexpr (sizeof(E) == 4) {
        return make_uint4(__float_as_uint(acc[0]), __float_as_uint(acc[1]), __float_as_uint(acc[2]),
                          __float_as_uint(acc[3]));
    } else {
        half8<E> h = f32_to_half8<E>(acc);
        uint4 x;
        memcpy(&x, &h, sizeof(x));
        return x;
    }
}

/* ---- CUDA kernels ---- */

/* Grid: GLM_P2P_BLOCKS blocks, always all of them (each owns a flag slot and an epoch counter,
 * which must advance in step on every rank); block b owns a contiguous slice of 16-byte vectors.
 * Threads tid < size each signal and wait for one peer. Reads data (the input) and writes it once
 * in place; writes every region's data[parity][rank] slice and flags[b][rank]. */
template <typename E> /* float, __nv_bfloat16 or __half */
__global__ void __launch_bounds__(P2P_THREADS)
    allreduce_p2p_kernel(const __grid_constant__ glm_p2p_args a, void *data, size_t count,
                         bool aligned)
{
    typedef typename std::conditional<sizeof(E) == 4, uint32_t, uint16_t>::type Elem;
    constexpr int per_vec = 16 / sizeof(Elem);
    __shared__ int peers_ok;
    const int b = blockIdx.x, tid = threadIdx.x;
    const uint32_t epoch = a.epochs[b] + 1;
    const int parity = (int)(epoch & 1);
    const size_t n_vec = (count + per_vec - 1) / per_vec;
    const size_t per_block = (n_vec + gridDim.x - 1) / gridDim.x;
    const size_t v_begin = min(n_vec, (size_t)b * per_block);
    const size_t v_end = min(n_vec, v_begin + per_block);
    if (tid == 0) peers_ok = 1;

    /* push: our slice into data[parity][rank] of every region, starting with the next rank so
     * that at TP > 2 the ranks do not all write to the same peer first */
    for (size_t v = v_begin + tid; v < v_end; v += blockDim.x) {
        uint4 x = load_input<Elem>(data, v, count, aligned);
        for (int i = 0; i < a.size; i++) {
            int p = (a.rank + 1 + i) % a.size;
            region_data(a.regions[p], parity, a.rank, a.size, a.max_bytes)[v] = x;
        }
    }
    __syncthreads();

    if (tid < a.size && tid != a.rank) {
        flag_store_release(region_flags(a.regions[tid]) + b * GLM_P2P_MAX_RANKS + a.rank, epoch);
        const uint32_t *mine = region_flags(a.regions[a.rank]) + b * GLM_P2P_MAX_RANKS + tid;
        const uint64_t start = globaltimer_ns();
        while ((int32_t)(flag_load_acquire(mine) - epoch) < 0) {
            if (globaltimer_ns() - start > a.timeout_ns) {
                peers_ok = 0;
                a.failure->peer = (uint32_t)tid;
                a.failure->failed = 1;
                __threadfence_system();
                break;
            }
        }
    }
    __syncthreads();
    if (!peers_ok) return; /* the communicator reports it; its state is unusable from here */

    /* reduce in rank order; __ldcg because these addresses were rewritten by peers since this
     * SM last read them (two epochs ago), and L1 is not coherent with remote writes */
    for (size_t v = v_begin + tid; v < v_end; v += blockDim.x) {
        float acc[8];
        for (int p = 0; p < a.size; p++)
            accumulate<E>(
                acc, __ldcg(region_data(a.regions[a.rank], parity, p, a.size, a.max_bytes) + v),
                p == 0);
        store_output<Elem>(data, v, count, aligned, pack<E>(acc));
    }
    if (tid == 0) a.epochs[b] = epoch;
}

/* ---- kernel launchers ---- */

extern "C" size_t glm_p2p_region_bytes(int size, size_t max_bytes)
{
    return GLM_P2P_FLAGS_BYTES + 2 * (size_t)size * max_bytes;
}

extern "C" glm_status glm_p2p_allreduce_launch(const glm_p2p_args *args, void *data, size_t count,
                                               glm_dtype dtype, void *stream_ptr, glm_error *err)
{
    static_assert(GLM_P2P_BLOCKS * GLM_P2P_MAX_RANKS * sizeof(uint32_t) <= GLM_P2P_FLAGS_BYTES,
                  "flags do not fit their page");
    cudaStream_t stream = (cudaStream_t)stream_ptr;
    const size_t bytes = count * (dtype == GLM_F32 ? 4 : 2);
    if ((dtype != GLM_F32 && !cuda_is_half(dtype)) || args->size < 2 ||
        args->size > GLM_P2P_MAX_RANKS || args->rank < 0 ||
        args->rank >= args->size || args->max_bytes % 16 != 0 || bytes > args->max_bytes ||
        P2P_THREADS < args->size)
        return glm_fail(err, GLM_ERR_INVALID_ARG,
                        "p2p all-reduce of %zu x %s on rank %d of %d: outside the path's limits "
                        "(%zu bytes)",
                        count, glm_dtype_name(dtype), args->rank, args->size, args->max_bytes);
    const bool aligned = cuda_aligned16(data);
    if (dtype == GLM_F32)
        allreduce_p2p_kernel<float>
            <<<GLM_P2P_BLOCKS, P2P_THREADS, 0, stream>>>(*args, data, count, aligned);
    else
        GLM_DISPATCH_HALF(dtype, T,
                          allreduce_p2p_kernel<T><<<GLM_P2P_BLOCKS, P2P_THREADS, 0, stream>>>(
                              *args, data, count, aligned));
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess)
        return glm_fail(err, GLM_ERR_COMM, "p2p all-reduce of %zu x %s on rank %d: %s", count,
                        glm_dtype_name(dtype), args->rank, cudaGetErrorString(e));
    return GLM_OK;
}
