/* Fused scaled-dot-product attention through cuDNN's backend graph API (see attention_cudnn.h).
 *
 * The graph is the one cuDNN's fused flash-attention engines recognise (the same one the cuDNN
 * frontend lowers its SDPA node to):
 *   S = Q K^T (fp32) -> S * scale -> [causal: select(row >= col, S, -inf)] -> softmax as
 *   max / sub / exp / sum / div (fp32, the probabilities rounded to the storage type) -> O = P V,
 *   with the row statistics max + log(sum) written out as well for causal attention (the form
 *   cuDNN 9.19 has an engine for: build_plan); bidirectional attention uses the single SDPA_FWD
 *   operation where cuDNN has it (>= 9.13.1). Grouped-query K/V heads need no copy: K and V
 *   simply have fewer heads than Q.
 * No S x S tensor exists in memory: every tensor between the two matmuls is virtual, and the
 * engine runs the whole chain as one kernel.
 *
 * Q, K and V are read in place from the fused qkv rows through strides: head h of token t sits
 * at column h * d of row t, so Q is [b, h, s, d] with strides [s * width, d, width, 1], and K is
 * given transposed ([b, h, d, s], strides [s * width, d, 1, width]) as the backend's matmul
 * wants. Nothing is copied or transposed in memory. */
#include "kernels/cuda/attention_cudnn.h"
#include "kernels/cuda/common.cuh"

#include <cudnn.h>
#include <math.h>
#include <nvrtc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SDPA_PLAN_CACHE 64
/* shapes met once and run by the fallback; a plan is built when one comes back (see seen_before) */
#define SDPA_SEEN 128
#define SDPA_MAX_OWNED 96

/* The shape a plan was built for. */
typedef struct sdpa_key {
    int b, h_q, h_kv, s, d, causal;
    glm_dtype dtype;
} sdpa_key;

typedef struct sdpa_plan {
    sdpa_key key;
    bool ok; /* false: cuDNN has no engine for this shape, use the fallback */
    cudnnBackendDescriptor_t plan;
    int64_t workspace_bytes;
    /* the graph also writes the softmax statistics (f32, one per query row and head) after the
     * workspace: cuDNN 9.19 has a fused engine for the causal decomposed graph only in this
     * form (see build_plan) */
    bool with_stats;
    const char *variant; /* which graph the plan was built from, for the log */
    /* every descriptor the plan was built from, destroyed with it (the plan may refer to them) */
    cudnnBackendDescriptor_t owned[SDPA_MAX_OWNED];
    int n_owned;
    uint64_t last_use;
} sdpa_plan;

struct cuda_cudnn {
    cudnnHandle_t handle;
    char description[64];
    bool log;    /* GLM4V_ATTENTION_LOG: one stderr line per plan built */
    bool strict; /* GLM4V_ATTENTION=cudnn: a shape of valid layout that cuDNN refuses is an error */
    sdpa_plan plans[SDPA_PLAN_CACHE];
    int n_plans;
    uint64_t clock;
    sdpa_key seen[SDPA_SEEN]; /* a ring: the oldest shape met once is forgotten first */
    int n_seen, next_seen;
};

/* ---- graph building: every failure means "no plan", so the builder collects the first one ---- */

typedef struct sdpa_builder {
    sdpa_plan *plan;
    cudnnStatus_t status;
    const char *where; /* the call that failed, for the fallback message */
    char reason[256];  /* cuDNN's own words for the first refusal (cudnnGetLastErrorString) */
} sdpa_builder;

#define BUILD_CHECK(bd, call)                                                                      \
    do {                                                                                           \
        if ((bd)->status == CUDNN_STATUS_SUCCESS) {                                                \
            cudnnStatus_t st_ = (call);                                                            \
            if (st_ != CUDNN_STATUS_SUCCESS) {                                                     \
                (bd)->status = st_;                                                                \
                (bd)->where = #call;                                                               \
            }                                                                                      \
        }                                                                                          \
    } while (0)

static cudnnBackendDescriptor_t new_desc(sdpa_builder *bd, cudnnBackendDescriptorType_t type)
{
    cudnnBackendDescriptor_t d = NULL;
    if (bd->status != CUDNN_STATUS_SUCCESS) return NULL;
    if (bd->plan->n_owned == SDPA_MAX_OWNED) {
        bd->status = CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED;
        bd->where = "descriptor list full";
        return NULL;
    }
    BUILD_CHECK(bd, cudnnBackendCreateDescriptor(type, &d));
    if (d) bd->plan->owned[bd->plan->n_owned++] = d;
    return d;
}

static void set_attr(sdpa_builder *bd, cudnnBackendDescriptor_t d, cudnnBackendAttributeName_t name,
                     cudnnBackendAttributeType_t type, int64_t count, const void *value)
{
    BUILD_CHECK(bd, cudnnBackendSetAttribute(d, name, type, count, value));
}

static void set_desc(sdpa_builder *bd, cudnnBackendDescriptor_t d, cudnnBackendAttributeName_t name,
                     cudnnBackendDescriptor_t value)
{
    set_attr(bd, d, name, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &value);
}

