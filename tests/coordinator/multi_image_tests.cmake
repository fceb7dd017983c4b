# Several images in one conversation (issue 22), the inputs: wire format, JSON conversations
# through the chat template into the golden ids, glm4v-sweep lines with image lists.
glm4v_add_test(test_multi_image_inputs SOURCES test_multi_image_inputs.c
  LIBS glm4v_coordinator glm4v_sweep ARGS ${GLM4V_TESTDATA} LABELS coordinator multi_image)
glm4v_add_test(test_scheduler_multi SOURCES test_scheduler_multi.c LIBS glm4v_coordinator
  LABELS coordinator multi_image)
