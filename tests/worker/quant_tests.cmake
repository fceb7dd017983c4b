# Quantized weights (issue 15): every format through the whole model on the golden checkpoints,
# one rank and tensor-parallel, against fp32 and the float64 golden logits (test_quant_model.c).
# Bounds: logits (and vision embeddings) rel L2 against the fp32 model and top-1 agreement with
# it over every prompt position, per format, from the errors measured on these random-weight
# checkpoints with room (docs/PERF.md, Issue 15): fp8 worst 0.122 / 0.83, int8 0.022 / 0.96,
# int4 0.31 / 0.45 (K <= 160 here: one int4 group per row). At TP 2, int8 must equal the one-rank
# model of the same weights (whole-row scales for row-parallel slices: measured 4e-7); fp8 and
# int4 are not the same computation there (per-rank activation scales, per-slice int4 groups), so
# only their accuracy bounds apply.
add_executable(test_quant_model test_quant_model.c model_test_frame.c)
target_link_libraries(test_quant_model PRIVATE glm4v_testutil glm4v_coordinator glm4v_worker)
set(_q_fp8 --bound 0.15 --top1 0.75)
set(_q_int8 --bound 0.04 --top1 0.9)
set(_q_int4 --bound 0.4 --top1 0.3)
# tests/cuda runs the same checkpoints on the GPU with these bounds
foreach(fmt fp8 int8 int4)
  set_property(GLOBAL PROPERTY GLM4V_QUANT_BOUNDS_${fmt} ${_q_${fmt}})
endforeach()
set(_q_tp2_fp8 --same-bound 0)
set(_q_tp2_int8 --same-bound 1e-4)
set(_q_tp2_int4 --same-bound 0)
foreach(model a b)
  foreach(fmt fp8 int8 int4)
    set(_qargs ${GLM4V_TESTDATA}/glm4v-tiny-${model} --weights ${fmt} ${_q_${fmt}})
    add_test(NAME quant_${fmt}_tiny_${model} COMMAND test_quant_model ${_qargs})
    add_test(NAME tp2_quant_${fmt}_tiny_${model}
             COMMAND ${_mpirun} -np 2 $<TARGET_FILE:test_quant_model> ${_qargs} ${_q_tp2_${fmt}})
    set_tests_properties(quant_${fmt}_tiny_${model} tp2_quant_${fmt}_tiny_${model} PROPERTIES
      ENVIRONMENT "${GLM4V_MPI_ENV};OMP_NUM_THREADS=1" TIMEOUT 120 LABELS quant)
  endforeach()
endforeach()
# the vision tower may stay 16-bit while the decoder is quantized
add_test(NAME quant_int4_text16_vision_tiny_b
         COMMAND test_quant_model ${GLM4V_TESTDATA}/glm4v-tiny-b --weights int4
                 --vision-weights bf16 ${_q_int4})
set_tests_properties(quant_int4_text16_vision_tiny_b PROPERTIES
  ENVIRONMENT "OMP_NUM_THREADS=1" TIMEOUT 120 LABELS quant)
# The accuracy table's mode (--vs16, --ref-cache; docs/PERF.md runs it on the wide checkpoint,
# not in CI): int8 against fp32 and the cpu-bf16 dense model, the references through the cache
add_test(NAME quant_int8_vs16_tiny_b
         COMMAND test_quant_model ${GLM4V_TESTDATA}/glm4v-tiny-b --weights int8 --vs16 bf16
                 --ref-cache ${CMAKE_CURRENT_BINARY_DIR}/quant_ref_cache ${_q_int8})
set_tests_properties(quant_int8_vs16_tiny_b PROPERTIES
  ENVIRONMENT "OMP_NUM_THREADS=1" TIMEOUT 120 LABELS quant)
# Quantization on load: TP 2 slices equal to TP 1's, non-finite weights refused (glm4v-run exit 2)
add_executable(test_quant_load test_quant_load.c)
target_link_libraries(test_quant_load PRIVATE glm4v_testutil glm4v_worker)
add_test(NAME quant_load COMMAND test_quant_load ${_tiny_a} $<TARGET_FILE:glm4v-run>)
set_tests_properties(quant_load PROPERTIES ENVIRONMENT "${GLM4V_MPI_ENV}" TIMEOUT 60
  LABELS quant)