/* A 4-d tensor; by_value tensors are host scalars passed at execution. */
static cudnnBackendDescriptor_t tensor4(sdpa_builder *bd, int64_t uid, cudnnDataType_t type,
                                        const int64_t *dims, const int64_t *strides,
                                        bool is_virtual, bool by_value)
{
    cudnnBackendDescriptor_t t = new_desc(bd, CUDNN_BACKEND_TENSOR_DESCRIPTOR);
    int64_t align = 16;
    set_attr(bd, t, CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid);
    set_attr(bd, t, CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &type);
    set_attr(bd, t, CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, 4, dims);
    set_attr(bd, t, CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, 4, strides);
    set_attr(bd, t, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &align);
    set_attr(bd, t, CUDNN_ATTR_TENSOR_IS_VIRTUAL, CUDNN_TYPE_BOOLEAN, 1, &is_virtual);
    if (by_value) set_attr(bd, t, CUDNN_ATTR_TENSOR_IS_BY_VALUE, CUDNN_TYPE_BOOLEAN, 1, &by_value);
    if (t) BUILD_CHECK(bd, cudnnBackendFinalize(t));
    return t;
}

/* A virtual tensor of dims with packed (row-major) strides. */
static cudnnBackendDescriptor_t virtual4(sdpa_builder *bd, int64_t uid, cudnnDataType_t type,
                                         int64_t n0, int64_t n1, int64_t n2, int64_t n3)
{
    int64_t dims[4] = {n0, n1, n2, n3};
    int64_t strides[4] = {n1 * n2 * n3, n2 * n3, n3, 1};
    return tensor4(bd, uid, type, dims, strides, true, false);
}

static cudnnBackendDescriptor_t scalar(sdpa_builder *bd, int64_t uid, cudnnDataType_t type)
{
    int64_t ones[4] = {1, 1, 1, 1};
    return tensor4(bd, uid, type, ones, ones, false, true);
}

static cudnnBackendDescriptor_t op_matmul(sdpa_builder *bd, cudnnBackendDescriptor_t a,
                                          cudnnBackendDescriptor_t b, cudnnBackendDescriptor_t c)
{
    cudnnDataType_t f32 = CUDNN_DATA_FLOAT;
    cudnnBackendDescriptor_t mm = new_desc(bd, CUDNN_BACKEND_MATMUL_DESCRIPTOR);
    set_attr(bd, mm, CUDNN_ATTR_MATMUL_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &f32);
    if (mm) BUILD_CHECK(bd, cudnnBackendFinalize(mm));
    cudnnBackendDescriptor_t op = new_desc(bd, CUDNN_BACKEND_OPERATION_MATMUL_DESCRIPTOR);
    set_desc(bd, op, CUDNN_ATTR_OPERATION_MATMUL_ADESC, a);
    set_desc(bd, op, CUDNN_ATTR_OPERATION_MATMUL_BDESC, b);
    set_desc(bd, op, CUDNN_ATTR_OPERATION_MATMUL_CDESC, c);
    set_desc(bd, op, CUDNN_ATTR_OPERATION_MATMUL_DESC, mm);
    if (op) BUILD_CHECK(bd, cudnnBackendFinalize(op));
    return op;
}

/* y = mode(x[, b[, t]]); axis >= 0 only for GEN_INDEX. */
static cudnnBackendDescriptor_t op_pointwise(sdpa_builder *bd, cudnnPointwiseMode_t mode,
                                             cudnnDataType_t math, cudnnBackendDescriptor_t x,
                                             cudnnBackendDescriptor_t b, cudnnBackendDescriptor_t t,
                                             cudnnBackendDescriptor_t y, int64_t axis)
{
    cudnnBackendDescriptor_t pw = new_desc(bd, CUDNN_BACKEND_POINTWISE_DESCRIPTOR);
    set_attr(bd, pw, CUDNN_ATTR_POINTWISE_MODE, CUDNN_TYPE_POINTWISE_MODE, 1, &mode);
    set_attr(bd, pw, CUDNN_ATTR_POINTWISE_MATH_PREC, CUDNN_TYPE_DATA_TYPE, 1, &math);
    if (axis >= 0) set_attr(bd, pw, CUDNN_ATTR_POINTWISE_AXIS, CUDNN_TYPE_INT64, 1, &axis);
    if (pw) BUILD_CHECK(bd, cudnnBackendFinalize(pw));
    cudnnBackendDescriptor_t op = new_desc(bd, CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR);
    set_desc(bd, op, CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR, pw);
    set_desc(bd, op, CUDNN_ATTR_OPERATION_POINTWISE_XDESC, x);
    if (b) set_desc(bd, op, CUDNN_ATTR_OPERATION_POINTWISE_BDESC, b);
    if (t) set_desc(bd, op, CUDNN_ATTR_OPERATION_POINTWISE_TDESC, t);
    set_desc(bd, op, CUDNN_ATTR_OPERATION_POINTWISE_YDESC, y);
    float one = 1.0f;
    set_attr(bd, op, CUDNN_ATTR_OPERATION_POINTWISE_ALPHA1, CUDNN_TYPE_FLOAT, 1, &one);
    set_attr(bd, op, CUDNN_ATTR_OPERATION_POINTWISE_ALPHA2, CUDNN_TYPE_FLOAT, 1, &one);
    if (op) BUILD_CHECK(bd, cudnnBackendFinalize(op));
    return op;
}

