/* Where each prompt id goes once images are spliced in.
 *
 * An image sits in the prompt as three ids, <|begin_of_image|> <|endoftext|> <|end_of_image|>,
 * and becomes image_rows vectors (boi, patches, eoi). Rope positions follow MODEL.md: text and
 * the boi vector keep their index in the id prompt, all patch vectors share boi's index + 1, eoi
 * gets + 2, and later text keeps its id index. Generated tokens continue from the id count.
 * Several images follow the same rule each in turn (../shared/testdata/README.md): an image's
 * positions depend only on where its three ids sit, never on how many vectors earlier images
 * took, so with one image the layout is exactly the original's. */
#ifndef GLM4V_PROMPT_LAYOUT_H
#define GLM4V_PROMPT_LAYOUT_H

#include <stdint.h>

#include "common/status.h"

typedef struct glm_prompt_layout {
    int n_rows; /* spliced length: what the KV cache holds */
    int n_ids;  /* id count: the rope position of the first generated token */
    int n_images;
    int32_t *token_ids;   /* [n_rows], -1 on image rows */
    int32_t *positions;   /* [n_rows] */
    int32_t *image_row;   /* [n_rows] row within its image (0 .. image_rows-1), -1 on text */
    int32_t *image_index; /* [n_rows] which image (0 .. n_images-1, prompt order), -1 on text */
} glm_prompt_layout;

/* Fails with GLM_ERR_INVALID_ARG if an image marker is malformed (boi not followed by
 * <|endoftext|> <|end_of_image|>, or a stray eoi). */
glm_status glm_prompt_layout_build(const int32_t *ids, int n_ids, int boi_id, int eoi_id,
                                   int image_pad_id, int image_rows, glm_prompt_layout *out,
                                   glm_error *err);
void glm_prompt_layout_free(glm_prompt_layout *l);

#endif
