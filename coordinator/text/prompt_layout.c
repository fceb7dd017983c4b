#include "coordinator/text/prompt_layout.h"

#include <stdlib.h>
#include <string.h>

glm_status glm_prompt_layout_build(const int32_t *ids, int n_ids, int boi_id, int eoi_id,
                                   int image_pad_id, int image_rows, glm_prompt_layout *out,
                                   glm_error *err)
{
    memset(out, 0, sizeof(*out));
    int n_images = 0;
    for (int i = 0; i < n_ids; i++) {
        if (ids[i] == boi_id) {
            if (i + 2 >= n_ids || ids[i + 1] != image_pad_id || ids[i + 2] != eoi_id)
                return glm_fail(err, GLM_ERR_INVALID_ARG,
                                "image marker at id %d is not <boi> <|endoftext|> <eoi>", i);
            n_images++;
            i += 2;
        } else if (ids[i] == eoi_id) {
            return glm_fail(err, GLM_ERR_INVALID_ARG, "end-of-image id %d without a begin", i);
        }
    }
    int n_rows = n_ids + n_images * (image_rows - 3);
    out->token_ids = malloc(sizeof(int32_t) * (size_t)(n_rows > 0 ? n_rows : 1));
    out->positions = malloc(sizeof(int32_t) * (size_t)(n_rows > 0 ? n_rows : 1));
    out->image_row = malloc(sizeof(int32_t) * (size_t)(n_rows > 0 ? n_rows : 1));
    out->image_index = malloc(sizeof(int32_t) * (size_t)(n_rows > 0 ? n_rows : 1));
    if (!out->token_ids || !out->positions || !out->image_row || !out->image_index) {
        glm_prompt_layout_free(out);
        return glm_fail(err, GLM_ERR_NOMEM, "out of host memory for a prompt layout");
    }
    int r = 0, image = 0;
    for (int i = 0; i < n_ids; i++) {
        if (ids[i] != boi_id) {
            out->token_ids[r] = ids[i];
            out->positions[r] = i;
            out->image_row[r] = -1;
            out->image_index[r] = -1;
            r++;
            continue;
        }
        for (int k = 0; k < image_rows; k++, r++) {
            out->token_ids[r] = -1;
            out->positions[r] = k == 0 ? i : k == image_rows - 1 ? i + 2 : i + 1;
            out->image_row[r] = k;
            out->image_index[r] = image;
        }
        image++;
        i += 2;
    }
    out->n_rows = n_rows;
    out->n_ids = n_ids;
    out->n_images = n_images;
    return GLM_OK;
}

void glm_prompt_layout_free(glm_prompt_layout *l)
{
    free(l->token_ids);
    free(l->positions);
    free(l->image_row);
    free(l->image_index);
    memset(l, 0, sizeof(*l));
}