static cudnnBackendDescriptor_t op_reduce(sdpa_builder *bd, cudnnReduceTensorOp_t mode,
                                          cudnnBackendDescriptor_t x, cudnnBackendDescriptor_t y)
{
    cudnnDataType_t f32 = CUDNN_DATA_FLOAT;
    cudnnBackendDescriptor_t rd = new_desc(bd, CUDNN_BACKEND_REDUCTION_DESCRIPTOR);
    set_attr(bd, rd, CUDNN_ATTR_REDUCTION_OPERATOR, CUDNN_TYPE_REDUCTION_OPERATOR_TYPE, 1, &mode);
    set_attr(bd, rd, CUDNN_ATTR_REDUCTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &f32);
    if (rd) BUILD_CHECK(bd, cudnnBackendFinalize(rd));
    cudnnBackendDescriptor_t op = new_desc(bd, CUDNN_BACKEND_OPERATION_REDUCTION_DESCRIPTOR);
    set_desc(bd, op, CUDNN_ATTR_OPERATION_REDUCTION_XDESC, x);
    set_desc(bd, op, CUDNN_ATTR_OPERATION_REDUCTION_YDESC, y);
    set_desc(bd, op, CUDNN_ATTR_OPERATION_REDUCTION_DESC, rd);
    if (op) BUILD_CHECK(bd, cudnnBackendFinalize(op));
    return op;
}

/* Tensor ids of the variant pack. */
enum { UID_Q = 1, UID_K, UID_V, UID_O, UID_SCALE, UID_NEG_INF, UID_STATS, UID_VIRTUAL = 100 };

/* Row width of the fused qkv rows, in elements. */
static int64_t qkv_width(const sdpa_key *k)
{
    return (int64_t)(k->h_q + 2 * k->h_kv) * k->d;
}

static void finish_plan(cuda_cudnn *c, sdpa_builder *bd, cudnnBackendDescriptor_t *ops, int n_ops);
static void destroy_plan(sdpa_plan *p);

