/* Attention: FlashAttention-2 style fused kernel on 16-bit tensor cores (mma.sync m16n8k16 with
 * bf16 or fp16 operands: the storage type of q, k, v, out and the cache, one for all of them),
 * used for the vision tower's bidirectional attention and for decoder attention over the paged
 * cache, plus the split-K (flash-decoding) combine pass.
 *
 * Layout of one block (128 threads = 4 warps): 64 "rows", 16 per warp. A row is a (query token,
 * query head) pair of ONE kv head: row r is token r / G, head kv_head * G + r % G with G the
 * GQA group size. So all query heads sharing a kv head read each K/V tile once (decode with
 * G = 16 fills one warp's m16 tile with the 16 heads of one token).
 * Grid: (row tiles, kv heads, sequences * splits). Each block loops over 64-key tiles of its
 * split of the keys: K and V tiles are staged in shared memory ([64][D + 8] 16-bit elements, the
 * +8 breaks bank conflicts), S = Q K^T stays in registers, the online softmax rescales the fp32 O
 * accumulators, and P (rounded to the storage type, the mma's operand type) feeds the P V product
 * directly from registers. No S x S matrix is ever stored. D is the head dim rounded up to 64,
 * 112 or 128; padded dims are zero.
 * Splits > 1 write unnormalized partial O with the running max and sum to scratch; the combine
 * kernel merges them. */
#include "kernels/cuda/attention_internal.cuh"
#ifdef GLM4V_HAVE_CUDNN
#include "kernels/cuda/attention_cudnn.h"
#endif

static bool vec_ok(const void *a, const void *b, const void *c, int64_t s1, int64_t s2,
                   int head_dim)
{
    return head_dim % 8 == 0 && s1 % 8 == 0 && s2 % 8 == 0 && cuda_aligned16(a) &&
           cuda_aligned16(b) && cuda_aligned16(c);
}

void cuda_attention_full(glm_backend *be, glm_tensor out, glm_tensor qkv, int n_seqs,
                         int seq_len, int n_heads, int head_dim, float scale)
{
    int64_t width = 3 * (int64_t)n_heads * head_dim;
    CUDA_REQUIRE(be, cuda_is_half(qkv.dtype) && out.dtype == qkv.dtype,
                 "attention_full: qkv and out must share one 16-bit dtype (got %s/%s)",
                 glm_dtype_name(qkv.dtype), glm_dtype_name(out.dtype));
    CUDA_REQUIRE(be, head_dim > 0 && head_dim <= 128 && head_dim % 2 == 0,
                 "attention_full: head_dim %d unsupported (even, <= 128)", head_dim);
    CUDA_REQUIRE(be, glm_tensor_cols(&qkv) == width &&
                         glm_tensor_rows(&qkv) == (int64_t)n_seqs * seq_len &&
                         glm_tensor_cols(&out) == (int64_t)n_heads * head_dim &&
                         glm_tensor_rows(&out) == (int64_t)n_seqs * seq_len,
                 "attention_full: qkv [%lld,%lld], out [%lld,%lld] for %d x %d, %d heads of %d",
                 (long long)glm_tensor_rows(&qkv), (long long)glm_tensor_cols(&qkv),
                 (long long)glm_tensor_rows(&out), (long long)glm_tensor_cols(&out), n_seqs,
                 seq_len, n_heads, head_dim);
    if (n_seqs == 0 || seq_len == 0) return;
#ifdef GLM4V_HAVE_CUDNN
    /* cuDNN's fused engine where the backend chose it at start and it has a plan for the shape */
    if (cuda_cudnn_attention_full(be, cuda_impl(be)->cudnn, out, qkv, n_seqs, seq_len, n_heads,
                                  head_dim, scale))
        return;
#endif
    attn_params p = {};
    p.q = qkv.data;
    p.k = qkv.data;
    /* k and v rows are found at column (kv_head_offset + head) * head_dim from their base:
     * k from the row start, v from one q-block further */
    p.v = (const char *)qkv.data + (int64_t)n_heads * head_dim * glm_dtype_size(qkv.dtype);
    p.out = out.data;
    p.q_stride = p.kv_stride = width;
    p.out_stride = (int64_t)n_heads * head_dim;
    p.head_dim = head_dim;
    p.group = 1;
    p.n_q_heads = n_heads;
    p.kv_head_offset = n_heads; /* k heads follow the q heads; v has its own base pointer */
    p.scale_log2 = scale * 1.4426950408889634f;
    p.vec_ok = vec_ok(qkv.data, out.data, qkv.data, width, p.out_stride, head_dim);
    p.seq_len = seq_len;
    p.n_splits = 1;
    p.split_keys = seq_len;
    if (p.vec_ok && head_dim >= 64) {
        attn_launch_fa2(be, qkv.dtype, &p, dim3(cuda_blocks(seq_len, FA_ROWS), n_heads, n_seqs),
                        false);
        return;
    }
    dim3 grid(cuda_blocks(seq_len, ATT_ROWS), n_heads, n_seqs);
    attn_launch_flash(be, qkv.dtype, &p, grid);
}

