/* common/dtype.c: bf16 and f16 conversions round to nearest even (f16 subnormals included), keep
 * NaN a NaN and overflow to inf; checked exhaustively over the 16-bit side and against a
 * nearest-neighbour search for random floats. */
#include <math.h>
#include <stdbool.h>
#include <string.h>

#include "common/dtype.h"
#include "tests/testutil.h"

static uint32_t bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float from_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* r is the correctly rounded 16-bit code of f iff no neighbour code is closer and an exact tie
 * went to the even code. to_f32 decodes; max_code is the largest finite positive code. */
static bool rounds_correctly(float f, uint16_t r, float (*to_f32)(uint16_t), uint16_t max_code)
{
    uint16_t sign = r & 0x8000, mag = r & 0x7fff;
    double got = to_f32(r), err = fabs(got - (double)f);
    if (mag > max_code) { /* inf: f must lie at or past the rounding boundary */
        double top = to_f32(max_code), next = top + (top - to_f32((uint16_t)(max_code - 1)));
        return isinf(got) && fabs((double)f) >= (top + next) / 2;
    }
    if ((sign != 0) != (signbit(f) != 0) && f != 0.0f) return false;
    for (int d = -1; d <= 1; d += 2) {
        int m = (int)mag + d;
        if (m < 0 || m > max_code) continue;
        double other = fabs((double)to_f32((uint16_t)(sign | m)) - (double)f);
        if (other < err || (other == err && (mag & 1))) return false;
    }
    return true;
}

static float bf16_decode(uint16_t h)
{
    return glm_bf16_to_f32(h);
}

static void check_bf16(test_rng *rng)
{
    CHECK(glm_f32_to_bf16(1.0f) == 0x3f80);
    CHECK(glm_f32_to_bf16(from_bits(0x3f808000)) == 0x3f80); /* tie, even stays */
    CHECK(glm_f32_to_bf16(from_bits(0x3f818000)) == 0x3f82); /* tie, odd rounds up */
    CHECK(glm_f32_to_bf16(from_bits(0x3f808001)) == 0x3f81);
    CHECK(glm_f32_to_bf16(-2.0f) == 0xc000);
    CHECK(glm_f32_to_bf16(INFINITY) == 0x7f80 && glm_f32_to_bf16(-INFINITY) == 0xff80);
    CHECK(glm_f32_to_bf16(from_bits(0x7f7fffff)) == 0x7f80); /* FLT_MAX rounds to inf */
    uint16_t nan = glm_f32_to_bf16(NAN);
    CHECK(isnan(glm_bf16_to_f32(nan)));
    CHECK(isnan(glm_bf16_to_f32(glm_f32_to_bf16(from_bits(0x7f800001))))); /* signalling NaN */
    bool exact = true;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = glm_bf16_to_f32((uint16_t)h);
        exact &= bits(f) == h << 16;
        if (!isnan(f)) exact &= glm_f32_to_bf16(f) == h;
    }
    CHECK_MSG(exact, "bf16 round trip");
    bool ok = true;
    for (int i = 0; i < 200000 && ok; i++) {
        float f = from_bits((uint32_t)test_rng_next(rng));
        if (isnan(f) || isinf(f)) continue;
        ok = rounds_correctly(f, glm_f32_to_bf16(f), bf16_decode, 0x7f7f);
        CHECK_MSG(ok, "bf16 of %a gives %04x", (double)f, glm_f32_to_bf16(f));
    }
}

static void check_f16(test_rng *rng)
{
    CHECK(glm_f32_to_f16(1.0f) == 0x3c00);
    CHECK(glm_f32_to_f16(-2.0f) == 0xc000);
    CHECK(glm_f32_to_f16(65504.0f) == 0x7bff);
    CHECK(glm_f32_to_f16(65519.0f) == 0x7bff);
    CHECK(glm_f32_to_f16(65520.0f) == 0x7c00); /* halfway to 2^16 rounds to inf */
    CHECK(glm_f32_to_f16(1e9f) == 0x7c00 && glm_f32_to_f16(-INFINITY) == 0xfc00);
    CHECK(glm_f32_to_f16(ldexpf(1.0f, -24)) == 0x0001);    /* smallest subnormal */
    CHECK(glm_f32_to_f16(ldexpf(1.0f, -25)) == 0x0000);    /* tie to even: zero */
    CHECK(glm_f32_to_f16(ldexpf(3.0f, -25)) == 0x0002);    /* tie to even: 2 */
    CHECK(glm_f32_to_f16(ldexpf(1.0f, -14)) == 0x0400);    /* smallest normal */
    CHECK(glm_f32_to_f16(ldexpf(1023.5f, -24)) == 0x0400); /* subnormal rounding up to normal */
    CHECK(glm_f32_to_f16(-0.0f) == 0x8000);
    CHECK(glm_f16_to_f32(0x0001) == ldexpf(1.0f, -24));
    CHECK(glm_f16_to_f32(0x83ff) == -ldexpf(1023.0f, -24));
    CHECK(isinf(glm_f16_to_f32(0x7c00)) && isnan(glm_f16_to_f32(0x7e00)));
    CHECK(isnan(glm_f16_to_f32(glm_f32_to_f16(NAN))));
    bool exact = true;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = glm_f16_to_f32((uint16_t)h);
        if (!isnan(f)) exact &= glm_f32_to_f16(f) == h;
    }
    CHECK_MSG(exact, "f16 round trip");
    bool ok = true;
    for (int i = 0; i < 200000 && ok; i++) {
        /* floats around the f16 range, including the subnormal one */
        float f = ldexpf((float)(test_rng_uniform(rng) * 2 - 1), test_rng_int(rng, -27, 17));
        ok = rounds_correctly(f, glm_f32_to_f16(f), glm_f16_to_f32, 0x7bff);
        CHECK_MSG(ok, "f16 of %a gives %04x", (double)f, glm_f32_to_f16(f));
    }
}

static void check_convert(void)
{
    float src[5] = {1.0f, -2.5f, 3.14159f, 1e-3f, 65504.0f}, back[5];
    uint16_t half[5];
    CHECK(glm_convert(half, GLM_BF16, src, GLM_F32, 5) == 0);
    CHECK(glm_convert(back, GLM_F32, half, GLM_BF16, 5) == 0);
    for (int i = 0; i < 5; i++)
        CHECK(back[i] == glm_bf16_to_f32(glm_f32_to_bf16(src[i])));
    CHECK(glm_convert(half, GLM_F16, src, GLM_F32, 5) == 0);
    CHECK(glm_convert(back, GLM_F32, half, GLM_F16, 5) == 0);
    for (int i = 0; i < 5; i++)
        CHECK(back[i] == glm_f16_to_f32(glm_f32_to_f16(src[i])));
    uint16_t bf[5];
    CHECK(glm_convert(bf, GLM_BF16, half, GLM_F16, 5) == 0); /* f16 -> bf16 through float */
    CHECK(bf[0] == 0x3f80);
    CHECK(glm_convert(back, GLM_F32, src, GLM_I32, 5) == -1);
    CHECK(glm_convert(back, GLM_I64, src, GLM_F32, 5) == -1);
}

int main(void)
{
    test_rng rng;
    test_rng_seed(&rng, 16);
    check_bf16(&rng);
    check_f16(&rng);
    check_convert();
    return test_finish("test_kernels_dtype");
}