/* The decomposed graph (matmul, pointwise, reductions, matmul) for key, then its plan. */
static void build_composite(cuda_cudnn *c, sdpa_builder *bd)
{
    const sdpa_key *k = &bd->plan->key;
    int64_t b = k->b, hq = k->h_q, hk = k->h_kv, s = k->s, d = k->d, w = qkv_width(k);
    cudnnDataType_t io = k->dtype == GLM_BF16 ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_HALF;
    cudnnDataType_t f32 = CUDNN_DATA_FLOAT;
    int64_t uid = UID_VIRTUAL;

    int64_t q_dims[4] = {b, hq, s, d}, q_strides[4] = {s * w, d, w, 1};
    int64_t kt_dims[4] = {b, hk, d, s}, kt_strides[4] = {s * w, d, 1, w};
    int64_t v_dims[4] = {b, hk, s, d}, v_strides[4] = {s * w, d, w, 1};
    int64_t o_dims[4] = {b, hq, s, d}, o_strides[4] = {s * hq * d, d, hq * d, 1};
    cudnnBackendDescriptor_t tq = tensor4(bd, UID_Q, io, q_dims, q_strides, false, false);
    cudnnBackendDescriptor_t tk = tensor4(bd, UID_K, io, kt_dims, kt_strides, false, false);
    cudnnBackendDescriptor_t tv = tensor4(bd, UID_V, io, v_dims, v_strides, false, false);
    cudnnBackendDescriptor_t to = tensor4(bd, UID_O, io, o_dims, o_strides, false, false);
    cudnnBackendDescriptor_t tscale = scalar(bd, UID_SCALE, f32);

    cudnnBackendDescriptor_t ops[16];
    int n_ops = 0;
    cudnnBackendDescriptor_t scores = virtual4(bd, uid++, f32, b, hq, s, s);
    ops[n_ops++] = op_matmul(bd, tq, tk, scores);
    cudnnBackendDescriptor_t scaled = virtual4(bd, uid++, f32, b, hq, s, s);
    ops[n_ops++] = op_pointwise(bd, CUDNN_POINTWISE_MUL, f32, scores, tscale, NULL, scaled, -1);
    if (k->causal) {
        /* keep key j for query i when i >= j, else -inf (queries and keys start together) */
        cudnnBackendDescriptor_t row = virtual4(bd, uid++, CUDNN_DATA_INT32, b, hq, s, s);
        cudnnBackendDescriptor_t col = virtual4(bd, uid++, CUDNN_DATA_INT32, b, hq, s, s);
        cudnnBackendDescriptor_t keep = virtual4(bd, uid++, CUDNN_DATA_BOOLEAN, b, hq, s, s);
        cudnnBackendDescriptor_t masked = virtual4(bd, uid++, f32, b, hq, s, s);
        cudnnBackendDescriptor_t neg_inf = scalar(bd, UID_NEG_INF, f32);
        ops[n_ops++] = op_pointwise(bd, CUDNN_POINTWISE_GEN_INDEX, f32, scaled, NULL, NULL, row, 2);
        ops[n_ops++] = op_pointwise(bd, CUDNN_POINTWISE_GEN_INDEX, f32, scaled, NULL, NULL, col, 3);
        ops[n_ops++] =
            op_pointwise(bd, CUDNN_POINTWISE_CMP_GE, CUDNN_DATA_BOOLEAN, row, col, NULL, keep, -1);
        ops[n_ops++] =
            op_pointwise(bd, CUDNN_POINTWISE_BINARY_SELECT, f32, scaled, neg_inf, keep, masked, -1);
        scaled = masked;
    }
    cudnnBackendDescriptor_t row_max = virtual4(bd, uid++, f32, b, hq, s, 1);
    ops[n_ops++] = op_reduce(bd, CUDNN_REDUCE_TENSOR_MAX, scaled, row_max);
    cudnnBackendDescriptor_t centred = virtual4(bd, uid++, f32, b, hq, s, s);
    ops[n_ops++] = op_pointwise(bd, CUDNN_POINTWISE_SUB, f32, scaled, row_max, NULL, centred, -1);
    cudnnBackendDescriptor_t expd = virtual4(bd, uid++, f32, b, hq, s, s);
    ops[n_ops++] = op_pointwise(bd, CUDNN_POINTWISE_EXP, f32, centred, NULL, NULL, expd, -1);
    cudnnBackendDescriptor_t row_sum = virtual4(bd, uid++, f32, b, hq, s, 1);
    ops[n_ops++] = op_reduce(bd, CUDNN_REDUCE_TENSOR_ADD, expd, row_sum);
    if (bd->plan->with_stats) {
        /* stats = max + log(sum), the log-sum-exp of each row ([b, h, s, 1], f32) */
        int64_t st_dims[4] = {b, hq, s, 1}, st_strides[4] = {hq * s, s, 1, 1};
        cudnnBackendDescriptor_t log_sum = virtual4(bd, uid++, f32, b, hq, s, 1);
        cudnnBackendDescriptor_t stats =
            tensor4(bd, UID_STATS, f32, st_dims, st_strides, false, false);
        ops[n_ops++] = op_pointwise(bd, CUDNN_POINTWISE_LOG, f32, row_sum, NULL, NULL, log_sum, -1);
        ops[n_ops++] = op_pointwise(bd, CUDNN_POINTWISE_ADD, f32, row_max, log_sum, NULL, stats, -1);
    }
    /* the probabilities take the storage type: the second matmul's operand type */
    cudnnBackendDescriptor_t probs = virtual4(bd, uid++, io, b, hq, s, s);
    ops[n_ops++] = op_pointwise(bd, CUDNN_POINTWISE_DIV, f32, expd, row_sum, NULL, probs, -1);
    ops[n_ops++] = op_matmul(bd, probs, tv, to);
    finish_plan(c, bd, ops, n_ops);
}

#if CUDNN_VERSION >= 91301
/* cuDNN 9.13.1 and later: the whole attention as one SDPA_FWD operation (what the cuDNN frontend
 * prefers there when nothing but Q, K, V and the scale is asked for). K is given as stored
 * ([b, h, s, d]), not transposed. */
static void build_unified(cuda_cudnn *c, sdpa_builder *bd)
{
    const sdpa_key *k = &bd->plan->key;
    int64_t b = k->b, hq = k->h_q, hk = k->h_kv, s = k->s, d = k->d, w = qkv_width(k);
    cudnnDataType_t io = k->dtype == GLM_BF16 ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_HALF;
    int64_t q_dims[4] = {b, hq, s, d}, q_strides[4] = {s * w, d, w, 1};
    int64_t kv_dims[4] = {b, hk, s, d}, kv_strides[4] = {s * w, d, w, 1};
    int64_t o_dims[4] = {b, hq, s, d}, o_strides[4] = {s * hq * d, d, hq * d, 1};
    cudnnBackendDescriptor_t tq = tensor4(bd, UID_Q, io, q_dims, q_strides, false, false);
    cudnnBackendDescriptor_t tk = tensor4(bd, UID_K, io, kv_dims, kv_strides, false, false);
    cudnnBackendDescriptor_t tv = tensor4(bd, UID_V, io, kv_dims, kv_strides, false, false);
    cudnnBackendDescriptor_t to = tensor4(bd, UID_O, io, o_dims, o_strides, false, false);
    cudnnBackendDescriptor_t tscale = scalar(bd, UID_SCALE, CUDNN_DATA_FLOAT);
    cudnnBackendDescriptor_t op =
        new_desc(bd, (cudnnBackendDescriptorType_t)CUDNN_BACKEND_OPERATION_SDPA_FWD_DESCRIPTOR);
    set_desc(bd, op, CUDNN_ATTR_OPERATION_SDPA_FWD_QDESC, tq);
    set_desc(bd, op, CUDNN_ATTR_OPERATION_SDPA_FWD_KDESC, tk);
    set_desc(bd, op, CUDNN_ATTR_OPERATION_SDPA_FWD_VDESC, tv);
    set_desc(bd, op, CUDNN_ATTR_OPERATION_SDPA_FWD_ODESC, to);
    set_desc(bd, op, CUDNN_ATTR_OPERATION_SDPA_FWD_SCALEDESC, tscale);
    if (op) BUILD_CHECK(bd, cudnnBackendFinalize(op));
    finish_plan(c, bd, &op, 1);
}
#endif