#ifdef GLM4V_HAVE_CUDNN
/* A prefill step whose sequences have no cached prefix (each one's keys are exactly its own rows
 * of qkv, whose k and v heads are what kv_store put in the cache: rotated in place) is plain
 * causal attention over qkv, which cuDNN's fused engine runs one sequence at a time. Only from
 * cudnn_min_prefill rows (a prompt length's plan is built the second time that length comes: see
 * seen_before in attention_cudnn.cu), never under graph capture (the
 * host's view of the batch is for launch sizing there), and for every sequence or none. Returns
 * true when it handled the step. */
static bool paged_prefill_cudnn(glm_backend *be, glm_tensor out, glm_tensor qkv,
                                const glm_attn_batch *batch, int n_q_heads, int n_kv_heads,
                                int head_dim, float scale)
{
    cuda_backend *cb = cuda_impl(be);
    if (!cb->cudnn || cb->capturing_key >= 0 || !batch->q_start_host || !batch->ctx_len_host)
        return false;
    for (int s = 0; s < batch->n_seqs; s++) {
        int q_len = batch->q_start_host[s + 1] - batch->q_start_host[s];
        if (q_len != batch->ctx_len_host[s] || q_len < cb->cudnn_min_prefill) return false;
    }
    int64_t width = (int64_t)(n_q_heads + 2 * n_kv_heads) * head_dim;
    int64_t out_width = (int64_t)n_q_heads * head_dim;
    size_t elem = glm_dtype_size(qkv.dtype);
    for (int s = 0; s < batch->n_seqs; s++) {
        int64_t row = batch->q_start_host[s];
        int q_len = (int)(batch->q_start_host[s + 1] - row);
        bool done = cuda_cudnn_attention_causal(
            be, cb->cudnn, (char *)out.data + row * out_width * elem,
            (const char *)qkv.data + row * width * elem, qkv.dtype, q_len, n_q_heads, n_kv_heads,
            head_dim, scale);
        if (!done) return false; /* fa2 runs the whole step again, overwriting what ran */
        if (be->status != GLM_OK) return true;
    }
    return true;
}
#endif