/* The plan for key, from the first graph form an engine takes. Bidirectional: the SDPA_FWD
 * operation (cuDNN >= 9.13.1), then the decomposed graphs. Causal has no SDPA_FWD form before
 * cuDNN 9.21 (its mask is a subgraph attribute there), so the decomposed graph that also writes
 * the softmax statistics comes first: cuDNN 9.19 (H200, 2026-12-03) refuses the inference-only
 * causal graph in its attention pattern matcher ("Dropout set of ops not configured correctly",
 * from tag_mha_graph, for every engine) and takes this one. The plain decomposed graph stays as
 * the last resort for releases that take it. Each refusal is printed under GLM4V_ATTENTION_LOG
 * or GLM4V_ATTENTION=cudnn; bd->status stays set when no form is taken. */
static void build_plan(cuda_cudnn *c, sdpa_builder *bd)
{
    enum { UNIFIED, COMPOSITE_STATS, COMPOSITE, N_FORMS };
    static const char *const names[N_FORMS] = {"SDPA_FWD operation",
                                               "decomposed graph with statistics",
                                               "decomposed graph"};
    const sdpa_key *k = &bd->plan->key;
    for (int form = 0; form < N_FORMS; form++) {
        if (form == UNIFIED) {
#if CUDNN_VERSION >= 91301
            if (k->causal || cudnnGetVersion() < 91301) continue;
#else
            continue;
#endif
        }
        bd->plan->with_stats = form == COMPOSITE_STATS;
        bd->plan->variant = names[form];
#if CUDNN_VERSION >= 91301
        if (form == UNIFIED)
            build_unified(c, bd);
        else
#endif
            build_composite(c, bd);
        if (bd->status == CUDNN_STATUS_SUCCESS) return;
        if (c->log || c->strict)
            fprintf(stderr,
                    "glm4v cuda: cudnn refused the %s for %d/%d heads, %d rows%s (%s: %s; %s)\n",
                    names[form], k->h_q, k->h_kv, k->s, k->causal ? ", causal" : "",
                    bd->where ? bd->where : "?", cudnnGetErrorString(bd->status),
                    bd->reason[0] ? bd->reason : "no reason given");
        if (form == N_FORMS - 1) return;
        destroy_plan(bd->plan);
        bd->status = CUDNN_STATUS_SUCCESS;
        bd->where = NULL;
        bd->reason[0] = 0;
    }
}

/* The first execution plan that finalizes among the engine configurations that heuristics mode
 * `mode` offers for graph (at most 16). Returns true when one did; else keeps the first refusal's
 * words from cuDNN in bd->reason. */
static bool try_heuristics(cuda_cudnn *c, sdpa_builder *bd, cudnnBackendDescriptor_t graph,
                           cudnnBackendHeurMode_t mode)
{
    cudnnBackendDescriptor_t heur = new_desc(bd, CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR);
    set_desc(bd, heur, CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, graph);
    set_attr(bd, heur, CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &mode);
    if (heur) BUILD_CHECK(bd, cudnnBackendFinalize(heur));
    int64_t n_cfgs = 0;
    BUILD_CHECK(bd, cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS,
                                             CUDNN_TYPE_BACKEND_DESCRIPTOR, 0, &n_cfgs, NULL));
    if (bd->status != CUDNN_STATUS_SUCCESS) return false;
    if (n_cfgs > 16) n_cfgs = 16;
    if (n_cfgs <= 0) return false;
    cudnnBackendDescriptor_t cfgs[16];
    for (int64_t i = 0; i < n_cfgs; i++)
        cfgs[i] = new_desc(bd, CUDNN_BACKEND_ENGINECFG_DESCRIPTOR);
    int64_t got = 0;
    BUILD_CHECK(bd, cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS,
                                             CUDNN_TYPE_BACKEND_DESCRIPTOR, n_cfgs, &got, cfgs));
    if (bd->status != CUDNN_STATUS_SUCCESS) return false;
    /* the heuristics rank the engines; the first that builds for this graph wins. The reason
     * kept when none does is the best-ranked engine's (the fused one) */
    for (int64_t i = 0; i < got; i++) {
        cudnnBackendDescriptor_t plan = new_desc(bd, CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR);
        set_attr(bd, plan, CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &c->handle);
        set_desc(bd, plan, CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, cfgs[i]);
        if (bd->status != CUDNN_STATUS_SUCCESS) return false;
        cudnnStatus_t st = cudnnBackendFinalize(plan);
        if (st != CUDNN_STATUS_SUCCESS) {
            if (!bd->reason[0]) {
                char msg[200] = "";
                cudnnGetLastErrorString(msg, sizeof(msg));
                snprintf(bd->reason, sizeof(bd->reason), "heuristics mode %d, engine %lld: %s",
                         (int)mode, (long long)i, msg[0] ? msg : cudnnGetErrorString(st));
            }
            continue;
        }
        int64_t ws = 0, n = 0;
        BUILD_CHECK(bd, cudnnBackendGetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE,
                                                 CUDNN_TYPE_INT64, 1, &n, &ws));
        if (bd->status != CUDNN_STATUS_SUCCESS) return false;
        bd->plan->plan = plan;
        bd->plan->workspace_bytes = ws;
        return true;
    }
    return false;
}

/* The operation graph of ops, then the first execution plan that finalizes: among the engines
 * heuristics mode A ranks, then the fallback list. */
static void finish_plan(cuda_cudnn *c, sdpa_builder *bd, cudnnBackendDescriptor_t *ops, int n_ops)
{
    if (bd->status != CUDNN_STATUS_SUCCESS) return;
    cudnnBackendDescriptor_t graph = new_desc(bd, CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR);
    set_attr(bd, graph, CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR, n_ops, ops);
    set_attr(bd, graph, CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, &c->handle);
    if (graph) BUILD_CHECK(bd, cudnnBackendFinalize(graph));
    if (bd->status != CUDNN_STATUS_SUCCESS) {
        char msg[200] = "";
        cudnnGetLastErrorString(msg, sizeof(msg));
        snprintf(bd->reason, sizeof(bd->reason), "graph: %s", msg);
        return;
    }
    if (try_heuristics(c, bd, graph, CUDNN_HEUR_MODE_A)) return;
    if (bd->status == CUDNN_STATUS_SUCCESS && try_heuristics(c, bd, graph, CUDNN_HEUR_MODE_FALLBACK))
        return;
    if (bd->status != CUDNN_STATUS_SUCCESS) return;
    bd->status = CUDNN_STATUS_NOT_SUPPORTED;
    bd->where = "no engine configuration finalizes";
}

static void destroy_plan(sdpa_plan *p)
{
    for (int i = p->n_owned - 1; i >= 0; i--)
        cudnnBackendDestroyDescriptor(p->owned[i]);
    p->n_owned = 0;
    p->plan = NULL;
}