void cuda_attention_paged(glm_backend *be, glm_tensor out, glm_tensor qkv, glm_tensor k_cache,
                          glm_tensor v_cache, const glm_attn_batch *batch, int n_q_heads,
                          int n_kv_heads, int head_dim, float scale)
{
    cuda_backend *cb = cuda_impl(be);
    int64_t width = (int64_t)(n_q_heads + 2 * n_kv_heads) * head_dim;
    int64_t kv_width = (int64_t)n_kv_heads * head_dim;
    glm_dtype dt = qkv.dtype;
    CUDA_REQUIRE(be, cuda_is_half(dt) && k_cache.dtype == dt && v_cache.dtype == dt &&
                         out.dtype == dt,
                 "attention_paged: qkv, caches and out must share one 16-bit dtype "
                 "(got %s/%s/%s/%s)",
                 glm_dtype_name(dt), glm_dtype_name(k_cache.dtype),
                 glm_dtype_name(v_cache.dtype), glm_dtype_name(out.dtype));
    CUDA_REQUIRE(be, head_dim > 0 && head_dim <= 128 && head_dim % 2 == 0 && n_kv_heads > 0 &&
                         n_q_heads % n_kv_heads == 0,
                 "attention_paged: head_dim %d, %d q heads, %d kv heads unsupported", head_dim,
                 n_q_heads, n_kv_heads);
    CUDA_REQUIRE(be, glm_tensor_cols(&qkv) == width &&
                         glm_tensor_rows(&qkv) == batch->n_tokens &&
                         glm_tensor_rows(&out) == batch->n_tokens &&
                         glm_tensor_cols(&out) == (int64_t)n_q_heads * head_dim &&
                         glm_tensor_cols(&k_cache) == kv_width &&
                         glm_tensor_cols(&v_cache) == kv_width,
                 "attention_paged: qkv [%lld,%lld], out [%lld,%lld], cache width %lld, %d tokens",
                 (long long)glm_tensor_rows(&qkv), (long long)glm_tensor_cols(&qkv),
                 (long long)glm_tensor_rows(&out), (long long)glm_tensor_cols(&out),
                 (long long)glm_tensor_cols(&k_cache), batch->n_tokens);
    if (batch->n_seqs == 0 || batch->n_tokens == 0) return;
#ifdef GLM4V_HAVE_CUDNN
    if (paged_prefill_cudnn(be, out, qkv, batch, n_q_heads, n_kv_heads, head_dim, scale)) return;
#endif
    int group = n_q_heads / n_kv_heads;
    attn_params p = {};
    p.q = qkv.data;
    p.k = k_cache.data;
    p.v = v_cache.data;
    p.out = out.data;
    p.q_stride = width;
    p.kv_stride = kv_width;
    p.out_stride = (int64_t)n_q_heads * head_dim;
    p.head_dim = head_dim;
    p.group = group;
    p.n_q_heads = n_q_heads;
    p.scale_log2 = scale * 1.4426950408889634f;
    p.vec_ok = vec_ok(qkv.data, k_cache.data, v_cache.data, width, kv_width, head_dim);
    p.paged = 1;
    p.q_start = batch->q_start;
    p.ctx_len = batch->ctx_len;
    p.block_table = batch->block_table;
    p.block_size = batch->block_size;
    p.max_blocks_per_seq = batch->max_blocks_per_seq;

    int max_ctx = batch->max_ctx_len > 0 ? batch->max_ctx_len : 1;
    int64_t part_rows = (int64_t)batch->n_tokens * n_q_heads;
    auto partials = [&](int n_splits) -> bool {
        size_t o_bytes = (size_t)n_splits * part_rows * head_dim * sizeof(float);
        size_t ml_bytes = (size_t)n_splits * part_rows * 2 * sizeof(float);
        char *scratch = (char *)cuda_scratch(be, o_bytes + ml_bytes);
        if (!scratch) return false;
        p.part_o = (float *)scratch;
        p.part_ml = (float *)(scratch + o_bytes);
        p.part_rows = part_rows; /* every split block writes all its rows, even with no keys */
        return true;
    };
    auto combine = [&]() {
        if (p.n_splits > 1 && be->status == GLM_OK) {
            attn_launch_combine(be, dt, p.out, p.part_o, p.part_ml, part_rows, p.n_splits,
                                head_dim);
        }
    };

    /* Decode (every q_len 1): the pipelined GQA decode kernel. The grid comes from n_seqs and
     * max_ctx_len only, so a captured graph stays valid for any ctx_len <= max_ctx_len. */
    if (batch->max_q_len == 1 && p.vec_ok && group <= 16 && head_dim >= 16) {
        int64_t pairs = (int64_t)batch->n_seqs * n_kv_heads;
        int per_sm = head_dim <= 64 ? 4 : 2; /* resident decode blocks per SM (shared memory) */
        int64_t cap = (int64_t)per_sm * cb->n_sms;
        int n_splits = (int)(cap / pairs);
        int min_keys = DEC_WARPS * DEC_KEYS; /* one tile per warp */
        int max_useful = (max_ctx + min_keys - 1) / min_keys;
        if (n_splits > max_useful) n_splits = max_useful;
        if (n_splits > DEC_MAX_SPLITS) n_splits = DEC_MAX_SPLITS;
        if (n_splits < 1) n_splits = 1;
        p.n_splits = n_splits; /* split sizes follow each sequence's ctx_len on the device */
        if (n_splits > 1 && !partials(n_splits)) return;
        dim3 grid((unsigned)n_splits, n_kv_heads, (unsigned)batch->n_seqs);
        attn_launch_decode(be, dt, &p, grid, head_dim <= 64 ? 64 : 128);
        if (n_splits > 1 && be->status == GLM_OK) {
            attn_launch_decode_combine(be, dt, p.out, p.part_o, p.part_ml, p.ctx_len, part_rows,
                                       n_splits, n_q_heads, head_dim);
        }
        return;
    }

    /* Split the keys when the row tiles alone cannot fill the GPU (short prefill). */
    bool fa2 = p.vec_ok && head_dim >= 64;
    int tile_rows = fa2 ? FA_ROWS : ATT_ROWS;
    int64_t row_tiles = cuda_blocks((int64_t)batch->max_q_len * group, tile_rows);
    int64_t blocks = row_tiles * n_kv_heads * batch->n_seqs;
    int n_splits = (int)((2 * (int64_t)cb->n_sms + blocks - 1) / blocks);
    int max_useful = (max_ctx + 255) / 256; /* at least 256 keys per split */
    if (n_splits > max_useful) n_splits = max_useful;
    if (n_splits > ATT_MAX_SPLITS) n_splits = ATT_MAX_SPLITS;
    if (n_splits < 1) n_splits = 1;
    int split_keys = (max_ctx + n_splits - 1) / n_splits;
    split_keys = (split_keys + ATT_KEYS - 1) / ATT_KEYS * ATT_KEYS;
    n_splits = (max_ctx + split_keys - 1) / split_keys;
    p.n_splits = n_splits;
    p.split_keys = split_keys;
    if (n_splits > 1 && !partials(n_splits)) return;
    dim3 grid((unsigned)row_tiles, n_kv_heads, (unsigned)(batch->n_seqs * n_splits));
    if (fa2)
        attn_launch_fa2(be, dt, &p, grid, true);
    else
        attn_launch_flash(be, dt, &p, grid);
    combine();
}