static bool same_key(const sdpa_key *a, const sdpa_key *b)
{
    return a->b == b->b && a->h_q == b->h_q && a->h_kv == b->h_kv && a->s == b->s && a->d == b->d &&
           a->causal == b->causal && a->dtype == b->dtype;
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* Whether a plan for key is worth building now. Building one costs 30-560 ms (cuDNN compiles its
 * engine through NVRTC) and saves well under a millisecond a call, so it pays only for a shape
 * that recurs: the first time a shape comes, the fallback runs it and the shape is remembered;
 * the plan is built when it comes again. A one-off prompt (glm4v-run, a chat with a new length)
 * never stalls its step on a build, while a server's or a sweep's recurring shapes (the vision
 * tower's, an image prompt's length) get the fused engine from their second use. Strict mode
 * (GLM4V_ATTENTION=cudnn, the tests) builds at once. */
static bool seen_before(cuda_cudnn *c, const sdpa_key *key)
{
    if (c->strict) return true;
    for (int i = 0; i < c->n_plans; i++)
        if (same_key(&c->plans[i].key, key)) return true;
    for (int i = 0; i < c->n_seen; i++)
        if (same_key(&c->seen[i], key)) return true;
    c->seen[c->next_seen] = *key;
    c->next_seen = (c->next_seen + 1) % SDPA_SEEN;
    if (c->n_seen < SDPA_SEEN) c->n_seen++;
    return false;
}

/* The cached plan for key, built on first use; the least recently used one makes room. A shape
 * cuDNN refuses is cached too (ok = false), so the refusal is printed and paid for once. */
static sdpa_plan *find_plan(cuda_cudnn *c, const sdpa_key *key)
{
    c->clock++;
    for (int i = 0; i < c->n_plans; i++) {
        if (same_key(&c->plans[i].key, key)) {
            c->plans[i].last_use = c->clock;
            return &c->plans[i];
        }
    }
    sdpa_plan *p;
    if (c->n_plans < SDPA_PLAN_CACHE) {
        p = &c->plans[c->n_plans++];
    } else {
        p = &c->plans[0];
        for (int i = 1; i < SDPA_PLAN_CACHE; i++)
            if (c->plans[i].last_use < p->last_use) p = &c->plans[i];
        destroy_plan(p);
    }
    memset(p, 0, sizeof(*p));
    p->key = *key;
    p->last_use = c->clock;
    sdpa_builder bd;
    memset(&bd, 0, sizeof(bd));
    bd.plan = p;
    bd.status = CUDNN_STATUS_SUCCESS;
    double t0 = now_ms();
    build_plan(c, &bd);
    p->ok = bd.status == CUDNN_STATUS_SUCCESS;
    if (!p->ok) {
        fprintf(stderr,
                "glm4v cuda: cudnn has no attention plan for b %d, %d/%d heads, %d rows, dim %d, "
                "%s%s (%s: %s; %s); using fa2 for it\n",
                key->b, key->h_q, key->h_kv, key->s, key->d, glm_dtype_name(key->dtype),
                key->causal ? ", causal" : "", bd.where ? bd.where : "?",
                cudnnGetErrorString(bd.status), bd.reason[0] ? bd.reason : "no reason given");
        destroy_plan(p);
    } else if (c->log) {
        fprintf(stderr,
                "glm4v cuda: cudnn attention plan b %d, %d/%d heads, %d rows, dim %d, %s%s: "
                "%s, built in %.1f ms, workspace %lld bytes\n",
                key->b, key->h_q, key->h_kv, key->s, key->d, glm_dtype_name(key->dtype),
                key->causal ? ", causal" : "", p->variant, now_ms() - t0,
                (long long)p->workspace_bytes);
    }
    return p;
}

/* Runs plan p on the fused qkv rows at qkv (q heads first, then k heads, then v heads). */
static void run_plan(glm_backend *be, cuda_cudnn *c, const sdpa_plan *p, void *out, const void *qkv,
                     float scale)
{
    const sdpa_key *k = &p->key;
    size_t elem = glm_dtype_size(k->dtype);
    const char *base = (const char *)qkv;
    /* one scratch block: the engine's workspace, then the statistics when the graph writes them */
    size_t ws = ((size_t)p->workspace_bytes + 255) & ~(size_t)255;
    size_t stats_bytes = p->with_stats ? (size_t)k->b * k->h_q * k->s * sizeof(float) : 0;
    void *workspace = NULL;
    if (ws + stats_bytes > 0) {
        workspace = cuda_scratch(be, ws + stats_bytes);
        if (!workspace) return;
    }
    float neg_inf = -INFINITY;
    void *ptrs[7] = {(void *)base,
                     (void *)(base + (size_t)k->h_q * k->d * elem),
                     (void *)(base + (size_t)(k->h_q + k->h_kv) * k->d * elem),
                     out,
                     &scale,
                     &neg_inf,
                     (char *)workspace + ws};
    int64_t uids[7] = {UID_Q, UID_K, UID_V, UID_O, UID_SCALE, UID_NEG_INF, UID_STATS};
    int64_t n = 5;
    if (k->causal) n = 6;
    if (p->with_stats) { /* the statistics' pointer goes where the variant pack's list ends */
        ptrs[n] = ptrs[6];
        uids[n] = UID_STATS;
        n++;
    }

    cudnnBackendDescriptor_t pack = NULL;
    cudnnStatus_t st = cudnnBackendCreateDescriptor(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR, &pack);
    if (st == CUDNN_STATUS_SUCCESS)
        st = cudnnBackendSetAttribute(pack, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, n,
                                      uids);
    if (st == CUDNN_STATUS_SUCCESS)
        st = cudnnBackendSetAttribute(pack, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS,
                                      CUDNN_TYPE_VOID_PTR, n, ptrs);
    if (st == CUDNN_STATUS_SUCCESS)
        st = cudnnBackendSetAttribute(pack, CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR,
                                      1, &workspace);
    if (st == CUDNN_STATUS_SUCCESS) st = cudnnBackendFinalize(pack);
    if (st == CUDNN_STATUS_SUCCESS) st = cudnnBackendExecute(c->handle, p->plan, pack);
    if (pack) cudnnBackendDestroyDescriptor(pack);
    if (st != CUDNN_STATUS_SUCCESS)
        glm_backend_fail(be, GLM_ERR_BACKEND, "cudnn attention (b %d, %d rows, dim %d): %s", k->b,
                         k->s, k->d, cudnnGetErrorString(st));
}

/* A shape cuDNN refused: the fallback runs it (false), or under strict mode it is an error. */
static bool refused(glm_backend *be, const cuda_cudnn *c, const sdpa_key *k)
{
    if (!c->strict) return false;
    glm_backend_fail(be, GLM_ERR_UNSUPPORTED,
                     "GLM4V_ATTENTION=cudnn: no cudnn plan for b %d, %d/%d heads, %d rows, dim %d",
                     k->b, k->h_q, k->h_kv, k->s, k->d);
    return true;
}

/* ---- the entry points ---- */

extern "C" glm_status cuda_cudnn_create(void *stream, int cc_major, cuda_cudnn **out,
                                        glm_error *err)
{
    *out = NULL;
    size_t version = cudnnGetVersion();
    if (version < 90000)
        return glm_fail(err, GLM_ERR_UNSUPPORTED, "cudnn %zu is older than 9.0", version);
    if (cc_major < 8)
        return glm_fail(err, GLM_ERR_UNSUPPORTED, "cudnn fused attention needs sm_80 or newer");
    cuda_cudnn *c = (cuda_cudnn *)calloc(1, sizeof(*c));
    if (!c) return glm_fail(err, GLM_ERR_NOMEM, "cudnn state: out of host memory");
    cudnnStatus_t st = cudnnCreate(&c->handle);
    if (st == CUDNN_STATUS_SUCCESS) st = cudnnSetStream(c->handle, (cudaStream_t)stream);
    if (st != CUDNN_STATUS_SUCCESS) {
        if (c->handle) cudnnDestroy(c->handle);
        free(c);
        return glm_fail(err, GLM_ERR_BACKEND, "cudnnCreate: %s", cudnnGetErrorString(st));
    }
    int nvrtc_major = 0, nvrtc_minor = 0;
    nvrtcVersion(&nvrtc_major, &nvrtc_minor); /* also keeps NVRTC loaded for cuDNN's engines */
    snprintf(c->description, sizeof(c->description), "cudnn %zu.%zu.%zu (nvrtc %d.%d)",
             version / 10000, version / 100 % 100, version % 100, nvrtc_major, nvrtc_minor);
    const char *want = getenv("GLM4V_ATTENTION");
    c->strict = want && strcmp(want, "cudnn") == 0;
    const char *log = getenv("GLM4V_ATTENTION_LOG");
    c->log = log && *log && strcmp(log, "0") != 0;
    *out = c;
    return GLM_OK;
}

extern "C" void cuda_cudnn_destroy(cuda_cudnn *c)
{
    if (!c) return;
    for (int i = 0; i < c->n_plans; i++)
        destroy_plan(&c->plans[i]);
    if (c->handle) cudnnDestroy(c->handle);
    free(c);
}

extern "C" const char *cuda_cudnn_describe(const cuda_cudnn *c)
{
    return c ? c->description : "none";
}

/* cuDNN reads 16-byte vectors: every base pointer and row stride must allow them. */
static bool cudnn_layout_ok(const void *a, const void *b, int64_t w, int head_dim, glm_dtype dt)
{
    size_t elem = glm_dtype_size(dt);
    return head_dim % 8 == 0 && head_dim <= 128 && w % 8 == 0 && cuda_aligned16(a) &&
           cuda_aligned16(b) && ((size_t)head_dim * elem) % 16 == 0;
}

extern "C" bool cuda_cudnn_attention_full(glm_backend *be, cuda_cudnn *c, glm_tensor out,
                                          glm_tensor qkv, int n_seqs, int seq_len, int n_heads,
                                          int head_dim, float scale)
{
    int64_t width = 3 * (int64_t)n_heads * head_dim;
    if (!c || !cudnn_layout_ok(qkv.data, out.data, width, head_dim, qkv.dtype)) return false;
    /* One sequence fills the GPU when its 128-row tiles over all heads make two waves: then the
     * images run one by one on a single plan (no plan per batch size, no loss per image);
     * shorter sequences run as one batch. */
    int64_t tiles = ((int64_t)seq_len + 127) / 128 * n_heads;
    int per_call = tiles >= 2 * (int64_t)cuda_impl(be)->n_sms ? 1 : n_seqs;
    size_t elem = glm_dtype_size(qkv.dtype);
    for (int first = 0; first < n_seqs; first += per_call) {
        int b = n_seqs - first < per_call ? n_seqs - first : per_call;
        sdpa_key key = {b, n_heads, n_heads, seq_len, head_dim, 0, qkv.dtype};
        if (first == 0 && !seen_before(c, &key)) return false; /* the fallback runs it all */
        sdpa_plan *p = find_plan(c, &key);
        if (!p->ok) {
            if (first == 0) return refused(be, c, &key);
            glm_backend_fail(be, GLM_ERR_BACKEND,
                             "cudnn attention: a plan for %d of %d sequences failed", b, n_seqs);
            return true;
        }
        int64_t row = (int64_t)first * seq_len;
        run_plan(be, c, p, (char *)out.data + row * n_heads * head_dim * elem,
                 (const char *)qkv.data + row * width * elem, scale);
        if (be->status != GLM_OK) return true;
    }
    return true;
}

extern "C" bool cuda_cudnn_attention_causal(glm_backend *be, cuda_cudnn *c, void *out,
                                            const void *qkv, glm_dtype dtype, int q_len,
                                            int n_q_heads, int n_kv_heads, int head_dim,
                                            float scale)
{
    int64_t width = (int64_t)(n_q_heads + 2 * n_kv_heads) * head_dim;
    if (!c || !cudnn_layout_ok(qkv, out, width, head_dim, dtype)) return false;
    sdpa_key key = {1, n_q_heads, n_kv_heads, q_len, head_dim, 1, dtype};
    if (!seen_before(c, &key)) return false;
    sdpa_plan *p = find_plan(c, &key);
    if (!p->ok) return refused(be, c, &key);
    run_plan(be, c, p, out, qkv, scale);
    return true;
}
